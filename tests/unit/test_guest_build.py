"""The lab guest build: cache, module order, initramfs layout, /init, disk pattern.

apt is replaced by fakes that build tiny .deb files with dpkg-deb (a fake kernel with fake
modules whose modinfo carries depends=, a fake busybox), so these tests need no network.
"""

from __future__ import annotations

import gzip
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from vcenter.lab import guest
from vcenter.lab.guest import (
    INIT_SCRIPT,
    PATTERN_BLOCK,
    AptError,
    CpioWriter,
    build_guest,
    cache_key,
    module_depends,
    module_load_order,
    pattern_block,
    verify_pattern,
)

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")

KVER = "9.9.9-1-cloud-amd64"
KPKG = f"linux-image-{KVER}"
FAKE_MODULES = {  # name: (directory, depends)
    "virtio_ring": ("drivers/virtio", ""),
    "virtio": ("drivers/virtio", "virtio_ring"),
    "virtio_pci_modern_dev": ("drivers/virtio", ""),
    "virtio_pci": ("drivers/virtio", "virtio_ring,virtio_pci_modern_dev,virtio"),
    "virtio_console": ("drivers/char", "virtio,virtio_ring"),
    "virtio_blk": ("drivers/block", "virtio,virtio_ring"),
    "failover": ("net/core", ""),
    "net_failover": ("drivers/net", "failover"),
    "virtio_net": ("drivers/net", "virtio_ring,virtio,net_failover"),
    "virtio_balloon": ("drivers/virtio", "virtio_ring,virtio"),  # memory statistics
    "button": ("drivers/acpi", ""),
    "isofs": ("fs/isofs", ""),  # the cloud-init seed volume
    "unused": ("drivers/misc", ""),
}
BUILTIN = ["kernel/drivers/input/evdev.ko"]
TOOL_VERSIONS = {"dropbear-bin": "2022.83-1", "libtomcrypt1": "1.18.2-6", "libtommath1": "1.2.0-6", "libgmp10": "2:6.2.1", "libc6": "2.36-9"}
# Laid out as Debian lays them out: sonames as symlinks, the loader's /lib64 link absolute.
FAKE_TOOL_FILES = {
    "dropbear-bin": {"usr/bin/dropbearkey": "dropbearkey"},
    "libtomcrypt1": {"usr/lib/x86_64-linux-gnu/libtomcrypt.so.1.0.1": "tomcrypt", "usr/lib/x86_64-linux-gnu/libtomcrypt.so.1": "->libtomcrypt.so.1.0.1"},
    "libtommath1": {"usr/lib/x86_64-linux-gnu/libtommath.so.1.2.0": "tommath", "usr/lib/x86_64-linux-gnu/libtommath.so.1": "->libtommath.so.1.2.0"},
    "libgmp10": {"usr/lib/x86_64-linux-gnu/libgmp.so.10.4.1": "gmp", "usr/lib/x86_64-linux-gnu/libgmp.so.10": "->libgmp.so.10.4.1"},
    "libc6": {"lib/x86_64-linux-gnu/libc.so.6": "libc", "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2": "loader", "lib64/ld-linux-x86-64.so.2": "->/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"},
}


def fake_ko(name: str, depends: str) -> bytes:
    return b"\x7fELF fake module\0license=GPL\0" + f"depends={depends}\0name={name}\0".encode() + b"vermagic=9.9.9\0" + b"\0" * 64


def make_deb(root: Path, package: str, version: str, out: Path) -> Path:
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN/control").write_text(f"Package: {package}\nVersion: {version}\nArchitecture: amd64\nMaintainer: t <t@t>\nDescription: fake\n")
    deb = out / f"{package}_{version.replace(':', '%3a')}_amd64.deb"
    subprocess.run(["dpkg-deb", "-Zgzip", "--build", str(root), str(deb)], check=True, capture_output=True)
    return deb


