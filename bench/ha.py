"""HA numbers. Not a test.

    python bench/ha.py sim            restart planning of the VMs of failed hosts (placement
                                      engine, priorities, rules): computation time per batch
    python bench/ha.py lab [guests]   (as root; tears down any lab on this machine) a 3-host lab,
                                      ``guests`` (6) tiny guests on host1, two `vcenter ha`
                                      processes, default detection time (5 s); host1 loses
                                      power (every process killed): time to "declared failed"
                                      and to each guest's heartbeat seen on another host.

Times of the lab run are measured from the kill, on this machine's clock: "declared" is the
ha.host.failed Event's timestamp; "heartbeat" is when the API first shows the guest on its
new host with a guest heartbeat sequence it did not have before (the inventory is updated by
the agents' reports, every second here, so it includes up to a second of reporting delay).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vcenter.domain import ha  # noqa: E402
from vcenter.domain.snapshot import ClusterSnapshot, HostSnapshot, Rule, RuleKind, VmSnapshot  # noqa: E402


def sim() -> None:
    print(f"{'hosts':>6} {'failed':>6} {'VMs':>6} {'rules':>6} {'placed':>7} {'best ms':>8} {'median ms':>10}")
    for n_hosts, n_failed, n_vms, n_rules in ((20, 2, 100, 0), (50, 10, 1000, 0), (50, 10, 1000, 50), (200, 20, 5000, 100)):
        hosts = tuple(HostSnapshot(f"h{i}", cores=64, memory_mib=512 * 1024, cpu_mhz=64 * 2500, connection="notResponding" if i < n_failed else "connected") for i in range(n_hosts))
        prios = [ha.Priority.HIGH, ha.Priority.MEDIUM, ha.Priority.LOW]
        cands = [ha.RestartCandidate(VmSnapshot(f"v{i}", memory_mib=1024 * (1 + i % 8), vcpus=1 + i % 4), prios[i % 3], f"h{i % n_failed}", f"h{i % n_failed}") for i in range(n_vms)]
        running = tuple(VmSnapshot(f"r{i}", memory_mib=2048, vcpus=2, host=f"h{n_failed + i % (n_hosts - n_failed)}") for i in range(n_vms))
        rules = tuple(Rule(f"apart{k}", RuleKind.ANTI_AFFINITY, k % 2 == 0, frozenset({f"v{2 * k}", f"v{2 * k + 1}"})) for k in range(n_rules))
        snap = ClusterSnapshot(hosts=hosts, vms=running, rules=rules)
        health = {h.id: ha.HostHealth.FAILED if h.connection != "connected" else ha.HostHealth.CONNECTED for h in hosts}
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            plan = ha.plan_restarts(snap, cands, health, 0.0)
            times.append((time.perf_counter() - t0) * 1000)
        print(f"{n_hosts:>6} {n_failed:>6} {n_vms:>6} {n_rules:>6} {len(plan.starts):>7} {min(times):>8.0f} {statistics.median(times):>10.0f}")


def wait(predicate, timeout=90.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError


def lab(guests: int) -> None:
    from vcenter.lab import faults
    from vcenter.lab.guest import build_guest
    from vcenter.lab.hosts import GATEWAY, Capacity, Lab
    from vcenter.lab.stack import Stack, free_port

    workdir = Path(tempfile.mkdtemp(prefix="vc-bench-ha-"))
    build_guest()
    lab = Lab(workdir / "lab")
    lab.up(3, Capacity(cpus=2, memory_mib=2048))
    port = free_port()
    redis = subprocess.Popen(["redis-server", "--bind", f"127.0.0.1 {GATEWAY}", "--port", str(port), "--protected-mode", "no", "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    stack = Stack.create(
        workdir,
        None,
        f"redis://127.0.0.1:{port}/0",
        api_host=f"127.0.0.1,{GATEWAY}",
        agent_report_period=1,
        reaper_period=1,
        heartbeat_period=1,
        heartbeat_ttl=3,
        ha_period=0.2,
        ha_lock_ttl=3,
        ha_datastore_heartbeat_period=1,
    )
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
            vms = []
            for g in range(guests):
                task = api.post(
                    "/api/v1/vms", json={"name": f"g{g}", "host_id": ids[0], "memory_mib": 96, "kernel_boot": {"image": "tiny-linux"}, "disks": [{"datastore_id": ds["id"], "capacity_mib": 8}]}
                ).json()
                vm_id = wait(lambda: (t := api.get(f"/api/v1/tasks/{task['id']}").json())["state"] == "success" and t)["object_id"]
                on = api.post(f"/api/v1/vms/{vm_id}/power/on").json()
                wait(lambda: api.get(f"/api/v1/tasks/{on['id']}").json()["state"] == "success")
                vms.append(vm_id)
            for v in vms:
                wait(lambda: (api.get(f"/api/v1/vms/{v}").json()["guest_info"] or {}).get("seq"))
            api.patch(f"/api/v1/clusters/{cl['id']}/ha", json={"enabled": True, "admission": {"kind": "disabled"}})
            stack._spawn("ha1", ["ha"])
            stack._spawn("ha2", ["ha"])
            wait(lambda: api.get(f"/api/v1/clusters/{cl['id']}/ha/status").json()["monitor"]["owner"])
            time.sleep(8)  # a full detection time of observation
            kill = datetime.now(timezone.utc)
            t0 = time.monotonic()
            faults.kill_host(lab, "host1")
            declared = None
            seen: dict[int, float] = {}
            while len(seen) < len(vms) and time.monotonic() - t0 < 120:
                if declared is None:
                    ev = api.get(f"/api/v1/events?kind=ha.host.failed&object_id={ids[0]}").json()["items"]
                    if ev:
                        declared = (datetime.fromisoformat(ev[0]["at"]) - kill).total_seconds()
                for v in vms:
                    if v in seen:
                        continue
                    vm = api.get(f"/api/v1/vms/{v}").json()
                    if vm["host_id"] != ids[0] and vm["power_state"] == "poweredOn" and (vm["guest_info"] or {}).get("uptime", 1e9) < time.monotonic() - t0 + 5:
                        seen[v] = time.monotonic() - t0
                time.sleep(0.1)
            print(f"guests: {guests}; detection time 5 s; declared failed after {declared:.2f} s" if declared is not None else "not declared failed within 120 s")
            print(f"{'guest':>6} {'new host':>9} {'heartbeat on new host (s)':>26}")
            for v in vms:
                vm = api.get(f"/api/v1/vms/{v}").json()
                print(f"{v:>6} {vm['host_id']:>9} {seen.get(v, float('nan')):>26.2f}")
            if seen:
                print(f"all restarted within {max(seen.values()):.2f} s (median {statistics.median(seen.values()):.2f} s)")
    finally:
        stack.stop()
        lab.down()
        redis.kill()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "lab":
        lab(int(sys.argv[2]) if len(sys.argv) > 2 else 6)
    else:
        sim()
