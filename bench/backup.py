"""Full clones and backups against a plain ``qemu-img convert`` of the same image, and the size
of an incremental backup after the guest changed 1 % of its disk. Not a test.

    python bench/backup.py [GiB] [runs]      (as root; a private libvirtd, one TCG guest)

The guest (the lab's tiny Linux) runs on a qcow2 disk of GiB filled with random data.
Rows (median of runs; throughput = the disk's size / wall time; "vs convert" = the baseline's
time / this row's time, goal >= 80 %). Every time runs until the data is on disk: a sync before
each operation (untimed) and after it (timed), so that neither side is credited with writes
still in the page cache; the time until the call returned is printed too:
- qemu-img convert: ``qemu-img convert -U`` qcow2 -> qcow2 of the same image, run just before
  each operation (interleaved: the machine is shared), the VM running or stopped as the row's;
- full clone, running: LibvirtDriver.clone_disks (temporary external snapshot, convert, commit);
- full backup, running: LibvirtDriver.backup, full, with a checkpoint (push mode: QEMU's backup
  job writes the target qcow2);
- full backup, running, pull mode: the previous path, kept here for comparison only (a pull-mode
  job, ``qemu-img convert -W`` reading QEMU's NBD export, the job ended; no checkpoint);
- full clone, running, with a checkpoint: clone_disks (a push job too; keeps the backup chain);
- full clone, stopped: clone_disks (qemu-img convert by the driver);
- linked clone, stopped: the constant-time overlay pair.
Then: the guest writes 1 % of the disk (its disk pattern from offset 0); the incremental backup's
file size against the bytes changed.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vcenter.hypervisor.libvirt.driver import LibvirtDriver  # noqa: E402
from vcenter.hypervisor.libvirt.guestchannel import GuestChannel  # noqa: E402
from vcenter.hypervisor.libvirt.xml import detect_domain_type  # noqa: E402
from vcenter.lab.guest import build_guest  # noqa: E402
from vcenter.lab.libvirtd import PrivateLibvirtd  # noqa: E402
from vcenter.messaging.contracts import DiskSpec, VmSpec  # noqa: E402


RETURNED: dict[str, list[float]] = {}  # row -> times until the call returned (writeback not counted)


def sync() -> None:
    subprocess.run(["sync"], check=True)


def timed(fn, row: str) -> float:
    """Wall time of ``fn`` until what it wrote is on disk: a sync before (untimed, so that no
    operation pays for an earlier one's dirty pages) and one after (timed: qemu-img and QEMU
    both leave their writes in the page cache; a copy is done once it is on disk)."""
    sync()
    start = time.monotonic()
    fn()
    RETURNED.setdefault(row, []).append(time.monotonic() - start)
    sync()
    return time.monotonic() - start


def rm(*paths: str) -> None:
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


BASE = "qemu-img convert (baseline)"
CLONE_RUNNING = "full clone, running (snapshot + convert + commit)"
BACKUP_RUNNING = "full backup, running (push mode)"
BACKUP_PULL = "full backup, running, pull mode (previous path)"
CLONE_PULL = "full clone, running, with a checkpoint (push mode)"


def pull_copy(drv: LibvirtDriver, vm_uuid: str, dest: str) -> None:
    """The previous full-backup path, for comparison: pull-mode job, convert from NBD, end it."""
    dom = drv._get(vm_uuid)
    work = tempfile.mkdtemp(prefix="vcnbd-", dir="/tmp")
    sock = os.path.join(work, "nbd.sock")
    root = ET.Element("domainbackup", {"mode": "pull"})
    ET.SubElement(root, "server", {"transport": "unix", "socket": sock})
    d = ET.SubElement(ET.SubElement(root, "disks"), "disk", {"name": "vda", "backup": "yes", "type": "file"})
    ET.SubElement(d, "scratch", {"file": os.path.join(work, "vda.scratch")})
    dom.backupBegin(ET.tostring(root, encoding="unicode"), None, 0)
    try:
        subprocess.run(["qemu-img", "convert", "-W", "-f", "raw", "-O", "qcow2", f"nbd+unix:///vda?socket={sock}", dest], check=True)
    finally:
        dom.abortJob()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    gib = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    size = int(gib * (1 << 30))
    image = build_guest()
    work = Path(tempfile.mkdtemp(prefix="vc-bench-backup-", dir="/var/tmp"))
    ds = work / "ds"
    ds.mkdir()
    disk = str(ds / "g1.qcow2")
    raw = str(work / "seed.raw")
    print(f"preparing a {gib:g} GiB disk of random data in {work} ...", flush=True)
    subprocess.run(["dd", "if=/dev/urandom", f"of={raw}", "bs=4M", f"count={size // (4 << 20)}", "status=none"], check=True)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, disk], check=True)
    rm(raw)
    daemon = PrivateLibvirtd(work / "h", "bench-backup")
    daemon.start()
    drv = LibvirtDriver(daemon.uri, domain_type=detect_domain_type())
    rows: list[tuple[str, list[float]]] = []
    try:
        drv.connect()
        spec = VmSpec(
            name="g1",
            uuid=str(uuid.uuid4()),
            vcpus=1,
            memory_mib=96,
            disks=[DiskSpec(index=0, datastore_id=1, datastore_path=str(ds), file="g1.qcow2", capacity_mib=size >> 20)],
            kernel=str(image.kernel),
            initrd=str(image.initrd),
            cmdline=image.cmdline_for(hostname="g1"),
        )
        drv.define(spec)
        out = str(ds / "out.qcow2")

        def convert() -> None:
            subprocess.run(["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "qcow2", disk, out], check=True)

        drv.start(spec.uuid)
        channel = GuestChannel(daemon.path(drv.guest_channel_path(spec.uuid)))
        channel.read_heartbeat(timeout=30)
        # Interleaved, so that each operation and its baseline see the same machine load.
        base, clone_running, clone_pull, backup_running, backup_pull = [], [], [], [], []
        for i in range(runs):
            drv.drop_checkpoints(spec.uuid)
            base.append(timed(convert, BASE))
            rm(out)
            clone_running.append(timed(lambda: drv.clone_disks(spec.uuid, [{"target": "vda", "path": out}], linked=False), CLONE_RUNNING))
            rm(out)
            backup_pull.append(timed(lambda: pull_copy(drv, spec.uuid, out), BACKUP_PULL))
            rm(out)
            target = str(ds / f"full{i}.qcow2")
            backup_running.append(timed(lambda: drv.backup(spec.uuid, [{"target": "vda", "path": target}], None, f"full{i}"), BACKUP_RUNNING))
            if i < runs - 1:
                rm(target)
            clone_pull.append(timed(lambda: drv.clone_disks(spec.uuid, [{"target": "vda", "path": out}], linked=False), CLONE_PULL))
            rm(out)
        rows += [(BASE, base), (CLONE_RUNNING, clone_running), (BACKUP_RUNNING, backup_running), (BACKUP_PULL, backup_pull), (CLONE_PULL, clone_pull)]

        # 1 % of the disk changes: the guest writes its pattern over the first 1 % (random data before).
        last_full = str(ds / f"full{runs - 1}.qcow2")  # its checkpoint is the newest
        changed_mib = max(1, round(size * 0.01 / (1 << 20)))
        assert channel.send(f"write-pattern {changed_mib}", timeout=600)["ok"] is True
        inc_path = str(ds / "inc.qcow2")
        inc_time = timed(lambda: drv.backup(spec.uuid, [{"target": "vda", "path": inc_path, "parent_path": last_full}], f"full{runs - 1}", "inc1"), "incremental")
        inc_bytes = os.path.getsize(inc_path)
        channel.close()
        drv.stop(spec.uuid)

        base_off, clone_off = [], []
        for _ in range(runs):
            base_off.append(timed(convert, "qemu-img convert, VM stopped"))
            rm(out)
            clone_off.append(timed(lambda: drv.clone_disks(spec.uuid, [{"target": "vda", "path": out}], linked=False), "full clone, stopped"))
            rm(out)
        rows += [("qemu-img convert, VM stopped", base_off), ("full clone, stopped", clone_off)]
        linked = [timed(lambda: drv.clone_disks(spec.uuid, [{"target": "vda", "path": str(ds / "linked.qcow2"), "base_path": str(ds / "g1-base.qcow2")}], linked=True), "linked clone, stopped")]
        rows.append(("linked clone, stopped", linked))
    finally:
        for dom in drv.list_domains() if drv.is_alive() else []:
            drv.undefine(dom.uuid, [])
        drv.close()
        daemon.stop()
        subprocess.run(["rm", "-rf", str(work)])

    baselines = {"full clone, stopped": base_off, "qemu-img convert, VM stopped": base_off}
    print(f"\n{gib:g} GiB qcow2 of random data, {runs} runs, medians (this machine: 2 cores shared, TCG guest); vs convert = median over runs of the interleaved baseline's time / this time\n")
    print("time = until the data is on disk (operation + sync); returned = until the call returned (its writeback still pending)\n")
    print("| operation | time (s) | MiB/s | vs convert | returned (s) |")
    print("|---|---|---|---|---|")
    for name, times in rows:
        t = statistics.median(times)
        ref = baselines.get(name, base)
        ratio = statistics.median(b / x for b, x in zip(ref, times)) if len(ref) == len(times) else statistics.median(ref) / t
        print(f"| {name} | {t:.3f} | {size / (1 << 20) / t:.0f} | {100 * ratio:.0f} % | {statistics.median(RETURNED[name]):.3f} |")
    print(
        f"\nincremental backup after the guest changed {changed_mib} MiB ({100 * changed_mib * (1 << 20) / size:.1f} % of the disk): "
        f"{inc_bytes / (1 << 20):.1f} MiB file ({100 * inc_bytes / size:.2f} % of the disk), {inc_time:.3f} s"
    )


if __name__ == "__main__":
    main()