class FakeApt:
    def __init__(self, tmp: Path, kernel_version: str = "9.9.9-1"):
        self.tmp = tmp
        self.kernel_version = kernel_version
        self.resolves = 0
        self.downloads = 0
        self.updates = 0
        self.download_errors: list[str] = []

    def resolve(self) -> dict[str, str]:
        self.resolves += 1
        return {KPKG: self.kernel_version, "busybox-static": "1:1.35.0-4", **TOOL_VERSIONS}

    def update(self) -> None:
        self.updates += 1

    def download(self, packages: dict[str, str], dest: Path) -> dict[str, Path]:
        self.downloads += 1
        if self.download_errors:
            raise AptError(self.download_errors.pop(0))
        dest.mkdir(parents=True, exist_ok=True)
        n = self.downloads
        k = self.tmp / f"kroot{n}"
        (k / "boot").mkdir(parents=True)
        (k / f"boot/vmlinuz-{KVER}").write_bytes(b"fake bzImage " + packages[KPKG].encode())
        (k / f"boot/config-{KVER}").write_text("CONFIG_VIRTIO_CONSOLE=m\nCONFIG_INPUT_EVDEV=y\n")
        mods = k / f"lib/modules/{KVER}"
        for name, (sub, deps) in FAKE_MODULES.items():
            (mods / "kernel" / sub).mkdir(parents=True, exist_ok=True)
            (mods / "kernel" / sub / f"{name}.ko").write_bytes(fake_ko(name, deps))
        (mods / "modules.builtin").write_text("\n".join(BUILTIN) + "\n")
        b = self.tmp / f"broot{n}"
        (b / "bin").mkdir(parents=True)
        (b / "bin/busybox").write_text("#!/bin/sh\nfor a in busybox sh mount insmod ip ping poweroff dd; do echo $a; done\n")
        (b / "bin/busybox").chmod(0o755)
        debs = {KPKG: make_deb(k, KPKG, packages[KPKG], dest), "busybox-static": make_deb(b, "busybox-static", packages["busybox-static"], dest)}
        for package, files in FAKE_TOOL_FILES.items():
            root = self.tmp / f"{package}{n}"
            for rel, content in files.items():
                path = root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                if content.startswith("->"):
                    path.symlink_to(content[2:])
                else:
                    path.write_text(content)
            debs[package] = make_deb(root, package, packages[package], dest)
        return debs


@pytest.fixture
def apt(tmp_path, monkeypatch):
    fake = FakeApt(tmp_path)
    monkeypatch.setattr(guest, "apt_resolve", fake.resolve)
    monkeypatch.setattr(guest, "apt_download", fake.download)
    monkeypatch.setattr(guest, "_apt_update", fake.update)
    monkeypatch.setattr(guest, "_lists_fingerprint", lambda: [["fake_Packages", 1, 1]])
    return fake


def read_cpio(data: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    """{name: (mode, data, (rdevmajor, rdevminor))} of a newc archive."""
    out, pos = {}, 0
    while True:
        assert data[pos : pos + 6] == b"070701"
        f = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rmaj, rmin, namesize = f[1], f[6], f[9], f[10], f[11]
        pos += 110
        name = data[pos : pos + namesize - 1].decode()
        pos += namesize + (-(110 + namesize) % 4)
        body = data[pos : pos + size]
        pos += size + (-size % 4)
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, body, (rmaj, rmin))


def test_build_is_cached_and_second_call_does_not_download(apt, tmp_path):
    cache = tmp_path / "cache"
    img = build_guest(cache)
    assert (apt.resolves, apt.downloads, apt.updates) == (1, 1, 0)
    assert img.kernel.read_bytes() == b"fake bzImage 9.9.9-1"
    assert img.initrd.stat().st_size > 0 and img.memory_mib == 96
    assert img.versions == {KPKG: "9.9.9-1", "busybox-static": "1:1.35.0-4", **TOOL_VERSIONS}

    again = build_guest(cache)
    assert again == img
    # Neither a download nor even an apt-cache run: the resolved versions are reused while
    # apt's list files are unchanged.
    assert (apt.resolves, apt.downloads) == (1, 1)


