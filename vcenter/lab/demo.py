"""`make run`: the whole system on this machine, seeded with an inventory to look at.

As root on Linux with libvirtd installed, the host is a real private libvirtd with real QEMU
guests; otherwise the host is simulated, and this says so. Ctrl-C stops every process and
guest it started.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from vcenter.core.settings import DEFAULT_DATASTORE_ROOTS
from vcenter.lab.stack import Stack


def _real_hosts_possible() -> tuple[bool, str]:
    if sys.platform != "linux":
        return False, "not Linux"
    if os.geteuid() != 0:
        return False, "not root"
    missing = [b for b in ("libvirtd", "virsh", "qemu-system-x86_64", "unshare") if shutil.which(b) is None]
    if missing:
        return False, f"missing {', '.join(missing)}"
    return True, "root on Linux with libvirt and QEMU"


def _redis_password(rundir: Path) -> str:
    """A fresh password per run, kept in run/redis-password (mode 0600) for redis-cli users."""
    password = secrets.token_urlsafe(24)  # URL-safe: goes into redis://:<password>@host
    fd = os.open(rundir / "redis-password", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    return password


def _start_redis(rundir: Path, port: int, password: str, extra_bind: str | None = None) -> subprocess.Popen:
    # Lab agents reach Redis over the lab network: bind there too. Redis requires the
    # password from every client (the config file keeps it off the command line).
    bind = "127.0.0.1" + (f" {extra_bind}" if extra_bind else "")
    config = rundir / "redis.conf"
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f'bind {bind}\nport {port}\nsave ""\nappendonly no\ndir "{rundir}"\nrequirepass "{password}"\n')
    proc = subprocess.Popen(
        ["redis-server", str(config)],
        stdout=open(rundir / "redis.log", "ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    env = {**os.environ, "REDISCLI_AUTH": password}
    for _ in range(50):
        if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True, env=env).stdout.strip() == "PONG":
            return proc
        time.sleep(0.1)
    raise RuntimeError("redis-server did not start; see run/redis.log")


def _wait_task(api, task: dict, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = api.get(f"/api/v1/tasks/{task['id']}").json()
        if current["state"] in ("success", "error", "cancelled"):
            return current
        time.sleep(0.2)
    return current


def seed_lab(stack: Stack, lab, guests_per_host: int) -> None:
    """Three lab hosts in a cluster, a shared datastore, a port group, running guests."""
    from vcenter.lab.hosts import UPLINK_NIC  # as Lab below: loaded in real mode only

    with stack.client() as api:
        dc = api.post("/api/v1/datacenters", json={"name": "dc1"}).json()
        # DRS in manual mode: it recommends, with reasons, and the operator applies.
        cluster = api.post("/api/v1/clusters", json={"name": "cluster1", "datacenter_id": dc["id"], "settings": {"drs": {"enabled": True, "automation": "manual"}}}).json()
        ids = [stack.add_lab_host(h, dc["id"], cluster["id"]).host_id for h in lab.hosts]
        for host_id in ids:
            _wait(lambda: api.get(f"/api/v1/hosts/{host_id}").json()["connection_state"] == "connected", 60, "hosts to connect")
        path = lab.create_datastore("shared1", 1024, [h.name for h in lab.hosts])
        ds = api.post("/api/v1/datastores", json={"name": "shared1", "datacenter_id": dc["id"], "kind": "lab-dir", "url": path, "host_ids": ids}).json()
        # A switch on each host's "physical NIC" (vcenter.lab.hosts.UPLINK_NIC, cabled to the lab
        # switch), its untagged port group carrying the guests between hosts, as in vSphere.
        switch = api.post("/api/v1/switches", json={"name": "vSwitch0", "datacenter_id": dc["id"], "uplinks": [UPLINK_NIC]}).json()
        pg = api.post("/api/v1/portgroups", json={"name": "vm-network", "datacenter_id": dc["id"], "switch_id": switch["id"], "vlan_id": 0, "host_ids": ids}).json()
        api.post("/api/v1/folders", json={"name": "web", "datacenter_id": dc["id"]})
        _wait(lambda: sorted(api.get(f"/api/v1/portgroups/{pg['id']}").json()["present_on_host_ids"]) == sorted(ids), 30, "the port group on every host")
        number = 0
        tasks = []
        for host_id in ids:
            for _ in range(guests_per_host):
                number += 1
                task = api.post(
                    "/api/v1/vms",
                    json={
                        "name": f"web{number}",
                        "host_id": host_id,
                        "memory_mib": 96,
                        "kernel_boot": {"image": "tiny-linux", "ip": f"10.99.0.{10 + number}/24"},
                        "disks": [{"datastore_id": ds["id"], "capacity_mib": 64}],
                        "nics": [{"portgroup_id": pg["id"]}],
                    },
                ).json()
                tasks.append(task)
        for task in tasks:
            done = _wait_task(api, task)
            if done["state"] != "success":
                raise RuntimeError(f"creating a guest failed: {done['error_code']}: {done['error_message']}")
            _wait_task(api, api.post(f"/api/v1/vms/{done['object_id']}/power/on").json())
        # HA on, so that a newcomer's first `vcenter lab fault kill-host` restarts the guests
        # elsewhere (the datastore is shared by every host: the second heartbeat channel).
        enabled = api.patch(f"/api/v1/clusters/{cluster['id']}/ha", json={"enabled": True})
        if enabled.status_code != 200:
            raise RuntimeError(f"enabling HA failed: {enabled.text}")


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.3)


def seed(stack: Stack, simulated: bool, datastore_dir: Path, bridges: list[str]) -> None:
    with stack.client() as api:
        dc = api.post("/api/v1/datacenters", json={"name": "dc1"}).json()
        cluster = api.post("/api/v1/clusters", json={"name": "cluster1", "datacenter_id": dc["id"]}).json()
        host = stack.add_host("esx1", dc["id"], cluster["id"], simulated=simulated)
        deadline = time.monotonic() + 60
        while api.get(f"/api/v1/hosts/{host.host_id}").json()["connection_state"] != "connected":
            if time.monotonic() > deadline:
                raise RuntimeError("the host's agent did not connect; see run/agent-esx1.log")
            time.sleep(0.3)
        ds = api.post("/api/v1/datastores", json={"name": "datastore1", "datacenter_id": dc["id"], "url": str(datastore_dir), "host_ids": [host.host_id]}).json()
        pg = api.post("/api/v1/portgroups", json={"name": "vm-network", "datacenter_id": dc["id"], "vlan_id": 0, "host_ids": [host.host_id]}).json()
        bridges.append(pg["bridge"])
        api.post("/api/v1/folders", json={"name": "web", "datacenter_id": dc["id"]})
        # The agent creates the port group's bridge on its next report; wait for it.
        deadline = time.monotonic() + 30
        while host.host_id not in api.get(f"/api/v1/portgroups/{pg['id']}").json()["present_on_host_ids"]:
            if time.monotonic() > deadline:
                raise RuntimeError("port group bridge did not appear on the host")
            time.sleep(0.3)
        for name, power_on in (("web1", True), ("web2", True), ("db1", False)):
            task = api.post(
                "/api/v1/vms",
                json={
                    "name": name,
                    "host_id": host.host_id,
                    "memory_mib": 32,
                    "disks": [{"datastore_id": ds["id"], "capacity_mib": 64}],
                    "nics": [{"portgroup_id": pg["id"]}],
                },
            ).json()
            done = _wait_task(api, task)
            if done["state"] != "success":
                raise RuntimeError(f"creating {name} failed: {done['error_code']}: {done['error_message']}")
            if power_on:
                _wait_task(api, api.post(f"/api/v1/vms/{done['object_id']}/power/on").json())


def _start_server(stack: Stack, api_replicas: int, workers: int) -> str:
    """Start the server's processes: one API as ever, or ``api_replicas`` behind HAProxy
    (vcenter.lab.replicas) with two beats (one schedules, one stands by); say what runs."""
    if api_replicas < 1 or workers < 1:
        raise RuntimeError("VCENTER_API_REPLICAS and VCENTER_WORKERS are at least 1")
    if api_replicas == 1 and workers == 1:
        stack.start_server()
        return "API, worker, beat"
    from vcenter.lab import replicas

    if api_replicas == 1:
        stack.start_server()
        for i in range(2, workers + 1):
            stack._spawn(f"worker{i}", ["worker", "--node-name", f"orchestrator{i}@%h"])
        return f"API, {workers} workers, beat"
    started = replicas.start(stack, api_replicas, workers=workers, beats=2)
    ports = ", ".join(f"{name} :{port}" for name, port in started.api_ports.items())
    return f"HAProxy on :{stack.api_port} ({stack.workdir}/haproxy.log) in front of {api_replicas} API replicas ({ports}), {workers} worker(s), beat1 + beat2 (one schedules, one stands by)"


def main() -> None:
    parser = argparse.ArgumentParser(description="Run virtcenter locally with a seeded inventory.")
    parser.add_argument("--rundir", default="run", help="where state, logs and datastores go (default ./run)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("VCENTER_API_PORT", "8080")))
    parser.add_argument("--redis-port", type=int, default=6390, help="the Redis this starts (default 6390; unused when VCENTER_REDIS_URL is set)")
    parser.add_argument("--simulated", action="store_true", help="simulated hosts even where real ones are possible")
    parser.add_argument("--hosts", type=int, default=3, help="lab hosts (real mode)")
    parser.add_argument("--guests-per-host", type=int, default=2, help="running tiny Linux guests per lab host (real mode)")
    parser.add_argument(
        "--api-replicas", type=int, default=int(os.environ.get("VCENTER_API_REPLICAS", "1")), help="API processes; more than one: behind HAProxy on --port [VCENTER_API_REPLICAS, default 1]"
    )
    parser.add_argument("--workers", type=int, default=int(os.environ.get("VCENTER_WORKERS", "1")), help="orchestrator workers [VCENTER_WORKERS, default 1]")
    args = parser.parse_args()

    rundir = Path(args.rundir).resolve()
    if rundir.exists():
        shutil.rmtree(rundir)
    rundir.mkdir(parents=True)
    real, why = _real_hosts_possible()
    simulated = args.simulated or not real
    print(f"hosts: {'SIMULATED (' + ('asked for' if args.simulated else why) + ')' if simulated else 'real libvirt/QEMU (' + why + ')'}", flush=True)

    lab = None
    if not simulated:
        from vcenter.lab.guest import build_guest
        from vcenter.lab.hosts import GATEWAY, Capacity, Lab

        print("building the tiny Linux guest (cached after the first time) ...", flush=True)
        build_guest()
        lab = Lab()  # the default work directory, so that `vcenter lab status` finds it
        started = time.monotonic()
        lab.up(args.hosts, Capacity(cpus=2, memory_mib=4096))
        print(f"lab: {args.hosts} hosts up in {time.monotonic() - started:.1f} s on {GATEWAY}/24", flush=True)
    redis_proc = None
    redis_url = os.environ.get("VCENTER_REDIS_URL")
    if not redis_url:
        redis_password = _redis_password(rundir)
        redis_proc = _start_redis(rundir, args.redis_port, redis_password, extra_bind=None if lab is None else GATEWAY)
        redis_url = f"redis://:{redis_password}@127.0.0.1:{args.redis_port}/0"
    password = os.environ.get("VCENTER_ADMIN_PASSWORD", "vmware-admin")
    overrides = {} if lab is None else {"api_host": f"127.0.0.1,{GATEWAY}"}
    if lab is not None:  # the lab's loop-mounted datastores live in its own work directory
        roots = f"{DEFAULT_DATASTORE_ROOTS},{rundir},{lab.workdir / 'datastores'}"
        overrides.update(datastore_roots=roots, agent_datastore_roots=roots)
    stack = Stack.create(rundir, os.environ.get("VCENTER_DATABASE_URL"), redis_url, **overrides)
    stack.api_port = args.port
    stack.env["VCENTER_API_PORT"] = str(args.port)
    stack.env["VCENTER_PUBLIC_URL"] = f"http://127.0.0.1:{args.port}"
    stack.admin = ("admin", password)

    stopping = False
    bridges: list[str] = []

    def _stop(*_: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        print("\nstopping: agents, libvirtd and guests, HA monitors, worker, beat, API, Redis ...", flush=True)
        stack.stop()
        if lab is not None:
            lab.down()
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(10)
        print("stopped; nothing left running.", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        shape = _start_server(stack, args.api_replicas, args.workers)
        # Two HA monitors: one takes the lock and acts, the other stands by to take over.
        for name in ("ha1", "ha2"):
            stack.start_ha_monitor(name)
        if lab is None:
            seed(stack, simulated, rundir / "datastores" / "datastore1", bridges)
        else:
            seed_lab(stack, lab, args.guests_per_host)
    except Exception as exc:
        print(f"start-up failed: {exc}", file=sys.stderr, flush=True)
        _stop()
    print(
        f"""
