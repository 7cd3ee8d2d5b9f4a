"""Disk images with the real qemu-img, cloud-init seeds checked by cloud-init's own schema
validator, and OVA archives: the file-level half of templates, import and export.

qemu-img and cloud-init come from Debian (qemu-utils, cloud-init; scripts/install.sh)."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
import threading
import time

import pytest

from templates_store.cloudinit import build_seed_iso, read_seed_iso, render_seed
from templates_store.ova import extract_files, read_descriptor, write_ova
from templates_store.ovf import OvfError, build_ovf, parse_ovf
from vcenter.hypervisor import images
from vcenter.hypervisor.base import DriverError


def _raw(path, mib: int, seed: int = 1) -> bytes:
    data = hashlib.sha256(str(seed).encode()).digest() * (mib * (1 << 20) // 32)
    with open(path, "wb") as f:
        f.write(data)
    return data


def _qemu_img(*args):
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def _content_sha(path, fmt):
    out = f"{path}.check.raw"
    _qemu_img("convert", "-f", fmt, "-O", "raw", path, out)
    try:
        return hashlib.sha256(open(out, "rb").read()).hexdigest()
    finally:
        os.unlink(out)


@pytest.mark.parametrize("fmt,declared", [("vmdk", "vmdk"), ("vdi", "vdi"), ("vpc", "vhd"), ("vhdx", "vhdx"), ("qcow2", "qcow2"), ("raw", "raw")])
def test_every_import_format_converts_losslessly(tmp_path, fmt, declared):
    data = _raw(tmp_path / "src.raw", 4)
    src = tmp_path / f"src.{fmt}"
    if fmt == "raw":
        src = tmp_path / "src.raw"
    else:
        _qemu_img("convert", "-f", "raw", "-O", fmt, str(tmp_path / "src.raw"), str(src))
    detected, info = images.importable_format(str(src), declared)
    assert detected == fmt
    dest = tmp_path / "disk.qcow2"
    seen = []
    images.convert(str(src), detected, str(dest), "qcow2", on_progress=seen.append)
    assert _content_sha(str(dest), "qcow2")[:64] == hashlib.sha256(data.ljust(images.virtual_size(str(dest)), b"\0")).hexdigest()
    assert not [p for p in os.listdir(tmp_path) if ".part-" in p]


def test_declared_format_must_match(tmp_path):
    _raw(tmp_path / "a.raw", 1)
    _qemu_img("convert", "-f", "raw", "-O", "vdi", str(tmp_path / "a.raw"), str(tmp_path / "a.vdi"))
    with pytest.raises(DriverError) as exc:
        images.importable_format(str(tmp_path / "a.vdi"), "vmdk")
    assert exc.value.code == "IMAGE_FORMAT_MISMATCH"


def test_images_pointing_at_other_files_are_refused(tmp_path):
    secret = tmp_path / "secret.raw"
    secret.write_bytes(b"S" * 65536)
    # A qcow2 whose backing file is a host file.
    _qemu_img("create", "-f", "qcow2", "-F", "raw", "-b", str(secret), str(tmp_path / "evil.qcow2"))
    with pytest.raises(DriverError) as exc:
        images.importable_format(str(tmp_path / "evil.qcow2"))
    assert exc.value.code == "IMAGE_REFERENCES_FILES"
    # A VMDK descriptor whose extent is another file.
    (tmp_path / "evil.vmdk").write_text(f'# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 128 FLAT "{secret}" 0\nddb.adapterType = "ide"\n')
    with pytest.raises(DriverError) as exc:
        images.importable_format(str(tmp_path / "evil.vmdk"))
    assert exc.value.code in ("IMAGE_REFERENCES_FILES", "IMAGE_FORMAT_UNSUPPORTED")


def test_linked_clone_is_constant_time_and_relative(tmp_path):
    ds = tmp_path / "ds"
    (ds / "templates" / "t-v1-1").mkdir(parents=True)
    base = ds / "templates" / "t-v1-1" / "disk0.qcow2"
    _qemu_img("create", "-f", "qcow2", str(base), "10G")  # sparse
    times = []
    for i in range(3):
        t0 = time.monotonic()
        images.create_linked(str(base), str(ds / f"vm{i}-disk0.qcow2"))
        times.append(time.monotonic() - t0)
    info = images.info(str(ds / "vm0-disk0.qcow2"))
    assert info["backing-filename"] == "templates/t-v1-1/disk0.qcow2"  # relative: any mount path works
    assert info["virtual-size"] == 10 << 30
    # The datastore mounted elsewhere: the chain still resolves.
    moved = tmp_path / "elsewhere"
    os.rename(ds, moved)
    assert images.backing_of(str(moved / "vm1-disk0.qcow2")) == str(moved / "templates" / "t-v1-1" / "disk0.qcow2")


def test_cancel_stops_a_conversion_and_leaves_nothing(tmp_path):
    _raw(tmp_path / "big.raw", 64)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(DriverError) as exc:
        images.convert(str(tmp_path / "big.raw"), "raw", str(tmp_path / "out.vmdk"), "vmdk", options=["subformat=streamOptimized"], cancel=cancel)
    assert exc.value.code == "CANCELLED"
    assert sorted(os.listdir(tmp_path)) == ["big.raw"]


def test_paths_resolve_inside_the_datastore_only(tmp_path):
    ds = tmp_path / "ds"
    (ds / "images").mkdir(parents=True)
    (ds / "images" / "disk.vmdk").write_bytes(b"x")
    assert images.resolve_in_datastore(str(ds), "images/disk.vmdk") == str(ds / "images" / "disk.vmdk")
    os.symlink("/etc/passwd", ds / "images" / "passwd.vmdk")
    os.symlink("/etc", ds / "etc")
    for path, code in (
        ("images/passwd.vmdk", "PATH_SYMLINK"),
        ("etc/passwd", "PATH_SYMLINK"),
        ("../../etc/passwd", "PATH_ESCAPES"),
        ("/etc/passwd", "PATH_ABSOLUTE"),
        ("images/none.vmdk", "IMAGE_NOT_FOUND"),
    ):
        with pytest.raises(DriverError) as exc:
            images.resolve_in_datastore(str(ds), path)
        assert exc.value.code == code, path


# --- cloud-init seeds --------------------------------------------------------------------


def _schema_check(tmp_path, user_data: str) -> subprocess.CompletedProcess:
    path = tmp_path / "user-data"
    path.write_text(user_data)
    return subprocess.run(["cloud-init", "schema", "--config-file", str(path)], capture_output=True, text=True)


def test_seeds_pass_cloud_inits_own_schema_check(tmp_path):
    custom = {
        "hostname": "web-7",
        "users": [
            {
                "name": "ops",
                "sudo": True,
                "groups": ["adm"],
                "ssh_authorized_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@lab"],
                "password_hash": "$6$rounds=4096$saltsalt$abcdefghijklmnopqrstuv",
            }
        ],
        "network": {"address": "10.0.0.7/24", "gateway": "10.0.0.1", "dns": ["10.0.0.2"]},
        "runcmd": ["touch /var/lib/first-boot", "echo 'quoted: yes' > /etc/motd"],
    }
    seeds = [render_seed(custom, instance_id=f"i-{n}", machine_id=f"{n:032x}", hostname=f"web-{n}", macs=["52:54:00:00:00:0%d" % n]) for n in range(1, 4)]
    for files in seeds:
        r = _schema_check(tmp_path, files["user-data"])
        assert r.returncode == 0, r.stdout + r.stderr
        assert "Valid cloud-config" in r.stdout
    import yaml

    configs = [yaml.safe_load(f["user-data"]) for f in seeds]
    assert all(c["ssh_deletekeys"] is True and c["ssh_genkeytypes"] for c in configs)  # fresh SSH host keys per instance
    machine_ids = [next(w["content"] for w in c["write_files"] if w["path"] == "/etc/machine-id") for c in configs]
    assert len(set(machine_ids)) == 3
    assert len({yaml.safe_load(f["meta-data"])["instance-id"] for f in seeds}) == 3
    net = yaml.safe_load(seeds[0]["network-config"])
    assert net["ethernets"]["eth0"]["addresses"] == ["10.0.0.7/24"]
    # An invalid document is caught by the same check (the check can fail).
    r = _schema_check(tmp_path, "#cloud-config\nusers: 7\nssh_deletekeys: maybe\n")
    assert r.returncode != 0


def test_seed_iso_is_a_cidata_volume(tmp_path):
    files = render_seed({}, instance_id="i-1", machine_id="ab" * 16, hostname="h1")
    iso = tmp_path / "seed.iso"
    build_seed_iso(files, str(iso))
    blkid = subprocess.run(["blkid", "-o", "export", str(iso)], capture_output=True, text=True).stdout
    assert "LABEL=cidata" in blkid and "TYPE=iso9660" in blkid
    assert read_seed_iso(str(iso)) == files


# --- OVA ---------------------------------------------------------------------------------


def test_ova_round_trip_with_stream_optimized_vmdk(tmp_path):
    data = _raw(tmp_path / "d.raw", 2, seed=7)
    vmdk = tmp_path / "app-disk1.vmdk"
    images.convert(str(tmp_path / "d.raw"), "raw", str(vmdk), "vmdk", options=["subformat=streamOptimized"])
    assert images.info(str(vmdk))["format-specific"]["data"]["create-type"] == "streamOptimized"
    ovf = build_ovf(name="app", vcpus=2, memory_mib=128, guest_os="linux", disks=[{"file": vmdk.name, "size": vmdk.stat().st_size, "capacity_bytes": len(data)}])
    ova = tmp_path / "app.ova"
    write_ova(str(ova), "app.ovf", ovf, [(vmdk.name, str(vmdk))])
    with tarfile.open(ova) as tar:
        assert tar.getnames() == ["app.ovf", "app.mf", "app-disk1.vmdk"]  # descriptor first (OVF spec)
    name, descriptor, manifest = read_descriptor(str(ova))
    assert name == "app.ovf" and set(manifest) == {"app.ovf", "app-disk1.vmdk"}
    app = parse_ovf(descriptor)
    out = tmp_path / "out"
    out.mkdir()
    got = extract_files(str(ova), {app.disks[0].file_href}, str(out))
    fmt, _ = images.importable_format(got["app-disk1.vmdk"])
    assert fmt == "vmdk"
    assert _content_sha(got["app-disk1.vmdk"], "vmdk") == hashlib.sha256(data).hexdigest()


def test_ova_digest_mismatch_and_unsafe_members(tmp_path):
    ovf = build_ovf(name="x", vcpus=1, memory_mib=64, guest_os="other", disks=[{"file": "x-disk1.vmdk", "size": 3, "capacity_bytes": 1 << 20}])
    ova = tmp_path / "x.ova"
    with tarfile.open(ova, "w") as tar:
        for member, payload in (("x.ovf", ovf), ("x.mf", b"SHA256(x-disk1.vmdk)= " + b"0" * 64 + b"\n"), ("x-disk1.vmdk", b"abc"), ("../evil", b"pwned")):
            info = tarfile.TarInfo(member)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        link = tarfile.TarInfo("link.vmdk")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(OvfError) as exc:
        extract_files(str(ova), {"x-disk1.vmdk"}, str(out))
    assert exc.value.code == "OVA_DIGEST_MISMATCH"
    with pytest.raises(OvfError) as exc:
        extract_files(str(ova), {"link.vmdk"}, str(out))
    assert exc.value.code == "OVA_INVALID"  # a link is never extracted
    assert os.listdir(out) == [] and not (tmp_path / "evil").exists()
