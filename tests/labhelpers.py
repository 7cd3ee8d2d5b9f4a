"""A lab of real hosts with the whole system on it, for integration tests."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.apihelpers import wait_for
from vcenter.lab.guest import build_guest
from vcenter.lab.hosts import GATEWAY, Capacity, Lab
from vcenter.lab.stack import Stack, free_port


@contextmanager
def lab_stack(workdir: Path, hosts: int, capacity: Capacity = Capacity(cpus=2, memory_mib=2048), **settings: Any) -> Iterator[tuple[Stack, Lab, dict]]:
    """Lab hosts, a Redis on the lab network, the server processes, a datacenter and a cluster
    with every host; yields (stack, lab, {"dc", "cl", "ids"})."""
    build_guest()
    lab = Lab(workdir / "lab")
    lab.up(hosts, capacity)
    port = free_port()
    redis_proc = subprocess.Popen(
        ["redis-server", "--bind", f"127.0.0.1 {GATEWAY}", "--port", str(port), "--protected-mode", "no", "--save", "", "--appendonly", "no", "--dir", str(workdir)], stdout=subprocess.DEVNULL
    )
    defaults = dict(heartbeat_period=0.3, heartbeat_ttl=2, agent_report_period=1, reaper_period=1, host_monitor_period=0.5, agent_reconnect_delay=0.5, task_lease=6)
    stack = Stack.create(workdir, None, f"redis://127.0.0.1:{port}/0", api_host=f"127.0.0.1,{GATEWAY}", **{**defaults, **settings})
    try:
        wait_for(lambda: subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True).stdout.strip() == "PONG", 10, what="redis")
        stack.start_server()
        with stack.client() as api:
            dc = api.post("/api/v1/datacenters", json={"name": "dc1"}).json()
            cl = api.post("/api/v1/clusters", json={"name": "cl1", "datacenter_id": dc["id"]}).json()
            ids = {h.name: stack.add_lab_host(h, dc["id"], cl["id"]).host_id for h in lab.hosts}
            for host_id in ids.values():
                wait_for(lambda: api.get(f"/api/v1/hosts/{host_id}").json()["connection_state"] == "connected", 60, what="hosts connected")
        yield stack, lab, {"dc": dc, "cl": cl, "ids": ids}
    finally:
        stack.stop()
        lab.down()
        redis_proc.kill()
        redis_proc.wait(10)


def task_done(api, task: dict, timeout: float = 90) -> dict:
    return wait_for(lambda: (t := api.get(f"/api/v1/tasks/{task['id']}").json())["state"] in ("success", "error", "cancelled") and t, timeout, what=f"task {task['kind']}")


def steady_burning(vm: dict) -> bool:
    """A burning guest's CPU demand is measured (above 300 MHz) and steady (its noise, the
    spread DRS discounts gains by, under a quarter of it): its boot and the step to burning
    have left the window the noise is measured over."""
    demand, spread = vm["cpu_demand_mhz"] or 0, vm["cpu_demand_spread_mhz"]
    return demand > 300 and spread is not None and spread < demand / 4
