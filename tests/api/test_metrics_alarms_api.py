"""Performance statistics and alarms through the API and the beat services, on SQLite and
PostgreSQL: agent samples in, series out, rollups, retention; an alarm's lifecycle (trigger,
webhook delivered to a local HTTP server with a retry, acknowledge, clear, reset) and the
built-in "Host not responding" alarm. Agents are played by the test; the lab test
(test_lab_metrics_alarms.py) shows real samples from real hosts."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.apihelpers import app_for, finish_as_agent, login, make_admin, register_host
from vcenter.db.models import Host, MetricSample
from vcenter.db.session import session_scope
from vcenter.domain.metrics import bucket_start
from vcenter.messaging.contracts import MetricsReport, VmMetrics
from vcenter.services.monitoring import alarms, metrics
from vcenter.services.orchestration.reports import mark_host_heartbeat
from vcenter.services.tasks.runtime import Runtime


@pytest.fixture
def env(settings):
    # The test's webhook receiver listens on loopback, which webhooks may reach only when allowed.
    settings = settings.model_copy(update={"alarm_webhook_retry_delay": 5.0, "alarm_webhook_attempts": 3, "alarm_vm_heartbeat_timeout": 30.0, "alarm_webhook_allowed_networks": "127.0.0.1/32"})
    make_admin(settings)
    with TestClient(app_for(settings)) as client:
        auth = login(client)
        dc = client.post("/api/v1/datacenters", json={"name": "dc"}, headers=auth).json()
        cl = client.post("/api/v1/clusters", json={"name": "cl", "datacenter_id": dc["id"]}, headers=auth).json()
        h1, agent1 = register_host(client, auth, dc["id"], "h1", cluster_id=cl["id"])
        h2, agent2 = register_host(client, auth, dc["id"], "h2")  # outside the cluster
        for host, agent in ((h1, agent1), (h2, agent2)):
            r = client.post(f"/api/v1/agent/hosts/{host['id']}/state", headers=agent, json={"facts": {"hostname": host["name"], "cpu_cores": 4, "cpu_mhz": 2000, "memory_mib": 4096}, "domains": []})
            assert r.json()["accepted"], r.text
        task = client.post("/api/v1/vms", headers=auth, json={"name": "vm1", "host_id": h1["id"], "memory_mib": 128}).json()
        vm = finish_as_agent(client, settings, agent1, task)
        yield {"client": client, "auth": auth, "settings": settings, "dc": dc, "cl": cl, "h1": h1, "h2": h2, "agent1": agent1, "agent2": agent2, "vm": vm}


def _ingest(settings, host_id: int, at: datetime, host_values: dict, vms: list[VmMetrics] | None = None) -> None:
    with session_scope(settings.database_url) as session:
        metrics.ingest(session, session.get(Host, host_id), MetricsReport(interval_s=20, host=host_values, vms=vms or []), now=at)


def test_agent_sample_in_series_out_and_bad_requests(env):
    client, auth, h1, vm = env["client"], env["auth"], env["h1"], env["vm"]
    sample = {
        "interval_s": 20.0,
        "host": {"cpu.usage": 37.5, "mem.usage": 61.0, "net.rx": 1200.0, "bogus.counter": 1.0},
        "vms": [{"uuid": vm["libvirt_uuid"], "values": {"cpu.usage": 12.5, "disk.write": 4096.0}}, {"uuid": "00000000-0000-0000-0000-000000000000", "values": {"cpu.usage": 99.0}}],
    }
    r = client.post(f"/api/v1/agent/hosts/{h1['id']}/metrics", headers=env["agent1"], json=sample)
    assert r.status_code == 200 and r.json() == {"stored": 2}, r.text
    # A host reports only for itself.
    assert client.post(f"/api/v1/agent/hosts/{h1['id']}/metrics", headers=env["agent2"], json=sample).status_code == 401
    r = client.get(f"/api/v1/metrics/host/{h1['id']}", headers=auth, params=[("counter", "cpu.usage"), ("counter", "net.rx"), ("counter", "disk.read")])
    assert r.status_code == 200, r.text
    series = r.json()
    assert series["tier"] == "realtime" and series["interval_s"] == env["settings"].metrics_sample_period
    by_counter = {s["counter"]: s for s in series["series"]}
    assert [(p["avg"], p["min"], p["max"], p["samples"]) for p in by_counter["cpu.usage"]["points"]] == [(37.5, 37.5, 37.5, 1)]
    assert by_counter["cpu.usage"]["unit"] == "percent" and by_counter["net.rx"]["points"][0]["avg"] == 1200.0
    assert by_counter["disk.read"]["points"] == []
    vm_series = client.get(f"/api/v1/metrics/vm/{vm['id']}", headers=auth, params={"counter": "disk.write"}).json()
    assert vm_series["series"][0]["points"][0]["avg"] == 4096.0
    catalogue = client.get("/api/v1/metrics/counters", headers=auth).json()
    assert {"cpu.usage", "mem.usage", "disk.read", "disk.write", "net.rx", "net.tx"} <= {c["name"] for c in catalogue["counters"]}
    assert [t["name"] for t in catalogue["tiers"]] == ["realtime", "day", "week", "month", "year"]
    for params, status, code in (
        ({"counter": "cpu.bogus"}, 422, "UNKNOWN_COUNTER"),
        ({"tier": "decade"}, 422, "UNKNOWN_TIER"),
        ({"start": "yesterday"}, 422, "INVALID_TIME"),
        ({"start": "1e300"}, 422, "INVALID_TIME"),
        ({"end": "nan"}, 422, "INVALID_TIME"),
        ({"start": "2030-01-02T00:00:00Z", "end": "2030-01-01T00:00:00Z"}, 422, "INVALID_TIME"),
    ):
        r = client.get(f"/api/v1/metrics/host/{h1['id']}", headers=auth, params=params)
        assert (r.status_code, r.json()["code"]) == (status, code), (params, r.text)
    # A cluster's series from its hosts' (h1 only: h2 is outside the cluster).
    cluster = client.get(f"/api/v1/metrics/cluster/{env['cl']['id']}", headers=auth, params=[("counter", "cpu.usage"), ("counter", "net.rx")]).json()
    assert [(s["counter"], [(p["avg"], p["samples"]) for p in s["points"]]) for s in cluster["series"]] == [("cpu.usage", [(37.5, 1)]), ("net.rx", [(1200.0, 1)])]
    assert client.get("/api/v1/metrics/host/99999", headers=auth).status_code == 404
    r = client.get("/api/v1/metrics/portgroup/1", headers=auth)
    assert (r.status_code, r.json()["code"]) == (404, "UNKNOWN_OBJECT_TYPE")
    assert client.get(f"/api/v1/metrics/host/{h1['id']}").status_code == 401
    # A report sent again for the same instant (an agent's retry) stores nothing twice.
    at = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=30)
    report = MetricsReport(interval_s=20, host={"cpu.usage": 1.0}, vms=[VmMetrics(uuid=vm["libvirt_uuid"], values={"cpu.usage": 2.0})])
    with session_scope(env["settings"].database_url) as session:
        assert metrics.ingest(session, session.get(Host, h1["id"]), report, now=at) == {"stored": 2}
    with session_scope(env["settings"].database_url) as session:
        assert metrics.ingest(session, session.get(Host, h1["id"]), report, now=at) == {"stored": 0}
        assert session.query(MetricSample).filter_by(tier=0, at=at).count() == 2


def test_rollups_tiers_and_retention(env):
    client, auth, settings, h1 = env["client"], env["auth"], env["settings"], env["h1"]
    now = datetime.now(timezone.utc).replace(microsecond=0)
    t0 = datetime.fromtimestamp(bucket_start((now - timedelta(minutes=50)).timestamp(), 300), tz=timezone.utc)
    values = []
    for i in range(90):  # 30 minutes of 20 s samples
        value = float((i % 10) * 10)
        values.append(value)
        _ingest(settings, h1["id"], t0 + timedelta(seconds=20 * i), {"cpu.usage": value, "mem.usage": 50.0})
    with session_scope(settings.database_url) as session:
        done = metrics.rollup(session, settings, now=now)
    assert done["day"] == 6  # six complete 5-minute buckets of one host
    with session_scope(settings.database_url) as session:
        again = metrics.rollup(session, settings, now=now)
    assert again.get("day", 0) == 0  # the watermark: nothing rolled twice
    day = client.get(f"/api/v1/metrics/host/{h1['id']}", headers=auth, params={"tier": "day", "start": (t0 - timedelta(seconds=1)).isoformat()}).json()
    points = day["series"][0]["points"]
    assert len(points) == 6 and day["interval_s"] == 300.0
    for k, point in enumerate(points):
        chunk = values[15 * k : 15 * k + 15]
        assert datetime.fromisoformat(point["at"].replace("Z", "+00:00")) == t0 + timedelta(seconds=300 * k)
        assert (point["avg"], point["min"], point["max"], point["samples"]) == (round(sum(chunk) / 15, 4), min(chunk), max(chunk), 15)
    # No tier given: the range decides (two hours back is past real-time's hour).
    auto = client.get(f"/api/v1/metrics/host/{h1['id']}", headers=auth, params={"start": (now - timedelta(hours=2)).isoformat()}).json()
    assert auto["tier"] == "day" and len(auto["series"][0]["points"]) == 6
    assert client.get(f"/api/v1/metrics/host/{h1['id']}", headers=auth).json()["tier"] == "realtime"
    # A week bucket (30 min) built from the day tier weighs by samples: equal to the samples' own average.
    with session_scope(settings.database_url) as session:
        later = metrics.rollup(session, settings, now=t0 + timedelta(minutes=95))
        week_rows = session.query(MetricSample).filter_by(tier=2, object_id=h1["id"]).all()
    assert later.get("day", 0) == 0
    for row in week_rows:
        start = row.at
        covered = [v for i, v in enumerate(values) if start <= t0 + timedelta(seconds=20 * i) < start + timedelta(minutes=30)]
        assert row.values["cpu.usage"][3] == len(covered) and abs(row.values["cpu.usage"][0] - sum(covered) / len(covered)) < 1e-3
    # Retention: two hours on, the real-time samples are gone, the 5-minute ones stay.
    with session_scope(settings.database_url) as session:
        removed = metrics.purge(session, settings, now=now + timedelta(hours=2))
    assert removed["realtime"] == 90 and "day" not in removed
    realtime = client.get(f"/api/v1/metrics/host/{h1['id']}", headers=auth, params={"tier": "realtime", "start": t0.isoformat()}).json()
    assert realtime["series"][0]["points"] == []
    assert len(client.get(f"/api/v1/metrics/host/{h1['id']}", headers=auth, params={"tier": "day", "start": t0.isoformat()}).json()["series"][0]["points"]) == 6


class _Hooks(BaseHTTPRequestHandler):
    received: list[dict] = []
    fail_first = 1

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        cls = type(self)
        cls.received.append(body)
        status = 500 if len(cls.received) <= cls.fail_first else 204
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def hook_server():
    _Hooks.received = []
    server = HTTPServer(("127.0.0.1", 0), _Hooks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", _Hooks.received
    server.shutdown()
    server.server_close()


def test_a_webhook_never_reaches_what_only_the_server_reaches(env, hook_server):
    """A user who may define alarms must not make the server POST to its own loopback services
    or to a cloud metadata endpoint (server-side request forgery)."""
    from vcenter.db.models import AlarmWebhook, Event

    url, received = hook_server
    port = url.split(":")[2].split("/")[0]
    strict = env["settings"].model_copy(update={"alarm_webhook_allowed_networks": ""})
    targets = [url, f"http://localhost:{port}/hook", f"http://[::ffff:127.0.0.1]:{port}/hook", "http://169.254.169.254/latest/meta-data/", "http://0.0.0.0:9/"]
    with session_scope(strict.database_url) as session:
        for target in targets:
            session.add(AlarmWebhook(url=target, payload={"probe": True}))
    counts = alarms.deliver_webhooks(Runtime.build(strict).transaction, strict)
    assert counts == {"delivered": 0, "failed": len(targets), "retrying": 0} and received == []
    with session_scope(strict.database_url) as session:
        errors = [h.last_error for h in session.scalars(select(AlarmWebhook).order_by(AlarmWebhook.id))]
        assert all(e.startswith("WEBHOOK_ADDRESS_REFUSED") for e in errors), errors
        assert session.scalar(select(func.count()).select_from(Event).where(Event.kind == "alarm.webhook_failed")) == len(targets)


def test_metric_alarm_lifecycle_with_webhook(env, hook_server):
    client, auth, settings, h1, h2, cl = env["client"], env["auth"], env["settings"], env["h1"], env["h2"], env["cl"]
    url, received = hook_server
    body = {
        "name": "cpu hot",
        "target_type": "host",
        "scope_type": "cluster",
        "scope_id": cl["id"],
        "expression": {"type": "metric", "counter": "cpu.usage", "operator": "above", "warning": 50, "critical": 80, "for_s": 40},
        "actions": [{"type": "event"}, {"type": "webhook", "url": url}],
    }
    for bad, field in (
        ({"actions": [{"type": "webhook", "url": "ftp://x/"}]}, "actions.url"),
        ({"expression": {"type": "metric", "counter": "cpu.nope", "warning": 1}}, "expression.counter"),
        ({"target_type": "datastore"}, "expression.counter"),
        ({"scope_type": "datastore"}, "scope_type"),
    ):
        r = client.post("/api/v1/alarms", headers=auth, json={**body, **bad})
        assert (r.status_code, r.json()["code"], r.json()["details"]["field"]) == (422, "INVALID_ALARM", field), r.text
    assert client.post("/api/v1/alarms", headers=auth, json={**body, "scope_id": 4242}).status_code == 404
    # Alarm.Create is checked on the scope object: held on h2 only, not enough for the cluster.
    uid = client.post("/api/v1/users", headers=auth, json={"username": "alarmist", "password": "alarmist-password"}).json()["id"]
    role = client.post("/api/v1/roles", headers=auth, json={"name": "alarms", "privileges": ["System.View", "Alarm.Create"]}).json()["id"]
    assert (
        client.post(
            "/api/v1/permissions", headers=auth, json={"principal_type": "user", "principal_id": uid, "role_id": role, "object_type": "host", "object_id": h2["id"], "propagate": True}
        ).status_code
        == 201
    )
    alarmist = login(client, "alarmist", "alarmist-password")
    assert client.post("/api/v1/alarms", headers=alarmist, json=body).status_code == 403
    mine = client.post("/api/v1/alarms", headers=alarmist, json={**body, "name": "h2 cpu", "scope_type": "host", "scope_id": h2["id"]})
    assert mine.status_code == 201, mine.text
    assert client.patch(f"/api/v1/alarms/{mine.json()['id']}", headers=alarmist, json={"scope_type": "cluster", "scope_id": cl["id"]}).status_code == 403
    assert client.delete(f"/api/v1/alarms/{mine.json()['id']}", headers=alarmist).status_code == 204
    created = client.post("/api/v1/alarms", headers=auth, json=body)
    assert created.status_code == 201, created.text
    alarm = created.json()
    assert client.post("/api/v1/alarms", headers=auth, json=body).json()["code"] == "ALARM_NAME_TAKEN"

    now = datetime.now(timezone.utc).replace(microsecond=0)
    for host in (h1, h2):  # both hot; only h1 is under the cluster the alarm is set on
        for seconds in (60, 40, 20, 0):
            _ingest(settings, host["id"], now - timedelta(seconds=seconds), {"cpu.usage": 93.0})
    with session_scope(settings.database_url) as session:
        assert alarms.evaluate(session, settings, now=now)["transitions"] == 1
    mine = [t for t in client.get("/api/v1/alarms/triggered", headers=auth).json() if t["alarm_id"] == alarm["id"]]
    assert [(t["object_type"], t["object_id"], t["status"], t["value"], t["acknowledged"]) for t in mine] == [("host", h1["id"], "critical", 93.0, False)]
    state_id = mine[0]["id"]
    below_cluster = client.get("/api/v1/alarms/triggered", headers=auth, params={"object_type": "cluster", "object_id": cl["id"], "descendants": "true"}).json()
    assert state_id in {t["id"] for t in below_cluster}
    assert client.get("/api/v1/alarms/triggered", headers=auth, params={"object_type": "cluster", "object_id": cl["id"]}).json() == []
    assert client.get("/api/v1/alarms/triggered", headers=auth, params={"object_type": "host", "object_id": h2["id"]}).json() == []

    # The webhook: refused once (HTTP 500), retried after its delay, then delivered.
    runtime = Runtime.build(settings)
    # Out of time before sending anything: the attempt is given back, nothing is lost.
    assert alarms.deliver_webhooks(runtime.transaction, settings, now=lambda: now, budget_s=-1) == {"delivered": 0, "failed": 0, "retrying": 0}
    assert received == []
    first = alarms.deliver_webhooks(runtime.transaction, settings, now=lambda: now)
    assert first == {"delivered": 0, "failed": 0, "retrying": 1}
    assert alarms.deliver_webhooks(runtime.transaction, settings, now=lambda: now + timedelta(seconds=1))["retrying"] == 0  # not due yet
    second = alarms.deliver_webhooks(runtime.transaction, settings, now=lambda: now + timedelta(seconds=11))
    assert second["delivered"] == 1 and len(received) == 2
    assert received[-1]["alarm"]["name"] == "cpu hot" and (received[-1]["from"], received[-1]["to"]) == ("ok", "critical")
    assert received[-1]["object"] == {"type": "host", "id": h1["id"], "name": "h1"}

    # Acknowledge: a read-only user may see but not acknowledge.
    user_id = client.post("/api/v1/users", headers=auth, json={"username": "viewer", "password": "viewer-password"}).json()["id"]
    read_only = next(r["id"] for r in client.get("/api/v1/roles", headers=auth).json() if r["name"] == "Read-only")
    granted = client.post("/api/v1/permissions", headers=auth, json={"principal_type": "user", "principal_id": user_id, "role_id": read_only, "object_type": "root", "object_id": 0, "propagate": True})
    assert granted.status_code == 201, granted.text
    viewer = login(client, "viewer", "viewer-password")
    # Only the triggered alarms of objects the caller may see: Read-only on h2 hides h1's, on
    # h1's cluster shows it.
    for name, (kind, oid), sees in (("narrow", ("host", h2["id"]), False), ("wide", ("cluster", cl["id"]), True)):
        uid = client.post("/api/v1/users", headers=auth, json={"username": name, "password": f"{name}-password"}).json()["id"]
        assert (
            client.post(
                "/api/v1/permissions", headers=auth, json={"principal_type": "user", "principal_id": uid, "role_id": read_only, "object_type": kind, "object_id": oid, "propagate": True}
            ).status_code
            == 201
        )
        listed = client.get("/api/v1/alarms/triggered", headers=login(client, name, f"{name}-password"))
        assert listed.status_code == 200 and (state_id in {t["id"] for t in listed.json()}) == sees, (name, listed.text)
    assert client.get("/api/v1/alarms/triggered", headers=viewer).status_code == 200
    assert client.post(f"/api/v1/alarms/triggered/{state_id}/acknowledge", headers=viewer).status_code == 403
    acked = client.post(f"/api/v1/alarms/triggered/{state_id}/acknowledge", headers=auth).json()
    assert acked["acknowledged"] and acked["acknowledged_by"] == "admin" and acked["status"] == "critical"
    # Still hot: no transition, no new webhook.
    _ingest(settings, h1["id"], now + timedelta(seconds=20), {"cpu.usage": 95.0})
    with session_scope(settings.database_url) as session:
        assert alarms.evaluate(session, settings, now=now + timedelta(seconds=20))["transitions"] == 0
    # Cooled down: cleared (green), the acknowledgement with it; a webhook for the clear.
    for seconds in (40, 60):
        _ingest(settings, h1["id"], now + timedelta(seconds=seconds), {"cpu.usage": 10.0})
    with session_scope(settings.database_url) as session:
        assert alarms.evaluate(session, settings, now=now + timedelta(seconds=60))["transitions"] == 1
    assert [t for t in client.get("/api/v1/alarms/triggered", headers=auth).json() if t["alarm_id"] == alarm["id"]] == []
    assert alarms.deliver_webhooks(runtime.transaction, settings, now=lambda: now + timedelta(seconds=61))["delivered"] == 1
    assert (received[-1]["from"], received[-1]["to"]) == ("critical", "ok")
    r = client.post(f"/api/v1/alarms/triggered/{state_id}/acknowledge", headers=auth)
    assert (r.status_code, r.json()["code"]) == (409, "ALARM_NOT_TRIGGERED")
    kinds = [e["kind"] for e in client.get("/api/v1/events", headers=auth, params={"limit": 200}).json()["items"]]
    assert {"alarm.created", "alarm.triggered", "alarm.acknowledged", "alarm.cleared"} <= set(kinds)


def test_state_alarms_host_not_responding_reset_and_datastore_usage(env):
    client, auth, settings, h1 = env["client"], env["auth"], env["settings"], env["h1"]
    builtin = {a["name"]: a for a in client.get("/api/v1/alarms", headers=auth).json()}
    assert {"Host not responding", "VM heartbeat lost", "Datastore usage"} <= set(builtin) and builtin["Host not responding"]["builtin"]
    with session_scope(settings.database_url) as session:
        host = session.get(Host, h1["id"])
        host.connection_state = "connected"
        mark_host_heartbeat(session, host, alive=False)
    with session_scope(settings.database_url) as session:
        alarms.evaluate(session, settings)
    hit = [t for t in client.get("/api/v1/alarms/triggered", headers=auth, params={"object_type": "host", "object_id": h1["id"]}).json() if t["alarm_name"] == "Host not responding"]
    assert len(hit) == 1 and hit[0]["status"] == "critical"
    # Reset to green by hand: the condition still holds, so the next evaluation triggers it again.
    reset = client.post(f"/api/v1/alarms/triggered/{hit[0]['id']}/reset", headers=auth).json()
    assert reset["status"] == "ok"
    with session_scope(settings.database_url) as session:
        alarms.evaluate(session, settings)
    again = [t for t in client.get("/api/v1/alarms/triggered", headers=auth).json() if t["alarm_name"] == "Host not responding"]
    assert [t["status"] for t in again] == ["critical"]
    # Heartbeats back: green.
    with session_scope(settings.database_url) as session:
        mark_host_heartbeat(session, session.get(Host, h1["id"]), alive=True)
        alarms.evaluate(session, settings)
    assert not [t for t in client.get("/api/v1/alarms/triggered", headers=auth).json() if t["alarm_name"] == "Host not responding"]
    # A running VM whose guest heartbeat went quiet: "VM heartbeat lost"; gone with the VM.
    from vcenter.db.models import VirtualMachine

    with session_scope(settings.database_url) as session:
        row = session.get(VirtualMachine, env["vm"]["id"])
        row.power_state, row.guest_heartbeat_at = "poweredOn", datetime.now(timezone.utc) - timedelta(seconds=120)
    with session_scope(settings.database_url) as session:
        alarms.evaluate(session, settings)
    lost = [
        t for t in client.get("/api/v1/alarms/triggered", headers=auth, params={"object_type": "host", "object_id": h1["id"], "descendants": "true"}).json() if t["alarm_name"] == "VM heartbeat lost"
    ]
    assert [(t["object_id"], t["status"]) for t in lost] == [(env["vm"]["id"], "warning")] and lost[0]["value"] >= 120
    with session_scope(settings.database_url) as session:
        session.delete(session.get(VirtualMachine, env["vm"]["id"]))
    with session_scope(settings.database_url) as session:
        alarms.evaluate(session, settings)
    assert not [t for t in client.get("/api/v1/alarms/triggered", headers=auth).json() if t["alarm_name"] == "VM heartbeat lost"]
    # Datastore usage from the agents' reports: 95 % used -> critical.
    ds = client.post("/api/v1/datastores", headers=auth, json={"name": "ds1", "datacenter_id": env["dc"]["id"], "url": "/srv/ds1"}).json()
    client.patch(f"/api/v1/datastores/{ds['id']}", headers=auth, json={"version": ds["version"]})
    from vcenter.db.models import Datastore

    with session_scope(settings.database_url) as session:
        row = session.get(Datastore, ds["id"])
        row.capacity_bytes, row.free_bytes = 100 * 2**30, 5 * 2**30
    with session_scope(settings.database_url) as session:
        alarms.evaluate(session, settings)
    usage = [
        t
        for t in client.get("/api/v1/alarms/triggered", headers=auth, params={"object_type": "datacenter", "object_id": env["dc"]["id"], "descendants": "true"}).json()
        if t["alarm_name"] == "Datastore usage"
    ]
    assert [(t["object_id"], t["status"], t["value"]) for t in usage] == [(ds["id"], "critical", 95.0)]
    # Disabling a definition clears what it triggered.
    definition = builtin["Datastore usage"]
    r = client.patch(f"/api/v1/alarms/{definition['id']}", headers=auth, json={"enabled": False, "version": definition["version"]})
    assert r.status_code == 200 and not r.json()["enabled"]
    assert not [t for t in client.get("/api/v1/alarms/triggered", headers=auth).json() if t["alarm_name"] == "Datastore usage"]
