"""Templates: linked-clone and full-clone speed on this machine. Not a test.

    python bench/templates.py [--dir DIR] [--full-gib N] [--lab]

1. Linked clone: the agent's disk step of a linked-clone deploy (a qcow2 overlay whose backing
   file is the template's image, vcenter.hypervisor.images.create_linked) for 1 GiB and 10 GiB
   templates (sparse qcow2 images; the overlay's cost does not depend on the data), median of 7.
2. Full clone: the agent's full-clone step (images.convert, qcow2 -> qcow2 with progress) of a
   template image holding N GiB of random data (default 1), against a plain
   ``qemu-img convert -f qcow2 -O qcow2`` of the same image on the same disk; throughput and ratio
   (goal: at least 80 %). Page cache dropped before each run when possible.
3. With --lab (as root): a linked-clone deploy through the whole system on a 1-host lab
   (API call -> outbox -> agent -> clone + seed ISO + define -> result -> inventory), for a
   template whose image has a 1 GiB and a 10 GiB virtual size, median of 5 each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vcenter.hypervisor import images  # noqa: E402


def drop_caches() -> None:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        pass


def linked(work: Path) -> None:
    print("linked clone (agent disk step): template virtual size -> median ms (min..max) of 7")
    for gib in (1, 10):
        tdir = work / "templates" / f"t{gib}"
        tdir.mkdir(parents=True, exist_ok=True)
        base = tdir / "disk0.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), f"{gib}G"], check=True)
        times = []
        for i in range(7):
            dest = work / f"clone{gib}-{i}.qcow2"
            t0 = time.perf_counter()
            images.create_linked(str(base), str(dest))
            times.append((time.perf_counter() - t0) * 1000)
            dest.unlink()
        print(f"  {gib:>3} GiB: {statistics.median(times):7.1f} ms  ({min(times):.1f}..{max(times):.1f})")


def full(work: Path, gib: int) -> None:
    raw = work / "data.raw"
    src = work / "template.qcow2"
    print(f"full clone: template image with {gib} GiB of random data (qcow2)")
    with open(raw, "wb") as f:
        for _ in range(gib * 64):
            f.write(os.urandom(16 << 20))
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(src)], check=True)
    raw.unlink()
    rows = []
    for attempt in range(5):  # interleaved: this machine is shared, single runs are noisy
        order = ("qemu-img convert", "full clone (ours)")
        for name in order if attempt % 2 == 0 else order[::-1]:  # alternate who goes first
            dest = work / "full.qcow2"
            drop_caches()
            t0 = time.perf_counter()
            if name == "qemu-img convert":
                subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", str(src), str(dest)], check=True)
            else:
                images.convert(str(src), "qcow2", str(dest), "qcow2", on_progress=lambda f: None)
            rows.append((name, time.perf_counter() - t0))
            dest.unlink()
    best = {n: min(t for m, t in rows if m == n) for n, _ in rows}
    for name, seconds in best.items():
        median = statistics.median(t for m, t in rows if m == name)
        print(f"  {name:<20} {seconds:6.2f} s  {gib * 1024 / seconds:7.1f} MiB/s (best of 5; median {median:.2f} s)")
    print(f"  ratio ours / qemu-img: {best['qemu-img convert'] / best['full clone (ours)'] * 100:.0f} % of the throughput")
    src.unlink()


def lab_deploy() -> None:
    from tests.apihelpers import wait_for
    from tests.labhelpers import lab_stack, task_done

    with tempfile.TemporaryDirectory(prefix="bench-tpl-") as tmp, lab_stack(Path(tmp), 1, task_lease=20) as (stack, lab, ctx):
        dc, host = ctx["dc"], ctx["ids"]["host1"]
        with stack.client() as api:
            path = lab.create_datastore("bench1", 128, ["host1"])
            ds = api.post("/api/v1/datastores", json={"name": "bench1", "datacenter_id": dc["id"], "kind": "lab-dir", "url": path, "host_ids": [host]}).json()
            print("linked-clone deploy through the whole system (API call -> VM ready): median of 5")
            for gib in (1, 10):
                base = task_done(
                    api,
                    api.post(
                        "/api/v1/vms",
                        json={"name": f"base{gib}", "host_id": host, "memory_mib": 96, "kernel_boot": {"image": "tiny-linux"}, "disks": [{"datastore_id": ds["id"], "capacity_mib": gib * 1024}]},
                    ).json(),
                )
                cap = task_done(api, api.post(f"/api/v1/vms/{base['object_id']}/template", json={"name": f"t{gib}"}).json(), 120)
                tid = cap["result"]["template_id"]
                totals, agent_ms = [], []
                for i in range(5):
                    t0 = time.perf_counter()
                    task = api.post(f"/api/v1/templates/{tid}/deploy", json={"name": f"c{gib}-{i}", "host_id": host}).json()
                    done = wait_for(lambda: (t := api.get(f"/api/v1/tasks/{task['id']}").json())["state"] in ("success", "error") and t, 60, 0.01)
                    totals.append((time.perf_counter() - t0) * 1000)
                    assert done["state"] == "success", done
                    agent_ms.append(done["result"]["timings"]["disk0_ms"])
                print(f"  {gib:>3} GiB template: {statistics.median(totals):7.1f} ms total ({min(totals):.0f}..{max(totals):.0f}); overlay creation on the agent {statistics.median(agent_ms):.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", default="/var/tmp")
    parser.add_argument("--full-gib", type=int, default=1)
    parser.add_argument("--lab", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-templates-", dir=args.dir) as tmp:
        work = Path(tmp)
        linked(work)
        full(work, args.full_gib)
    if args.lab:
        lab_deploy()


if __name__ == "__main__":
    main()
