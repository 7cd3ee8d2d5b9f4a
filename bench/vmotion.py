"""VMotion through the whole system (API -> outbox -> Celery -> source agent -> libvirt ->
result -> inventory) on a 3-host lab, and our own overhead around libvirt. Not a test.

    python bench/vmotion.py [migrations]      (as root; tears down any lab on this machine)

Columns: total = API call to the task's end (inventory updated); libvirt call = the agent's
wall time inside migrateToURI3 (includes libvirt's own handshake and QEMU start on the
target); libvirt job = libvirt's time_elapsed; downtime = libvirt's completed-job downtime;
our overhead = total - libvirt call (queueing, command relay, reports, inventory update);
heartbeat gap = the guest's heartbeat seq step across the move (1 = never noticed)."""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vcenter.lab.guest import build_guest  # noqa: E402
from vcenter.lab.hosts import GATEWAY, Capacity, Lab  # noqa: E402
from vcenter.lab.stack import Stack, free_port  # noqa: E402


def wait(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 6
    workdir = Path(tempfile.mkdtemp(prefix="vc-bench-"))
    build_guest()
    lab = Lab(workdir / "lab")
    lab.up(2, Capacity(cpus=2, memory_mib=4096))
    port = free_port()
    redis = subprocess.Popen(["redis-server", "--bind", f"127.0.0.1 {GATEWAY}", "--port", str(port), "--protected-mode", "no", "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    stack = Stack.create(workdir, None, f"redis://127.0.0.1:{port}/0", api_host=f"127.0.0.1,{GATEWAY}", agent_report_period=2, reaper_period=1)
    rows = []
    try:
        time.sleep(0.5)
        stack.start_server()
        with stack.client() as api:
            dc = api.post("/api/v1/datacenters", json={"name": "dc"}).json()
            cl = api.post("/api/v1/clusters", json={"name": "cl", "datacenter_id": dc["id"]}).json()
            ids = [stack.add_lab_host(h, dc["id"], cl["id"]).host_id for h in lab.hosts]
            for i in ids:
                wait(lambda: api.get(f"/api/v1/hosts/{i}").json()["connection_state"] == "connected")
            path = lab.create_datastore("ds", 256, [h.name for h in lab.hosts])
            ds = api.post("/api/v1/datastores", json={"name": "ds", "datacenter_id": dc["id"], "kind": "lab-dir", "url": path, "host_ids": ids}).json()
            task = api.post(
                "/api/v1/vms", json={"name": "moving", "host_id": ids[0], "memory_mib": 128, "kernel_boot": {"image": "tiny-linux"}, "disks": [{"datastore_id": ds["id"], "capacity_mib": 16}]}
            ).json()
            vm_id = wait(lambda: (t := api.get(f"/api/v1/tasks/{task['id']}").json())["state"] == "success" and t)["object_id"]
            on = api.post(f"/api/v1/vms/{vm_id}/power/on").json()
            wait(lambda: api.get(f"/api/v1/tasks/{on['id']}").json()["state"] == "success")
            wait(lambda: (api.get(f"/api/v1/vms/{vm_id}").json()["guest_info"] or {}).get("seq", 0) > 3, 60)
            for run in range(runs):
                vm = api.get(f"/api/v1/vms/{vm_id}").json()
                target = ids[1] if vm["host_id"] == ids[0] else ids[0]
                seq_before = vm["guest_info"]["seq"]
                t0 = time.perf_counter()
                task = api.post(f"/api/v1/vms/{vm_id}/migrate", json={"host_id": target}).json()
                done = wait(lambda: (t := api.get(f"/api/v1/tasks/{task['id']}").json())["state"] in ("success", "error") and t, 120)
                total = time.perf_counter() - t0
                stats = done["result"]["migration"]
                time.sleep(2.5)
                seq_after = api.get(f"/api/v1/vms/{vm_id}").json()["guest_info"]["seq"]
                rows.append(
                    {
                        "total": total * 1000,
                        "call": stats.get("call_ms") or 0,
                        "job": stats.get("elapsed_ms") or 0,
                        "downtime": stats.get("downtime_ms") or 0,
                        "overhead": total * 1000 - (stats.get("call_ms") or 0),
                        "state": done["state"],
                        "seq": seq_after - seq_before,
                    }
                )
    finally:
        stack.stop()
        lab.down()
        redis.kill()
    print(f"{'run':>3} {'state':>8} {'total ms':>9} {'libvirt call':>13} {'libvirt job':>12} {'downtime':>9} {'our overhead':>13}")
    for i, r in enumerate(rows, 1):
        print(f"{i:>3} {r['state']:>8} {r['total']:>9.0f} {r['call']:>13.0f} {r['job']:>12.0f} {r['downtime']:>9.0f} {r['overhead']:>13.0f}")
    med = {k: statistics.median(r[k] for r in rows) for k in ("total", "call", "job", "downtime", "overhead")}
    print(f"{'med':>3} {'':>8} {med['total']:>9.0f} {med['call']:>13.0f} {med['job']:>12.0f} {med['downtime']:>9.0f} {med['overhead']:>13.0f}")
    print(f"goals: downtime < 300 ms (median/goal {med['downtime'] / 300:.2f}); our overhead < 200 ms (median/goal {med['overhead'] / 200:.2f})")


if __name__ == "__main__":
    main()
