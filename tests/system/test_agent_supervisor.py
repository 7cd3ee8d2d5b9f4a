"""The agent's supervisor (workers.agent.supervisor) with real processes: a child that crashes
(SIGSEGV, as libvirt 9.0's client can make it) is started again, a deliberate exit is not, a
stop request reaches the child; and `vcenter agent` itself: its heartbeat key comes back within
seconds after the agent process is killed with SIGSEGV, and the server's expectations it keeps
on disk let a restarted agent renew its datastore heartbeats before any report."""

from __future__ import annotations

import faulthandler
import os
import signal
import threading
import time
from pathlib import Path


from workers.agent.supervisor import DELIBERATE, supervise


def _count(path: Path) -> int:
    n = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(n))
    return n


def test_a_crashed_child_is_started_again_until_it_ends(tmp_path):
    runs = tmp_path / "runs"

    def run():
        if _count(runs) <= 2:
            faulthandler.disable()  # pytest's crash report of the child is noise here
            os.kill(os.getpid(), signal.SIGSEGV)  # as a use-after-free in libvirt would end it
        time.sleep(0.1)

    assert supervise(run, restart_delay=0.05, max_restarts=5) == (0, 2)
    assert runs.read_text() == "3"


def test_a_deliberate_exit_is_not_restarted(tmp_path):
    runs = tmp_path / "runs"

    def run():
        _count(runs)
        raise SystemExit("no credential: give --registration-token")

    assert supervise(run, restart_delay=0.05, max_restarts=5) == (DELIBERATE, 0)
    assert runs.read_text() == "1"


def test_an_unhandled_exception_is_restarted_and_bounded(tmp_path):
    runs = tmp_path / "runs"

    def run():
        _count(runs)
        raise RuntimeError("boom")

    code, restarts = supervise(run, restart_delay=0.01, max_restarts=2)
    assert (code, restarts) == (1, 2) and runs.read_text() == "3"


def test_sigterm_reaches_the_child_and_ends_supervision(tmp_path):
    started = tmp_path / "started"

    def run():
        started.write_text(str(os.getpid()))
        time.sleep(30)

    def stop():
        deadline = time.monotonic() + 10
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)  # the supervisor is this process

    me = os.getpid()
    t = threading.Thread(target=stop)
    t.start()
    t0 = time.monotonic()
    code, restarts = supervise(run, restart_delay=0.01, max_restarts=5)
    t.join()
    assert os.getpid() == me and restarts == 0 and code == 128 + signal.SIGTERM and time.monotonic() - t0 < 10
    child = int(started.read_text())
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]


def test_vcenter_agent_beats_again_within_seconds_after_a_crash(tmp_path):
    """The real `vcenter agent` (simulated hypervisor) under its supervisor: SIGSEGV to the agent
    process; its Redis heartbeat key advances again within HA's default detection time (5 s),
    and the expectations it keeps (datastores, HA configuration) are on disk for the restart."""
    import json

    import redis

    from tests.apihelpers import wait_for
    from tests.conftest import REDIS_URL
    from vcenter.lab.stack import Stack
    from vcenter.messaging.contracts import heartbeat_key

    s = Stack.create(
        tmp_path / "stack",
        None,
        REDIS_URL,
        heartbeat_period=0.2,
        heartbeat_ttl=1.0,
        agent_report_period=1,
        agent_restart_delay=0.2,
        agent_reconnect_delay=0.3,
        reaper_period=1,
        host_monitor_period=0.5,
    )
    r = redis.Redis.from_url(REDIS_URL)
    host = None
    try:
        s.start_server(with_beat=False)
        with s.client() as api:
            dc = api.post("/api/v1/datacenters", json={"name": "dc"}).json()
            host = s.add_host("sim1", dc["id"], simulated=True)
            # Below the stack's work directory: a datastore root of its server and agents.
            ds = api.post("/api/v1/datastores", json={"name": "ds1", "datacenter_id": dc["id"], "url": str(tmp_path / "stack" / "ds1"), "host_ids": [host.host_id]}).json()
            expected = Path(s.agent_state_dir("sim1")) / "expected.json"
            wait_for(lambda: expected.exists() and [d["id"] for d in json.loads(expected.read_text())["datastores"]] == [ds["id"]], 30, what="the server's expectations kept on disk")
        key = heartbeat_key(host.host_id)
        wait_for(lambda: r.get(key), 30, what="heartbeat key")
        children = Path(f"/proc/{host.agent.pid}/task/{host.agent.pid}/children")
        (child,) = (int(p) for p in children.read_text().split())
        os.kill(child, signal.SIGSEGV)
        t0 = time.monotonic()
        (new,) = wait_for(lambda: (c := children.read_text().split()) not in ([], [str(child)]) and c, 5, what="the agent started again")
        before = r.get(key)
        wait_for(lambda: (v := r.get(key)) is not None and v != before, 5 - (time.monotonic() - t0), what="the restarted agent's heartbeat")
        print(f"heartbeat again {time.monotonic() - t0:.1f} s after SIGSEGV (agent {child} -> {new})")
        assert host.agent.poll() is None  # the supervisor lives on
    finally:
        s.stop()
        if host is not None:
            r.delete(heartbeat_key(host.host_id))
