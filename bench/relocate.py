"""Storage VMotion throughput against a plain ``qemu-img convert`` of the same disk, side by
side on the same machine (driver level, one lab host). Not a test. Every time includes a
``sync`` after the operation (its writeback), with a sync before it untimed.

    .venv/bin/python bench/relocate.py [--runs 3] [--disk-gib 1]     (as root)

A running tiny Linux guest (heartbeat every second) has a ``--disk-gib`` GiB qcow2 disk full
of random data on a loop-mounted ext4 datastore. Each run, interleaved (the machine is shared,
so each operation and its baseline see the same load; the order alternates between runs):
- qemu-img convert: ``qemu-img convert -U -f qcow2 -O qcow2`` of the disk the VM runs on (the
  issue's baseline), and the same with ``-W`` (out-of-order writes, as the driver converts);
- Storage VMotion (frozen base): LibvirtDriver.move_disk to another directory of the datastore
  (external snapshot, convert, copy of the small top, active commit: storagemove.py);
- Storage VMotion (block copy): the same move through libvirt's mirror (forced by
  ``shallow=True``, which on a disk without backing file copies everything).
"vs convert" = median over runs of (baseline time / this time). Also: the largest heartbeat gap
during each kind of move and whether the guest was ever seen paused.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import libvirt  # noqa: E402

from migration import Reader, make_guest, open_channel  # noqa: E402  (bench/migration.py)
from vcenter.hypervisor.libvirt.driver import LibvirtDriver  # noqa: E402
from vcenter.lab import network as net  # noqa: E402
from vcenter.lab.guest import build_guest  # noqa: E402
from vcenter.lab.hosts import Lab  # noqa: E402


def sync() -> None:
    subprocess.run(["sync"], check=True)


RETURNED: dict[str, list[float]] = {}  # time until the operation returned, without its writeback


def timed(fn, kind: str) -> float:
    """Wall time of ``fn`` plus the writeback of what it wrote (a sync): each operation pays
    for its own dirty pages, none for an earlier one's (a sync runs before each, untimed)."""
    sync()
    t0 = time.monotonic()
    fn()
    RETURNED.setdefault(kind, []).append(time.monotonic() - t0)
    sync()
    return time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--disk-gib", type=int, default=1)
    args = ap.parse_args()
    image = build_guest()
    workdir = tempfile.mkdtemp(prefix="vc-bench-reloc-", dir="/var/tmp")
    lab = Lab(os.path.join(workdir, "lab"))
    lab.up(1)
    ds = None
    drv = None
    gib = args.disk_gib
    try:
        ds = lab.create_datastore("ds", 1024 * (4 * gib + 1), ["host1"])
        net.run_local(["mount", lab.state["datastores"]["ds"]["loop"], ds])
        drv = LibvirtDriver(lab.hosts[0].uri, connect_timeout=10)
        drv.connect()
        dirs = [os.path.join(ds, "a"), os.path.join(ds, "b")]
        for d in dirs:
            os.makedirs(d, exist_ok=True)
        raw = os.path.join(ds, "fill.raw")
        name = "bench-reloc"
        disk = os.path.join(dirs[0], f"{name}.qcow2")
        subprocess.run(["dd", "if=/dev/urandom", f"of={raw}", "bs=4M", f"count={256 * gib}", "status=none"], check=True)
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, disk], check=True)
        os.unlink(raw)
        spec = make_guest(drv, image, dirs[0], name, 96, gib * 1024, create=False)
        ch = open_channel(lab, 0, drv, spec.uuid)
        ch.read_heartbeat(timeout=30)
        reader = Reader(ch)
        out = os.path.join(ds, "converted.qcow2")
        times: dict[str, list[float]] = {"convert": [], "convert -W": [], "frozen": [], "mirror": []}
        gaps: dict[str, list[float]] = {"frozen": [], "mirror": []}
        paused = {"frozen": False, "mirror": False}
        phases: list[dict[str, float]] = []
        where = 0

        def convert(extra: list[str]) -> None:
            cur = os.path.join(dirs[where], f"{name}.qcow2")
            subprocess.run(["qemu-img", "convert", "-U", *extra, "-f", "qcow2", "-O", "qcow2", cur, out], check=True)

        def move(kind: str) -> None:
            nonlocal where
            src = os.path.join(dirs[where], f"{name}.qcow2")
            dest = os.path.join(dirs[1 - where], f"{name}.qcow2")
            states = []
            stop = threading.Event()

            def watch() -> None:
                while not stop.is_set():
                    states.append(drv._get(spec.uuid).state()[0])
                    time.sleep(0.05)

            w = threading.Thread(target=watch, daemon=True)
            w.start()
            t0 = time.monotonic()
            times[kind].append(timed(lambda: drv.move_disk(spec.uuid, "vda", dest, "qcow2", shallow=(kind == "mirror")), kind))
            if kind == "frozen":
                phases.append(dict(drv.last_move_phases))
            stop.set()
            w.join()
            beats = [b for b in reader.beats if b[0] >= t0 - 1.5]
            gaps[kind].append(max((b[0] - a[0] for a, b in zip(beats, beats[1:])), default=float("nan")))
            paused[kind] = paused[kind] or any(s != libvirt.VIR_DOMAIN_RUNNING for s in states)
            os.unlink(src)  # what the agent does after every disk moved
            where = 1 - where

        def baseline(kind: str, extra: list[str]) -> None:
            times[kind].append(timed(lambda: convert(extra), kind))
            os.unlink(out)  # after its sync: an unlinked file's dirty pages are never written

        steps = [("convert", lambda: baseline("convert", [])), ("convert -W", lambda: baseline("convert -W", ["-W"])), ("frozen", lambda: move("frozen")), ("mirror", lambda: move("mirror"))]
        for i in range(args.runs):
            for _, step in steps if i % 2 == 0 else list(reversed(steps)):
                step()
                time.sleep(1)
        reader.stop.set()
        ch.close()
        drv.stop(spec.uuid)
        drv.undefine(spec.uuid, [])
    finally:
        if drv is not None:
            drv.close()
        if ds:
            net.run_local(["umount", ds], check=False)
        lab.down()
        subprocess.run(["rm", "-rf", workdir])

    size_mib = gib * 1024
    base = times["convert"]
    print(f"\nStorage VMotion of a {gib} GiB qcow2 disk (random data) of a running TCG guest, one loop-mounted ext4 datastore, {args.runs} interleaved runs (medians)")
    print("time = until the data is on disk (operation + sync); returned = until the call returned")
    print("| operation | time (s) | MiB/s | vs convert | returned (s) | vs convert, returned | largest heartbeat gap (s) | guest paused |")
    print("|---|---|---|---|---|---|---|---|")
    labels = {"convert": "qemu-img convert (baseline)", "convert -W": "qemu-img convert -W", "frozen": "Storage VMotion, frozen base (move_disk)", "mirror": "Storage VMotion, block copy (mirror)"}
    for kind, label in labels.items():
        t = statistics.median(times[kind])
        ratio = statistics.median(b / x for b, x in zip(base, times[kind]))
        gap = f"{max(gaps[kind]):.2f}" if kind in gaps else "-"
        p = ("yes" if paused[kind] else "no") if kind in paused else "-"
        r = statistics.median(RETURNED[kind])
        r_ratio = statistics.median(b / x for b, x in zip(RETURNED["convert"], RETURNED[kind]))
        print(f"| {label} | {t:.2f} | {size_mib / t:.0f} | {ratio:.0%} | {r:.2f} | {r_ratio:.0%} | {gap} | {p} |")
    print("frozen base, median seconds per phase (the sync after it not included): " + ", ".join(f"{k} {statistics.median(p[k] for p in phases):.3f}" for k in phases[0]))
    print("runs (s): " + "; ".join(f"{k}: {', '.join(f'{x:.2f}' for x in v)}" for k, v in times.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
