"""Issue 20, item 3: nothing is lost when a replica dies. Two API replicas behind HAProxy, two
workers, two beats, two HA monitors, two hosts whose agents drive the simulated hypervisor (the
real agent code; only the hypervisor is simulated). Clients run a bounded count of power
operations (OPERATIONS over VMS VMs, one in flight per VM), each with its own Idempotency-Key,
retrying on a connection error or a balancer's 5xx with the same key. After a third of them were
accepted: SIGKILL one API replica, one worker, the active beat and the active HA monitor.

Asserted: every accepted operation ends in success or a named error; none ran twice (one Task
per key, the one the client was answered with); no VM on two hosts; after two fresh reports of
each host, the inventory shows what the last successful operation on each VM left.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass

import httpx
import pytest
import redis
from sqlalchemy import func, select

from tests.apihelpers import wait_for, wait_reports
from tests.conftest import REDIS_URL, fresh_postgres, redis_db_url
from vcenter.db.models import IdempotencyKey, Task, VirtualMachine
from vcenter.db.session import session_scope
from vcenter.lab import replicas
from vcenter.lab.stack import Stack
from vcenter.messaging.contracts import HA_LOCK_KEY

VMS = 10
OPERATIONS = 60
CLIENTS = 5
KILL_AFTER = OPERATIONS // 3
TERMINAL = ("success", "error", "cancelled")
RETRYABLE = (502, 503, 504)


@dataclass
class Outcome:
    vm_id: int
    action: str
    key: str
    status: int = 0
    task_id: int | None = None
    state: str | None = None
    error_code: str | None = None
    retries: int = 0
    replayed: bool = False  # a retry answered with the first attempt's Task
    resent: bool = False  # sent again after its 202, as a client that lost the answer would


@pytest.fixture(scope="module")
def shape(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("noloss")
    redis_url = redis_db_url(REDIS_URL, 15)
    redis.Redis.from_url(redis_url).flushdb()
    stack = Stack.create(
        workdir,
        fresh_postgres(),
        redis_url,
        heartbeat_period=0.3,
        heartbeat_ttl=2,
        agent_report_period=1,
        reaper_period=1,
        host_monitor_period=0.5,
        agent_reconnect_delay=0.3,
        task_lease=8,
        beat_lock_ttl=4,
        ha_lock_ttl=3,
    )
    try:
        started = replicas.start(stack, replicas=2, workers=2, beats=2)
        for name in ("ha1", "ha2"):
            stack.start_ha_monitor(name)
        with stack.client() as api:
            dc = api.post("/api/v1/datacenters", json={"name": "dc1"}).json()
            cluster = api.post("/api/v1/clusters", json={"name": "cl1", "datacenter_id": dc["id"]}).json()
            for name in ("h1", "h2"):
                host = stack.add_host(name, dc["id"], cluster["id"], simulated=True)
                wait_for(lambda: api.get(f"/api/v1/hosts/{host.host_id}").json()["connection_state"] == "connected", 60, what=f"host {name} connected")
            created = []
            for n in range(VMS):
                host_id = stack.hosts["h1" if n % 2 == 0 else "h2"].host_id
                created.append(api.post("/api/v1/vms", json={"name": f"vm{n}", "host_id": host_id, "memory_mib": 32}).json())
            for task in created:
                wait_for(lambda: api.get(f"/api/v1/tasks/{task['id']}").json()["state"] in TERMINAL, 60, what="VMs created")
                assert api.get(f"/api/v1/tasks/{task['id']}").json()["state"] == "success"
        yield started
    except BaseException:
        print(stack.log_tails())
        raise
    finally:
        stack.stop()


def _answer(call, outcome: Outcome, deadline: float) -> httpx.Response:
    """``call()`` until it answers something other than a connection error or a balancer's
    5xx (a replica died under it): the retry of an operation carries the same key."""
    while True:
        try:
            response = call()
            if response.status_code not in RETRYABLE:
                return response
        except httpx.TransportError:
            pass
        outcome.retries += 1
        assert time.monotonic() < deadline, f"no answer for {outcome}"
        time.sleep(0.2)


def _operate(api: httpx.Client, vm_id: int, action: str, accepted: list[Outcome]) -> Outcome:
    outcome = Outcome(vm_id, action, uuid.uuid4().hex)
    deadline = time.monotonic() + 180
    posted = _answer(lambda: api.post(f"/api/v1/vms/{vm_id}/power/{action}", headers={"Idempotency-Key": outcome.key}), outcome, deadline)
    outcome.status = posted.status_code
    if posted.status_code != 202:
        outcome.error_code = posted.json().get("code")
        return outcome
    outcome.task_id = posted.json()["id"]
    outcome.replayed = posted.headers.get("idempotent-replayed") == "true"
    accepted.append(outcome)
    if len(accepted) % 3 == 0:
        # A client that lost this answer sends the same request again (round robin: often to
        # the other replica): the same Task, marked a replay, nothing started.
        again = _answer(lambda: api.post(f"/api/v1/vms/{vm_id}/power/{action}", headers={"Idempotency-Key": outcome.key}), outcome, deadline)
        assert again.status_code == 202 and again.json()["id"] == outcome.task_id and again.headers.get("idempotent-replayed") == "true", again.text
        outcome.resent = True
    while True:
        task = _answer(lambda: api.get(f"/api/v1/tasks/{outcome.task_id}", params={"wait": 5}), outcome, deadline).json()
        if task["state"] in TERMINAL:
            outcome.state, outcome.error_code = task["state"], task.get("error_code")
            return outcome
        assert time.monotonic() < deadline, f"task never ended: {task}"


def _kill_the_actives(shape: replicas.Replicas) -> list[str]:
    stack = shape.stack
    killed = ["api1", "worker1"]
    for log in sorted(stack.workdir.glob("beat*.log")):
        if "Acquired lock" in log.read_text(errors="replace"):
            killed.append(log.stem)
    owner = redis.Redis.from_url(stack.env["VCENTER_REDIS_URL"]).get(HA_LOCK_KEY)
    pid = int(owner.decode().split(":")[1]) if owner else None
    killed += [name for name in ("ha1", "ha2") if stack.processes[name].pid == pid]
    for name in killed:
        shape.kill(name)
    return killed


def test_no_operation_is_lost_or_doubled_when_replicas_die(shape):
    stack = shape.stack
    with stack.client() as api:
        token = api.headers["Authorization"]
        vms = [vm["id"] for vm in api.get("/api/v1/vms", params={"limit": 100}).json()["items"]]
        hosts_before = {vm["id"]: vm["host_id"] for vm in api.get("/api/v1/vms", params={"limit": 100}).json()["items"]}
    assert len(vms) == VMS
    accepted: list[Outcome] = []
    outcomes: list[Outcome] = []
    plan = [(vms[i % VMS], "on" if (i // VMS) % 2 == 0 else "off") for i in range(OPERATIONS)]
    lanes = [[op for i, op in enumerate(plan) if vms.index(op[0]) % CLIENTS == lane] for lane in range(CLIENTS)]
    failures: list[BaseException] = []

    def run(lane: list[tuple[int, str]]) -> None:
        try:
            with httpx.Client(base_url=stack.url, headers={"Authorization": token}, timeout=30) as client:
                for vm_id, action in lane:
                    outcomes.append(_operate(client, vm_id, action, accepted))
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(lane,)) for lane in lanes]
    for t in threads:
        t.start()
    wait_for(lambda: len(accepted) >= KILL_AFTER or failures, 120, interval=0.05, what=f"{KILL_AFTER} operations accepted")
    killed = _kill_the_actives(shape)
    # The standbys take over: the other HA monitor holds the lock, the other beat schedules.
    broker = redis.Redis.from_url(stack.env["VCENTER_REDIS_URL"])
    standby_ha = next(stack.processes[n].pid for n in ("ha1", "ha2") if n not in killed)
    wait_for(lambda: (broker.get(HA_LOCK_KEY) or b"").decode().split(":")[1:2] == [str(standby_ha)], 30, what="the standby HA monitor active")
    standby_beat = next(n for n in shape.beats if n not in killed)
    wait_for(lambda: "Acquired lock" in (stack.workdir / f"{standby_beat}.log").read_text(errors="replace"), 30, what="the standby beat active")
    for t in threads:
        t.join(300)
    assert not failures, failures
    assert len(outcomes) == OPERATIONS

    # Every accepted operation ended, in success or a named error.
    ended = Counter(o.state for o in accepted)
    assert all(o.state == "success" or (o.state == "error" and o.error_code) for o in accepted), [o for o in accepted if o.state != "success"]
    refused = Counter(o.error_code for o in outcomes if o.status != 202)
    assert all(code for code in refused), refused
    # None twice: one Task per key, the one the client was answered with, and no other power task.
    with session_scope(stack.env["VCENTER_DATABASE_URL"]) as session:
        rows = dict(session.execute(select(IdempotencyKey.key, IdempotencyKey.task_id)).all())
        power_tasks = session.scalar(select(func.count()).select_from(Task).where(Task.kind.like("vm.power%")))
        uuids = session.execute(select(VirtualMachine.libvirt_uuid, func.count()).group_by(VirtualMachine.libvirt_uuid)).all()
    assert {o.key: o.task_id for o in accepted} == rows
    assert power_tasks == len(accepted)
    # No VM on two hosts: each VM once, on the host it was created on (nothing moved them).
    assert all(count == 1 for _, count in uuids) and len(uuids) == VMS
    with stack.client() as api:
        for host in stack.hosts.values():
            wait_reports(api, host.host_id)
        final = {vm["id"]: vm for vm in api.get("/api/v1/vms", params={"limit": 100}).json()["items"]}
    assert {vm_id: vm["host_id"] for vm_id, vm in final.items()} == hosts_before
    # The inventory agrees with the agents' reports: the last success on each VM is its state.
    expected: dict[int, str] = {}
    for o in sorted((o for o in accepted if o.state == "success"), key=lambda o: o.task_id or 0):
        expected[o.vm_id] = "poweredOn" if o.action == "on" else "poweredOff"
    assert {vm_id: final[vm_id]["power_state"] for vm_id in expected} == expected
    retried = sum(o.retries for o in outcomes)
    print(
        f"\nno-loss: {OPERATIONS} operations, {len(accepted)} accepted ({dict(ended)}), {len(outcomes) - len(accepted)} refused ({dict(refused)}), "
        f"{retried} client retries ({sum(o.replayed for o in outcomes)} answered as replays), {sum(o.resent for o in outcomes)} sent again after their 202 (each the same Task), {power_tasks} power tasks for {len(rows)} keys (none twice), killed {killed} after {KILL_AFTER} accepted"
    )
