"""The contract between the seeds the server renders (templates_store.cloudinit) and the lab
guest that reads them (vcenter.lab.guest INIT_SCRIPT): the guest's own seed-reading block,
run by busybox (as in the guest) on a rendered seed, finds the hostname, instance id,
machine-id and address that were issued. The lab test boots real guests on real seeds."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from templates_store.cloudinit import render_seed
from vcenter.lab.guest import INIT_SCRIPT


def _seed_block() -> str:
    start = INIT_SCRIPT.index("# A cloud-init NoCloud seed")
    end = INIT_SCRIPT.index('hostname "$HOSTNAME"', start)
    return INIT_SCRIPT[start:end]


@pytest.mark.parametrize("machine_id", ["0123456789abcdef0123456789abcdef", "12345678901234567890123456789012"])
def test_the_guest_reads_what_the_server_rendered(tmp_path: Path, machine_id: str):
    files = render_seed(
        {
            "network": {"address": "10.9.8.7/24", "gateway": "10.9.8.1", "dns": ["10.9.8.2"]},
            "users": [{"name": "ops", "ssh_authorized_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl x"]}],
            "runcmd": ["echo hi"],
        },
        instance_id="i-abc123",
        machine_id=machine_id,
        hostname="web-3",
        macs=["52:54:00:01:02:03"],
    )
    seed = tmp_path / "seed"
    seed.mkdir()
    for name, text in files.items():
        (seed / name).write_text(text)
    (tmp_path / "vdb").write_text("")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    busybox = shutil.which("busybox")  # Debian's busybox-static, the one the guest is built from
    assert busybox, "busybox-static is not installed (scripts/install.sh installs it)"
    for applet in ("awk", "sed", "tr", "mkdir", "cat"):
        os.symlink(busybox, bindir / applet)
    block = (
        _seed_block().replace("/run/vc/seed", str(seed)).replace("/dev/vd?", str(tmp_path / "vd?")).replace('[ -b "$dev" ]', '[ -e "$dev" ]').replace("/etc/machine-id", str(tmp_path / "machine-id"))
    )
    script = f"""
log() {{ :; }}
mount() {{ return 0; }}
umount() {{ :; }}
HOSTNAME=from-cmdline IP=
{block}
echo "hostname=$HOSTNAME"
echo "instance=$INSTANCE_ID"
echo "ip=$IP"
echo "machine=$(cat {tmp_path / "machine-id"})"
"""
    out = subprocess.run([busybox, "sh", "-c", script], capture_output=True, text=True, env={"PATH": str(bindir)})
    assert out.returncode == 0, out.stderr
    got = dict(line.split("=", 1) for line in out.stdout.split())
    assert got == {"hostname": "web-3", "instance": "i-abc123", "ip": "10.9.8.7/24", "machine": machine_id}


def test_the_guest_makes_a_fresh_ssh_host_key_each_instance(tmp_path: Path):
    """The guest's own host-key block, run by busybox with Debian's dropbearkey (the one the
    guest carries): each run makes a new ed25519 key and reports OpenSSH's SHA256 fingerprint of
    it; the lab test sees it in every clone's heartbeat."""
    busybox, dropbearkey = shutil.which("busybox"), shutil.which("dropbearkey")
    assert busybox and dropbearkey, "busybox-static and dropbear-bin are installed by scripts/install.sh"
    start = INIT_SCRIPT.index("# SSH host key")
    block = INIT_SCRIPT[start : INIT_SCRIPT.index("ip link set lo up", start)]
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for applet in ("sed", "tr", "mkdir", "rm"):
        os.symlink(busybox, bindir / applet)
    os.symlink(dropbearkey, bindir / "dropbearkey")
    block = block.replace("/bin/dropbearkey", str(bindir / "dropbearkey")).replace("/etc/dropbear", str(tmp_path / "dropbear"))
    fingerprints = []
    for _ in range(2):
        out = subprocess.run([busybox, "sh", "-c", f'log() {{ echo "log: $*"; }}\n{block}\necho "key=$SSH_HOST_KEY"'], capture_output=True, text=True, env={"PATH": str(bindir)})
        assert out.returncode == 0 and "log:" not in out.stdout, (out.stdout, out.stderr)
        key = out.stdout.strip().removeprefix("key=")
        public = subprocess.run([dropbearkey, "-y", "-f", str(tmp_path / "dropbear/dropbear_ed25519_host_key")], capture_output=True, text=True, check=True).stdout
        assert key.startswith("SHA256:") and f"Fingerprint: {key}" in public and "ssh-ed25519 " in public
        fingerprints.append(key)
    assert fingerprints[0] != fingerprints[1]