virtcenter is up ({"one SIMULATED host esx1" if simulated else f"{args.hosts} real lab hosts (libvirt/QEMU, TCG guests), vcenter lab status lists them"}, database {stack.env["VCENTER_DATABASE_URL"]})
  dashboard  {stack.url}/ui
  API        {stack.url}/api/v1
  API docs   {stack.url}/docs
  health     {stack.url}/livez  {stack.url}/readyz  {stack.url}/metrics (not anonymous: -H "Authorization: Bearer $TOKEN")
  login      admin / {password}
             TOKEN=$(curl -s -X POST {stack.url}/api/v1/session -H 'content-type: application/json' \\
                     -d '{{"username":"admin","password":"{password}"}}' | python3 -c 'import sys,json; print(json.load(sys.stdin)["token"])')
  logs       {rundir}/*.log
  processes  {shape}, HA monitors ha1 + ha2 (one active, one standby), {"the agent" if simulated else "an agent per host"}
  HA / DRS   {"HA on cluster1: `vcenter lab fault kill-host host3` and its guests restart on the other hosts; DRS in manual mode" if lab is not None else "off (one host)"}
  redis      {"password required: REDISCLI_AUTH=$(cat " + str(rundir) + "/redis-password) redis-cli -p " + str(args.redis_port) if redis_proc else "VCENTER_REDIS_URL as given"}
  security   plain HTTP on loopback (the local lab); docs/operations.md "Channel security" turns on HTTPS
Ctrl-C stops everything.""",
        flush=True,
    )
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
