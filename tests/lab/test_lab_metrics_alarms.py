"""Performance samples and the "host not responding" alarm on a real host: the agent's
libvirt counters arrive every (compressed) sample period with non-zero CPU and memory for the
host and a running guest; beat rolls them up into the 5-minute tier (compressed); killing the
host's agent triggers the built-in "Host not responding" alarm on that host."""

from __future__ import annotations

import signal


from tests.apihelpers import wait_for
from tests.labhelpers import lab_stack, task_done


COUNTERS = ("cpu.usage", "cpu.usagemhz", "mem.usage", "mem.consumed", "disk.read", "disk.write", "net.rx", "net.tx")


def _latest(api, kind: str, object_id: int, tier: str = "realtime") -> dict[str, float]:
    series = api.get(f"/api/v1/metrics/{kind}/{object_id}", params=[("tier", tier)] + [("counter", c) for c in COUNTERS]).json()["series"]
    return {s["counter"]: s["points"][-1]["avg"] for s in series if s["points"]}


def test_real_samples_arrive_and_a_silent_agent_raises_host_not_responding(tmp_path):
    with lab_stack(tmp_path, 1, metrics_sample_period=1, metrics_tier_scale=0.01, metrics_rollup_period=2, metrics_rollup_grace=1, alarm_period=1) as (stack, lab, ctx):
        host_id = ctx["ids"]["host1"]
        with stack.client() as api:
            task = api.post("/api/v1/vms", json={"name": "m1", "host_id": host_id, "memory_mib": 96, "kernel_boot": {"image": "tiny-linux"}}).json()
            vm_id = task_done(api, task)["object_id"]
            assert task_done(api, api.post(f"/api/v1/vms/{vm_id}/power/on").json())["state"] == "success"
            wait_for(lambda: (api.get(f"/api/v1/vms/{vm_id}").json()["guest_info"] or {}).get("seq"), 60, what="guest heartbeat")

            vm = wait_for(lambda: (v := _latest(api, "vm", vm_id)).get("cpu.usage", 0) > 0 and v.get("mem.consumed", 0) > 0 and v, 30, what="VM samples with CPU and memory")
            host = wait_for(lambda: (h := _latest(api, "host", host_id)).get("cpu.usage", 0) > 0 and h.get("mem.usage", 0) > 0 and h, 30, what="host samples with CPU and memory")
            print("latest VM sample:", vm, "\nlatest host sample:", host)
            assert 0 < vm["cpu.usage"] <= 100 and 10 < vm["mem.consumed"] < 1024  # QEMU's resident memory of a 96 MiB guest, MiB
            assert 0 < host["cpu.usage"] <= 100 and host["cpu.usagemhz"] > 0
            # The guest boots from a kernel and initrd: no disk or NIC counters to show here.
            assert {"disk.read", "disk.write", "net.rx", "net.tx"} <= set(vm)
            # beat rolls real-time samples up (5-minute tier compressed to 3 s).
            day = wait_for(lambda: (d := _latest(api, "host", host_id, "day")).get("cpu.usage") is not None and d, 30, what="rolled-up samples")
            assert day["mem.usage"] > 0

            assert not [t for t in api.get("/api/v1/alarms/triggered", params={"object_type": "host", "object_id": host_id}).json()]
            # The agent dies (its host and guests keep running): no more heartbeats.
            next(h for h in lab.hosts if h.name == "host1").stop_process("agent", signal.SIGKILL)
            alarm = wait_for(
                lambda: [t for t in api.get("/api/v1/alarms/triggered", params={"object_type": "host", "object_id": host_id}).json() if t["alarm_name"] == "Host not responding"],
                30,
                what="host not responding alarm",
            )
            assert alarm[0]["status"] == "critical" and not alarm[0]["acknowledged"]
            events = api.get("/api/v1/events", params={"kind": "alarm.triggered", "limit": 50}).json()["items"]
            assert any(e["object_id"] == host_id and e["reason"] == "Host not responding" for e in events), events
