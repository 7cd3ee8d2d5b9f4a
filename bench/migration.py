"""VMotion and Storage VMotion numbers on a fresh two-host lab (driver level, no API).

    .venv/bin/python bench/migration.py [--n 6] [--memory 128] [--disk-gib 1]

1. A running tiny Linux guest (``--memory`` MiB, heartbeat every second) on a shared datastore
   migrates ``--n`` times, alternately host1 -> host2 and back. Per migration: our wall time of
   LibvirtDriver.migrate, libvirt's total time and downtime (completed-job stats), and the
   heartbeat as the hosts see it: the last heartbeat read from the source channel, the first
   from the target's (opened as soon as migrate returns); the gap between their arrivals, and
   the guest's own uptime step between them (seq delta and uptime delta).
2. Storage VMotion of a ``--disk-gib`` GiB qcow2 disk full of random data, attached to a
   running guest: LibvirtDriver.move_disk (now the frozen-base path of storagemove.py) against
   ``qemu-img convert`` of the same file on the same filesystem (page cache dropped before
   each when allowed; timed until the call returns). bench/relocate.py is the side-by-side
   comparison, with the writeback counted.

Refuses to run while another lab exists (only one lab per machine; Lab.up would tear it down).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vcenter.hypervisor.libvirt.driver import LibvirtDriver  # noqa: E402
from vcenter.hypervisor.libvirt.guestchannel import ChannelClosed, GuestChannel  # noqa: E402
from vcenter.lab import network as net  # noqa: E402
from vcenter.lab.guest import build_guest  # noqa: E402
from vcenter.lab.hosts import Lab  # noqa: E402
from vcenter.messaging.contracts import DiskSpec, MigrationOptions, VmSpec  # noqa: E402


def other_lab_exists() -> bool:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return any(line.startswith("vclab-") for line in out.splitlines())


class Reader(threading.Thread):
    """(arrival, seq, uptime) of every heartbeat on one channel until it closes."""

    def __init__(self, ch: GuestChannel):
        super().__init__(daemon=True)
        self.ch, self.beats, self.stop = ch, [], threading.Event()
        self.start()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                hb = self.ch.read_heartbeat(timeout=0.5)
            except TimeoutError:
                continue
            except (ChannelClosed, OSError):
                return
            self.beats.append((time.monotonic(), hb["seq"], float(hb["uptime"])))


def open_channel(lab: Lab, idx: int, drv: LibvirtDriver, u: str, timeout: float = 10) -> GuestChannel:
    deadline = time.monotonic() + timeout
    while True:
        path = drv.guest_channel_path(u)
        if path:
            return GuestChannel(lab.hosts[idx].libvirtd.path(path))
        if time.monotonic() > deadline:
            raise RuntimeError("no heartbeat channel")
        time.sleep(0.05)


def drop_caches() -> bool:
    try:
        subprocess.run(["sync"], check=True)
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--memory", type=int, default=128)
    ap.add_argument("--disk-gib", type=int, default=1)
    args = ap.parse_args()
    if other_lab_exists():
        print("another lab is up (vclab-* namespaces): not touching it; try again later", file=sys.stderr)
        return 2
    image = build_guest()
    workdir = tempfile.mkdtemp(prefix="vc-bench-mig-", dir="/var/tmp")
    lab = Lab(os.path.join(workdir, "lab"))
    t0 = time.monotonic()
    lab.up(2)
    print(f"lab up: {time.monotonic() - t0:.1f}s")
    ds = None
    drivers: list[LibvirtDriver] = []
    try:
        ds = lab.create_datastore("shared", 1024 * (3 * args.disk_gib + 1), ["host1", "host2"])
        net.run_local(["mount", lab.state["datastores"]["shared"]["loop"], ds])
        drivers = [LibvirtDriver(h.uri, connect_timeout=10) for h in lab.hosts]
        for d in drivers:
            d.connect()
        vmotion(lab, drivers, image, ds, args)
        storage_vmotion(lab, drivers, image, ds, args)
    finally:
        for d in drivers:
            d.close()
        if ds:
            net.run_local(["umount", ds], check=False)
        lab.down()
        subprocess.run(["rm", "-rf", workdir])
    return 0


def make_guest(drv: LibvirtDriver, image, ds: str, name: str, memory: int, disk_mib: int, create: bool = True) -> VmSpec:
    spec = VmSpec(
        name=name,
        uuid=str(uuid.uuid4()),
        vcpus=1,
        memory_mib=memory,
        kernel=str(image.kernel),
        initrd=str(image.initrd),
        cmdline=image.cmdline_for(hostname=name),
        disks=[DiskSpec(index=0, datastore_id=1, datastore_path=ds, file=f"{name}.qcow2", capacity_mib=disk_mib, format="qcow2")],
    )
    if create:
        drv.create_disks(spec)
    drv.define(spec)
    drv.start(spec.uuid)
    return spec


def vmotion(lab: Lab, drivers: list[LibvirtDriver], image, ds: str, args) -> None:
    spec = make_guest(drivers[0], image, ds, "bench-vm", args.memory, 32)
    ch = open_channel(lab, 0, drivers[0], spec.uuid)
    ch.read_heartbeat(timeout=30)
    reader = Reader(ch)
    time.sleep(2)
    rows = []
    src = 0
    for i in range(args.n):
        dst = 1 - src
        opts = MigrationOptions(dest_uri=lab.hosts[dst].uri, dest_address=lab.hosts[dst].address, unsafe=True, max_downtime_ms=300)
        t0 = time.monotonic()
        result = drivers[src].migrate(spec.uuid, opts)
        wall = time.monotonic() - t0
        ch2 = open_channel(lab, dst, drivers[dst], spec.uuid)
        reader.join(5)  # ends when the source QEMU closes its end
        reader.ch.close()
        last = reader.beats[-1] if reader.beats else None
        reader = Reader(ch2)
        deadline = time.monotonic() + 10
        while not reader.beats and time.monotonic() < deadline:
            time.sleep(0.005)
        if last is None or not reader.beats:
            raise RuntimeError("heartbeat missing around the migration")
        first = reader.beats[0]
        gap = {"gap": first[0] - last[0], "seq": first[1] - last[1], "guest_dt": first[2] - last[2]}
        rows.append((i + 1, f"host{src + 1}->host{dst + 1}", wall, result, gap))
        src = dst
        time.sleep(2.5)
    reader.stop.set()
    reader.ch.close()
    drivers[src].undefine(spec.uuid, [])
    print_vmotion(rows)


def print_vmotion(rows) -> None:
    print("\nVMotion of a running guest with heartbeat (TCG, shared lab datastore, UNSAFE, max downtime 300 ms)")
    print(
        "overhead = our wall time - libvirt's total; hb gap = arrival of the first heartbeat on the target "
        "- arrival of the last on the source (nominal period 1 s); guest dt = guest uptime between them"
    )
    print(f"{'#':>2} {'direction':<14} {'wall s':>7} {'libvirt s':>9} {'downtime ms':>11} {'overhead ms':>11} {'hb gap s':>8} {'seq +':>5} {'guest dt s':>10}")
    for n, direction, wall, result, gap in rows:
        libvirt_s = (result.elapsed_ms or 0) / 1000
        g = gap or {}
        print(
            f"{n:>2} {direction:<14} {wall:>7.2f} {libvirt_s:>9.2f} {result.downtime_ms or -1:>11} "
            f"{(wall - libvirt_s) * 1000:>11.0f} {g.get('gap', float('nan')):>8.2f} {g.get('seq', 0):>5} "
            f"{g.get('guest_dt', float('nan')):>10.2f}"
        )


def storage_vmotion(lab: Lab, drivers: list[LibvirtDriver], image, ds: str, args) -> None:
    d1 = drivers[0]
    gib = args.disk_gib
    raw = os.path.join(ds, "fill.raw")
    name = "bench-disk"
    disk = os.path.join(ds, f"{name}.qcow2")
    t0 = time.monotonic()
    subprocess.run(["dd", "if=/dev/urandom", f"of={raw}", "bs=4M", f"count={256 * gib}", "status=none"], check=True)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, disk], check=True)
    os.unlink(raw)
    print(f"\n{gib} GiB disk of random data made in {time.monotonic() - t0:.1f}s")
    spec = make_guest(d1, image, ds, name, 96, gib * 1024, create=False)
    ch = open_channel(lab, 0, d1, spec.uuid)
    ch.read_heartbeat(timeout=30)
    reader = Reader(ch)
    os.makedirs(os.path.join(ds, "moved"), exist_ok=True)
    moved = os.path.join(ds, "moved", f"{name}.qcow2")
    dropped = drop_caches()
    readings = []
    t0 = time.monotonic()
    d1.move_disk(spec.uuid, "vda", moved, "qcow2", readings.append)
    move_s = time.monotonic() - t0
    beats = [b for b in reader.beats if b[0] >= t0 - 1]
    gaps = [b[0] - a[0] for a, b in zip(beats, beats[1:])]
    reader.stop.set()
    ch.close()
    d1.stop(spec.uuid)
    dropped = drop_caches() and dropped
    conv = os.path.join(ds, "converted.qcow2")
    t0 = time.monotonic()
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", disk, conv], check=True)
    conv_s = time.monotonic() - t0
    size = gib << 30
    print(f"Storage VMotion of a {gib} GiB qcow2 disk (random data) on one loop-mounted ext4 datastore (page cache dropped: {dropped})")
    print(f"{'method':<28} {'seconds':>8} {'MiB/s':>8}")
    print(f"{'move_disk (copy+pivot)':<28} {move_s:>8.2f} {size / 2**20 / move_s:>8.0f}")
    print(f"{'qemu-img convert':<28} {conv_s:>8.2f} {size / 2**20 / conv_s:>8.0f}")
    print(f"throughput ratio move_disk / qemu-img convert: {conv_s / move_s:.0%}; {len(readings)} progress readings; largest heartbeat gap during the move {max(gaps) if gaps else float('nan'):.2f}s")
    d1.undefine(spec.uuid, [])


if __name__ == "__main__":
    sys.exit(main())
