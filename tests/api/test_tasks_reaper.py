"""Task leases, the reaper and the outbox: a task whose agent died is re-sent, reconciled or
ended WORKER_LOST; a command whose broker was down at commit time is sent later."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.apihelpers import app_for, login, make_admin, register_host
from vcenter.core.clock import utcnow
from vcenter.db.models import OutboxMessage, Task
from vcenter.db.session import session_scope, sessionmaker_for
from vcenter.services.housekeeping import reaper
from vcenter.services.tasks import outbox


@pytest.fixture
def env(settings):
    make_admin(settings)
    with TestClient(app_for(settings)) as client:
        auth = login(client)
        dc = client.post("/api/v1/datacenters", json={"name": "dc"}, headers=auth).json()
        host, agent = register_host(client, auth, dc["id"], "h1")
        r = client.post(f"/api/v1/agent/hosts/{host['id']}/state", json={"facts": {"hostname": "h1"}, "domains": []}, headers=agent)
        assert r.json()["accepted"]
        yield client, auth, agent, host, settings


def _expire(settings, task_id):
    with session_scope(settings.database_url) as session:
        task = session.get(Task, task_id)
        task.lease_expires_at = utcnow() - timedelta(seconds=1)


def _reap(settings):
    with session_scope(settings.database_url) as session:
        return reaper.reap(session, settings)


def _command_ids(settings, task_id):
    with session_scope(settings.database_url) as session:
        rows = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()
        return [r.payload["command_id"] for r in rows if r.payload.get("task_id") == task_id]


def test_a_task_whose_agent_died_is_resent_then_ends_worker_lost(env):
    client, auth, agent, host, settings = env
    task = client.post("/api/v1/vms", json={"name": "v1", "host_id": host["id"]}, headers=auth).json()
    command_id = _command_ids(settings, task["id"])[0]
    for attempt in range(1, settings.task_max_attempts + 1):
        r = client.post(f"/api/v1/agent/hosts/{host['id']}/tasks/{task['id']}/progress", json={"command_id": command_id, "step": "vm.create"}, headers=agent)
        assert r.json()["proceed"] is True
        _expire(settings, task["id"])
        counts = _reap(settings)
        state = client.get(f"/api/v1/tasks/{task['id']}", headers=auth).json()
        if attempt < settings.task_max_attempts:
            assert counts["resent"] == 1 and state["state"] == "queued" and state["attempts"] == attempt + 1
        else:
            assert counts["lost"] == 1 and state["state"] == "error" and state["error_code"] == "WORKER_LOST"
    # Every re-send carried the same command id: the agent's idempotency key.
    assert set(_command_ids(settings, task["id"])) == {command_id}
    assert len(_command_ids(settings, task["id"])) == settings.task_max_attempts
    events = client.get(f"/api/v1/events?task_id={task['id']}&kind=task.resent", headers=auth).json()
    assert events["total"] == settings.task_max_attempts - 1


def test_an_expired_power_task_is_reconciled_from_the_reported_state(env):
    client, auth, agent, host, settings = env
    task = client.post("/api/v1/vms", json={"name": "v2", "host_id": host["id"]}, headers=auth).json()
    vm = client.get("/api/v1/vms?name=v2", headers=auth).json()["items"][0]
    cid = _command_ids(settings, task["id"])[0]
    domain = {"uuid": vm["libvirt_uuid"], "name": "v2", "power_state": "poweredOff"}
    client.post(f"/api/v1/agent/hosts/{host['id']}/tasks/{task['id']}/result", json={"command_id": cid, "ok": True, "domain": domain}, headers=agent)
    on = client.post(f"/api/v1/vms/{vm['id']}/power/on", headers=auth).json()
    cid = _command_ids(settings, on["id"])[0]
    client.post(f"/api/v1/agent/hosts/{host['id']}/tasks/{on['id']}/progress", json={"command_id": cid, "step": "vm.start"}, headers=agent)
    # The agent died after starting the VM; its next incarnation reports the VM running.
    client.post(f"/api/v1/agent/hosts/{host['id']}/state", json={"facts": {"hostname": "h1"}, "domains": [{**domain, "power_state": "poweredOn"}]}, headers=agent)
    _expire(settings, on["id"])
    assert _reap(settings)["reconciled"] == 1
    done = client.get(f"/api/v1/tasks/{on['id']}", headers=auth).json()
    assert done["state"] == "success" and done["result"] == {"reconciled": True}


def test_a_command_nobody_picks_up_ends_agent_unreachable_and_rolls_back(env):
    client, auth, agent, host, settings = env
    settings.task_queue_timeout = 0.0
    task = client.post("/api/v1/vms", json={"name": "v3", "host_id": host["id"]}, headers=auth).json()
    assert _reap(settings)["unreachable"] == 1
    done = client.get(f"/api/v1/tasks/{task['id']}", headers=auth).json()
    assert done["state"] == "error" and done["error_code"] == "AGENT_UNREACHABLE"
    assert client.get("/api/v1/vms?name=v3", headers=auth).json()["total"] == 0


class _Broker:
    def __init__(self, up: bool):
        self.up = up
        self.sent: list = []

    def send_task(self, name, args, queue):
        if not self.up:
            raise ConnectionError("broker down")
        self.sent.append((name, args, queue))


def test_outbox_keeps_a_command_until_the_broker_takes_it(env):
    client, auth, agent, host, settings = env
    factory = sessionmaker_for(settings.database_url)
    with session_scope(settings.database_url) as session:
        outbox.enqueue(session, "host.99", "agent.execute", {"command_id": "c-1"})
    down = _Broker(up=False)
    assert outbox.relay(factory, down) == 0
    with session_scope(settings.database_url) as session:
        row = session.scalar(select(OutboxMessage).where(OutboxMessage.queue == "host.99"))
        assert row.sent_at is None and row.send_attempts == 1
    up = _Broker(up=True)
    assert outbox.relay(factory, up) == 1
    assert up.sent == [("agent.execute", [{"command_id": "c-1"}], "host.99")]
    assert outbox.relay(factory, up) == 0  # never twice
