"""The pieces of vcenter.observability on their own: a metric counted only when its
transaction commits (a savepoint's rollback drops only its own), the task transitions read from
what a flush writes, the process listener's answers (liveness by the loop's age, readiness by
the checks, /metrics under the metrics token), the heartbeat age from a key's PTTL, the pool and
scrape-time collectors, and each role's families only in its own process."""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from vcenter.db.models import Base, Task
from vcenter.observability import metrics
from vcenter.observability.committed import after_commit
from vcenter.observability.listener import LoopWatch, ProcessListener, may_scrape, readiness
from vcenter.observability.metrics import PoolCollector, ServerState, ServerStateCollector
from vcenter.services.monitoring.scrape import heartbeat_age
from vcenter.services.tasks import task_metrics  # noqa: F401  (the flush hook under test)


def _session() -> Session:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine, tables=[Task.__table__])
    return Session(engine)


def test_a_record_runs_on_commit_and_not_after_a_rollback():
    seen: list[str] = []
    with _session() as session:
        session.begin()
        after_commit(session, lambda: seen.append("kept"))
        assert seen == []
        session.commit()
        assert seen == ["kept"]
        session.begin()
        after_commit(session, lambda: seen.append("rolled back"))
        session.rollback()
        session.begin()
        session.commit()
    assert seen == ["kept"]


def test_a_savepoints_rollback_drops_only_what_it_queued():
    seen: list[str] = []
    with _session() as session:
        session.begin()
        after_commit(session, lambda: seen.append("outer"))
        nested = session.begin_nested()
        after_commit(session, lambda: seen.append("inner, rolled back"))
        nested.rollback()
        with session.begin_nested():
            after_commit(session, lambda: seen.append("inner, released"))
        session.commit()
    assert seen == ["outer", "inner, released"]


def _count(kind: str, state: str) -> float:
    return metrics.TASKS.labels(kind, state)._value.get()


def test_task_transitions_are_counted_from_the_flush_once_committed():
    kind = "test.observed"
    before = {state: _count(kind, state) for state in ("queued", "running", "success")}
    waits = metrics.QUEUE_WAIT.labels(kind)._sum.get()
    with _session() as session:
        task = Task(kind=kind, state="queued", step="queued", object_type="vm", object_id=1)
        session.add(task)
        session.flush()
        assert _count(kind, "queued") == before["queued"]  # flushed, not committed
        session.commit()
        assert _count(kind, "queued") == before["queued"] + 1
        task.state = "running"
        session.commit()
        task.state = "success"
        session.rollback()  # never happened
        assert _count(kind, "success") == before["success"]
        task = session.get(Task, task.id)
        task.state = "success"
        session.commit()
    assert _count(kind, "running") == before["running"] + 1
    assert _count(kind, "success") == before["success"] + 1
    assert metrics.QUEUE_WAIT.labels(kind)._sum.get() >= waits


def test_liveness_is_the_age_of_the_loops_last_turn():
    now = [100.0]
    watch = LoopWatch(10.0, clock=lambda: now[0])
    now[0] = 109.0
    assert watch.live() and watch.age() == 9.0
    now[0] = 111.0
    assert not watch.live()
    watch.stamp()
    assert watch.live() and watch.age() == 0.0
    watch.wait("standing by for the lock")
    now[0] = 500.0
    assert watch.live() and watch.age() == 0.0  # parked on purpose


def test_readiness_names_the_dependency_that_does_not_answer():
    def down() -> None:
        raise ConnectionError("refused")

    assert readiness({"redis": lambda: None}) == (True, {"redis": "ok"})
    assert readiness({"redis": lambda: None, "database": down}) == (False, {"redis": "ok", "database": "error: ConnectionError"})


def test_metrics_on_a_process_listener_need_the_token_when_one_is_set():
    assert may_scrape(None, None) and may_scrape("Bearer whatever", None)
    assert may_scrape("Bearer s3cret", "s3cret")
    assert not may_scrape(None, "s3cret") and not may_scrape("Bearer wrong", "s3cret") and not may_scrape("Basic s3cret", "s3cret")