def test_new_package_version_or_init_script_builds_a_new_entry(apt, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = build_guest(cache)
    monkeypatch.setattr(guest, "_lists_fingerprint", lambda: [["fake_Packages", 2, 1]])  # apt-get update ran
    apt.kernel_version = "9.9.9-2"
    second = build_guest(cache)
    assert apt.downloads == 2 and second.kernel != first.kernel
    assert second.kernel.read_bytes() == b"fake bzImage 9.9.9-2"
    monkeypatch.setattr(guest, "INIT_SCRIPT", INIT_SCRIPT + "# changed\n")
    third = build_guest(cache)
    assert apt.downloads == 3 and third.initrd != second.initrd
    assert first.kernel.exists()  # old entries stay usable by running guests


def test_apt_update_only_when_lists_are_missing(apt, tmp_path):
    apt.download_errors = ["E: Unable to locate package linux-image-9.9.9-1-cloud-amd64"]
    build_guest(tmp_path / "a")
    assert apt.updates == 1 and apt.downloads == 2

    apt.download_errors = ["E: Could not open lock file /var/lib/dpkg/lock"]
    with pytest.raises(AptError):
        build_guest(tmp_path / "b")
    assert apt.updates == 1


def test_initramfs_layout(apt, tmp_path):
    img = build_guest(tmp_path / "cache")
    files = read_cpio(gzip.decompress(img.initrd.read_bytes()))
    mode, body, _ = files["init"]
    assert stat.S_ISREG(mode) and mode & 0o111 and body.decode() == INIT_SCRIPT
    assert stat.S_ISCHR(files["dev/console"][0]) and files["dev/console"][2] == (5, 1)
    assert stat.S_ISREG(files["bin/busybox"][0]) and files["bin/busybox"][0] & 0o111
    assert stat.S_ISLNK(files["bin/sh"][0]) and files["bin/sh"][1] == b"busybox"
    order = files["etc/vc/modules"][1].decode().split()
    # Dependencies first; built-ins (evdev here) and unrelated modules left out.
    assert order == ["virtio_ring", "virtio_pci_modern_dev", "virtio", "virtio_pci", "virtio_console", "virtio_blk", "failover", "net_failover", "virtio_net", "virtio_balloon", "button", "isofs"]
    for m in order:
        assert files[f"lib/modules/{m}.ko"][1] == fake_ko(m, FAKE_MODULES[m][1])
    assert "lib/modules/unused.ko" not in files
    assert len(files["etc/vc/pattern-pad"][1]) == PATTERN_BLOCK - 16
    # dropbearkey (SSH host keys) and its libraries, symlinks followed to their content.
    assert files["bin/dropbearkey"][1] == b"dropbearkey" and files["bin/dropbearkey"][0] & 0o111
    libs = {name.rsplit("/", 1)[1]: body for name, (_, body, _) in files.items() if name.startswith("lib/x86_64-linux-gnu/")}
    assert libs == {"libc.so.6": b"libc", "ld-linux-x86-64.so.2": b"loader", "libtomcrypt.so.1": b"tomcrypt", "libtommath.so.1": b"tommath", "libgmp.so.10": b"gmp"}
    assert stat.S_ISLNK(files["lib64/ld-linux-x86-64.so.2"][0]) and files["lib64/ld-linux-x86-64.so.2"][1] == b"/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"


def test_a_missing_tool_library_fails_the_build(apt, tmp_path, monkeypatch):
    monkeypatch.setitem(FAKE_TOOL_FILES, "libgmp10", {"usr/share/doc/libgmp10/README": "no library"})
    with pytest.raises(RuntimeError, match="libgmp.so.10"):
        build_guest(tmp_path / "cache")


def test_module_order_refuses_missing_and_cyclic(tmp_path):
    d = tmp_path / "mods"
    d.mkdir()
    (d / "a.ko").write_bytes(fake_ko("a", "b"))
    (d / "b.ko").write_bytes(fake_ko("b", "a"))
    (d / "c-dash.ko").write_bytes(fake_ko("c_dash", ""))
    assert module_depends(fake_ko("x", "p,q")) == ["p", "q"]
    assert module_depends(fake_ko("x", "")) == []
    assert module_load_order(d, ["c_dash"]) == [("c_dash", d / "c-dash.ko")]
    with pytest.raises(RuntimeError, match="cycle"):
        module_load_order(d, ["a"])
    with pytest.raises(RuntimeError, match="neither built in"):
        module_load_order(d, ["nope"])


def test_cache_key_depends_on_versions_and_init():
    a = cache_key({KPKG: "1", "busybox-static": "1"})
    assert a.startswith(KVER + "-")
    assert cache_key({KPKG: "2", "busybox-static": "1"}) != a
    assert cache_key({KPKG: "1", "busybox-static": "1"}) == a


def test_init_script_does_what_the_guest_promises():
    s = INIT_SCRIPT
    for piece in (
        "mount -t proc proc /proc",
        "mount -t sysfs sysfs /sys",
        "mount -t devtmpfs devtmpfs /dev",
        'insmod "/lib/modules/$m.ko"',
        "vc.hostname=*)",
        "vc.ip=*)",
        "vc.seed=*)",
        'ip addr add "$IP" dev eth0',
        'hostname "$HOSTNAME"',
        "/proc/sys/kernel/random/uuid",
        "/etc/machine-id",
        "/sys/class/virtio-ports/",
        "PORT=/dev/virtio-ports/org.virtcenter.heartbeat",
        'exec 3<>"$PORT"',
        '"seq": %d',
        '"uptime": %s',
        '"hostname": "%s"',
        '"machine_id": "%s"',
        '"burn": %d',
        '"ip": %s',
        "burn) do_burn",
        "write-pattern) do_write_pattern",
        "ping) do_ping",
        "hostname) reply",
        "poweroff) reply",
        "ping -c 1 -W 2",
        "printf 'VCPAT%010d\\n%s\\n'",
        ">/dev/vda",
        '"Power Button"',
        "/dev/input/",
        "sync",
        "poweroff -f",
        "dropbearkey -t ed25519 -f /etc/dropbear/dropbear_ed25519_host_key",
        '"ssh_host_key": "%s"',
    ):
        assert piece in s, piece
    # PID 1 must never return: the script ends in an endless command loop.
    assert s.rstrip().endswith("done") and "while :; do" in s


@pytest.mark.skipif(shutil.which("busybox") is None, reason="needs busybox on the host")
def test_init_script_parses_under_busybox_sh(tmp_path):
    p = tmp_path / "init"
    p.write_text(INIT_SCRIPT)
    r = subprocess.run(["busybox", "sh", "-n", str(p)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_cmdline_for_validates():
    img = guest.GuestImage(Path("/k"), Path("/i"), "console=ttyS0 quiet")
    assert img.cmdline_for("web-1", "10.0.0.5/24") == "console=ttyS0 quiet vc.hostname=web-1 vc.ip=10.0.0.5/24"
    assert img.cmdline_for() == "console=ttyS0 quiet"
    for bad in ("a b", "x;reboot", "-lead", ""):
        with pytest.raises(ValueError):
            img.cmdline_for(hostname=bad)
    for bad in ("10.0.0.5", "10.0.0.300/24", "1.2.3.4/24 vc.hostname=x"):
        with pytest.raises(ValueError):
            img.cmdline_for(ip=bad)


def test_cpio_writer_refuses_duplicates():
    w = CpioWriter()
    w.dir("bin")
    with pytest.raises(ValueError):
        w.dir("/bin")


# --- the disk pattern ----------------------------------------------------------------------


def write_pattern(path: Path, mib: int, size_mib: int = 8) -> None:
    with open(path, "wb") as f:
        for i in range(mib * 256):
            f.write(pattern_block(i))
        f.truncate(size_mib << 20)


def test_pattern_block_shape():
    b = pattern_block(1023)
    assert len(b) == PATTERN_BLOCK and b.startswith(b"VCPAT0000001023\n") and b.endswith(b".\n")


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
def test_verify_pattern_raw_and_qcow2(tmp_path):
    raw = tmp_path / "d.raw"
    write_pattern(raw, 2)
    assert verify_pattern(raw, 2)
    assert not verify_pattern(raw, 3)  # the third MiB is zeros
    assert guest.first_bad_block(raw, 3) == 512

    qcow = tmp_path / "d.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow)], check=True)
    assert verify_pattern(qcow, 2)

    with open(raw, "r+b") as f:  # one flipped byte in block 300
        f.seek(300 * PATTERN_BLOCK + 2000)
        f.write(b"#")
    assert guest.first_bad_block(raw, 2) == 300
    assert not verify_pattern(raw, 2)
