"""Soak: does a TCG guest keep its heartbeat after each live migration? (docs/lab.md, "After a
long live migration capped at 2 MiB/s".) Prints one line per round and, when the heartbeat does
not advance within 25 s, the guest's CPU rate and where its vCPU spins (HMP), then stops.

    .venv/bin/python bench/vmotion_soak.py <workdir> <rounds> <ac|noac>

``rounds``: comma list of ``nokill`` (bandwidth capped at 2 MiB/s, ~40 s), ``kill`` (capped,
and the source agent SIGKILLed 1 s into it, then restarted) and ``fast`` (uncapped);
``ac``/``noac``: the cluster's auto-converge. Uses tests.labhelpers.lab_stack (2 hosts).
"""

import sys
import time
import pathlib
import subprocess

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from tests.labhelpers import lab_stack, task_done
from tests.apihelpers import wait_for


def virsh(addr, *args):
    return subprocess.run(["virsh", "-c", f"qemu+tcp://{addr}/system", *args], capture_output=True, text=True, timeout=30).stdout


def cpu(addr):
    out = virsh(addr, "domstats", "g1", "--cpu-total")
    return int(next(line.split("=")[1] for line in out.splitlines() if "cpu.time" in line))


def cpu_rate(addr):
    a = cpu(addr)
    time.sleep(3)
    b = cpu(addr)
    return (b - a) / 3e9


work = pathlib.Path(sys.argv[1])
work.mkdir(parents=True, exist_ok=True)
plan = sys.argv[2].split(",")
AC = sys.argv[3] == "ac"  # e.g. kill,nokill,kill
with lab_stack(work, 2) as (stack, lab, ctx):
    ids, dc, cl = ctx["ids"], ctx["dc"], ctx["cl"]
    addr = {n: lab.host(n).address for n in ids}
    with stack.client() as api:
        path = lab.create_datastore("shared1", 64, ["host1", "host2"])
        ds = api.post("/api/v1/datastores", json={"name": "shared1", "datacenter_id": dc["id"], "kind": "lab-dir", "url": path, "host_ids": list(ids.values())}).json()
        t = api.post(
            "/api/v1/vms", json={"name": "g1", "host_id": ids["host1"], "memory_mib": 96, "kernel_boot": {"image": "tiny-linux"}, "disks": [{"datastore_id": ds["id"], "capacity_mib": 8}]}
        ).json()
        vm_id = task_done(api, t)["object_id"]
        assert task_done(api, api.post(f"/api/v1/vms/{vm_id}/power/on").json())["state"] == "success"
        wait_for(lambda: (api.get(f"/api/v1/vms/{vm_id}").json()["guest_info"] or {}).get("seq", 0) > 2, 90, what="hb")
        print("healthy guest cpu rate", cpu_rate(addr["host1"]), flush=True)
        for r, mode in enumerate(plan):
            vm = api.get(f"/api/v1/vms/{vm_id}").json()
            src = next(n for n, i in ids.items() if i == vm["host_id"])
            dst = "host2" if src == "host1" else "host1"
            cur = api.get(f"/api/v1/clusters/{cl['id']}").json()
            bw = 2 if mode != "fast" else None
            api.patch(f"/api/v1/clusters/{cl['id']}", json={"settings": {**cur["settings"], "migration": {"bandwidth_mibps": bw, "auto_converge": AC}}, "version": cur["version"]})
            task = api.post(f"/api/v1/vms/{vm_id}/migrate", json={"host_id": ids[dst]}).json()
            wait_for(lambda: api.get(f"/api/v1/tasks/{task['id']}").json()["step"] == "migrating", 20)
            time.sleep(1)
            t0 = time.monotonic()
            if mode == "kill":
                lab.host(src).stop_process("agent", sig=9)
                time.sleep(1)
                stack.start_agent(src)
            done = task_done(api, task, 120)
            print(f"round {r} {mode}: {src}->{dst} task {done['state']} {done['error_code']} after {time.monotonic() - t0:.1f}s result {done.get('result')}", flush=True)
            seq0 = vm["guest_info"]["seq"]
            try:
                wait_for(lambda: (api.get(f"/api/v1/vms/{vm_id}").json()["guest_info"] or {}).get("seq", 0) > seq0 + 3, 25)
                print("  heartbeat OK; cpu rate", cpu_rate(addr[dst]), flush=True)
            except Exception:
                v = api.get(f"/api/v1/vms/{vm_id}").json()
                print("  STUCK: seq", v["guest_info"]["seq"], "host", v["host_id"], "cpu rate", cpu_rate(addr[dst]), flush=True)
                for _ in range(3):
                    print("  ", [line for line in virsh(addr[dst], "qemu-monitor-command", "g1", "--hmp", "info registers").splitlines() if line.startswith(("RIP", "RSP"))], flush=True)
                    time.sleep(0.3)
                print(virsh(addr[dst], "qemu-monitor-command", "g1", "--hmp", "x/8i $pc"), flush=True)
                print(virsh(addr[dst], "qemu-monitor-command", "g1", "--hmp", "info status"), flush=True)
                print(virsh(addr[dst], "qemu-monitor-command", "g1", "--hmp", "info irq")[:1500], flush=True)
                subprocess.run(["bash", "-c", f"mkdir -p {work}/kept && cp -r {work}/lab/hosts/*/ {work}/kept/ 2>/dev/null; find {work} -name '*.log' | head -50 > {work}/kept/list"])
                break