def test_the_listener_answers_livez_readyz_metrics_and_nothing_else():
    now = [0.0]
    watch = LoopWatch(5.0, clock=lambda: now[0])
    listener = ProcessListener("127.0.0.1:0", "worker", watch, {"database": lambda: None}, "s3cret")
    try:
        status, kind, body = listener.answer("/livez", None)
        assert status == 200 and json.loads(body) == {"status": "ok", "role": "worker", "loop_age_seconds": 0.0}
        now[0] = 6.0
        status, _, body = listener.answer("/livez?verbose", None)
        assert status == 503 and json.loads(body)["status"] == "stalled"
        assert listener.answer("/readyz", None)[0] == 200
        assert listener.answer("/metrics", None)[0] == 401
        status, kind, body = listener.answer("/metrics", "Bearer s3cret")
        assert status == 200 and kind.startswith("text/plain") and b"process_cpu_seconds_total" in body
        assert listener.answer("/", None)[0] == 404 and listener.answer("/metrics/../livez", None)[0] == 404
    finally:
        listener.stop()


def test_heartbeat_age_from_the_keys_remaining_time_to_live():
    assert heartbeat_age(3.0, 2500) == 0.5
    assert heartbeat_age(3.0, 3000) == 0.0
    assert heartbeat_age(3.0, 4000) == 0.0  # set with a longer TTL than ours: never negative
    assert heartbeat_age(3.0, -2) is None and heartbeat_age(3.0, -1) is None


class _Pool:
    _max_overflow = 10

    def size(self) -> int:
        return 10

    def checkedout(self) -> int:
        return 3


def _scrape(*collectors) -> str:
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry).decode()


def test_the_pool_collector_reports_use_and_ceiling():
    text = _scrape(PoolCollector(lambda: [("main", _Pool()), ("sqlite", object())]))
    assert 'vcenter_db_pool_connections_in_use{database="main"} 3.0' in text
    assert 'vcenter_db_pool_connections_max{database="main"} 20.0' in text
    assert "sqlite" not in text  # a pool without counts is left out


def test_the_state_collector_reports_gauges_and_survives_a_failing_read():
    state = ServerState([("vm.powerOn", "queued", 2)], 4, 1.5, [(1, "h1", 0.25), (2, "h2", None)])
    text = _scrape(ServerStateCollector(lambda: state))
    assert 'vcenter_tasks_open{kind="vm.powerOn",state="queued"} 2.0' in text
    assert "vcenter_outbox_pending 4.0" in text and "vcenter_outbox_lag_seconds 1.5" in text
    assert 'vcenter_agent_heartbeat_age_seconds{host="h1",host_id="1"} 0.25' in text
    assert 'host="h2"' not in text.split("vcenter_agent_heartbeat_missing")[0].split("vcenter_agent_heartbeat_age_seconds")[-1]
    assert 'vcenter_agent_heartbeat_missing{host="h2",host_id="2"} 1.0' in text
    assert "vcenter_state_scrape_ok 1.0" in text

    def broken() -> ServerState:
        raise ConnectionError("database down")

    text = _scrape(ServerStateCollector(broken))
    assert "vcenter_state_scrape_ok 0.0" in text and "vcenter_tasks_open" not in text


def test_each_role_serves_its_own_families_only():
    assert metrics.HA_ACTIVE in metrics.ROLE_FAMILIES["ha"] and all(metrics.HA_ACTIVE not in metrics.ROLE_FAMILIES[r] for r in ("api", "worker", "beat", "agent"))
    assert metrics.BEAT_ACTIVE in metrics.ROLE_FAMILIES["beat"] and metrics.AGENT_HEARTBEATS in metrics.ROLE_FAMILIES["agent"]
    assert metrics.TASKS not in metrics.ROLE_FAMILIES["agent"]  # the agent commits no task
    metrics.set_role("beat", "test")
    metrics.set_role("beat", "test")  # twice in one process: registered once
    assert "vcenter_beat_scheduler_active" in generate_latest(metrics.REGISTRY).decode()


def test_ha_verdict_labels():
    assert metrics.ha_host_verdict("failed") == "host_failed" and metrics.ha_host_verdict("connected") == "host_connected"
