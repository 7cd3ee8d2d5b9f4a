"""The API's /metrics on both databases: the system's gauges read at scrape time (open tasks by
kind and state, the outbox's backlog and lag, each trusted host's heartbeat age from its key's
TTL in Redis, a missing heartbeat), the process's task counters and its database pool, all in a
text that `promtool check metrics` accepts."""

from __future__ import annotations

import shutil
import subprocess
from datetime import timedelta

import redis
from fastapi.testclient import TestClient

from tests.apihelpers import app_for
from vcenter.core.clock import utcnow
from vcenter.db.models import Datacenter, Host, OutboxMessage, Task
from vcenter.db.session import session_scope
from vcenter.messaging.contracts import heartbeat_key

TOKEN = "prometheus-scrape-secret"


def test_the_scrape_reads_open_tasks_outbox_lag_and_heartbeat_ages(settings):
    settings = settings.model_copy(update={"metrics_token": TOKEN, "heartbeat_ttl": 30.0})
    with session_scope(settings.database_url) as session:
        dc = Datacenter(name="dc-metrics")
        session.add(dc)
        session.flush()
        beating = Host(name="beating", datacenter_id=dc.id, trust_state="trusted")
        silent = Host(name="silent", datacenter_id=dc.id, trust_state="trusted")
        sleeping = Host(name="sleeping", datacenter_id=dc.id, trust_state="trusted", standby=True)
        session.add_all([beating, silent, sleeping, Host(name="unregistered", datacenter_id=dc.id)])
        session.flush()
        for state in ("queued", "queued", "running", "success"):
            session.add(Task(kind="vm.powerOn", state=state, step=state, object_type="vm", object_id=1))
        session.add(OutboxMessage(queue="host.1", task_name="agent.execute", payload={}, created_at=utcnow() - timedelta(seconds=90)))
        session.add(OutboxMessage(queue="host.1", task_name="agent.execute", payload={}, created_at=utcnow() - timedelta(seconds=500), sent_at=utcnow()))
        ids = {h.name: h.id for h in (beating, silent, sleeping)}
    link = redis.Redis.from_url(settings.redis_url)
    for host_id in ids.values():
        link.delete(heartbeat_key(host_id))
    link.set(heartbeat_key(ids["beating"]), "1", px=25_000)  # set 5 s ago, as Redis sees it
    try:
        with TestClient(app_for(settings)) as client:
            text = client.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"}).text
    finally:
        link.delete(heartbeat_key(ids["beating"]))
    assert "vcenter_state_scrape_ok 1.0" in text
    assert 'vcenter_tasks_open{kind="vm.powerOn",state="queued"} 2.0' in text
    assert 'vcenter_tasks_open{kind="vm.powerOn",state="running"} 1.0' in text
    assert 'state="success"} ' not in text.split("# HELP vcenter_tasks_open")[1].split("# HELP")[0]  # open tasks only
    assert "vcenter_outbox_pending 1.0" in text
    lag = float(text.split("\nvcenter_outbox_lag_seconds ")[1].split()[0])
    assert 90 <= lag < 150, lag
    age = float(text.split(f'vcenter_agent_heartbeat_age_seconds{{host="beating",host_id="{ids["beating"]}"}} ')[1].split()[0])
    assert 5 <= age < 15, age
    assert f'vcenter_agent_heartbeat_missing{{host="silent",host_id="{ids["silent"]}"}} 1.0' in text
    assert f'vcenter_agent_heartbeat_missing{{host="beating",host_id="{ids["beating"]}"}} 0.0' in text
    assert 'host="sleeping"' not in text and 'host="unregistered"' not in text  # standby, or no agent yet
    assert 'vcenter_db_pool_connections_in_use{database="main"}' in text
    assert 'vcenter_tasks_total{kind="vm.powerOn",state="queued"}' in text  # the commit above, counted in this process
    if shutil.which("promtool"):
        checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stdout + checked.stderr
