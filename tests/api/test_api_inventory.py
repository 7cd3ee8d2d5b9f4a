"""The REST API on a real Redis: login, CRUD with paging/filter/sort, bad input, tasks and the
agent report routes (the agent side played by the test; test_agent_real.py runs the real one)."""

from __future__ import annotations

import base64
import json

import pytest
import redis
from fastapi.testclient import TestClient

from tests.apihelpers import app_for, login, make_admin, register_host


@pytest.fixture
def client(settings):
    make_admin(settings)
    with TestClient(app_for(settings)) as c:
        yield c


@pytest.fixture
def auth(client):
    return login(client)


def _dc(client, auth, name="dc1"):
    r = client.post("/api/v1/datacenters", json={"name": name}, headers=auth)
    assert r.status_code == 201, r.text
    return r.json()


def _connected_host(client, auth, dc_id, name="h1"):
    host, agent = register_host(client, auth, dc_id, name)
    state = {"facts": {"hostname": name, "cpu_model": "Skylake", "cpu_cores": 2, "cpu_mhz": 2000, "memory_mib": 4096, "hypervisor": "qemu"}, "domains": []}
    r = client.post(f"/api/v1/agent/hosts/{host['id']}/state", json=state, headers=agent)
    assert r.status_code == 200 and r.json()["accepted"], r.text
    return host, agent


def test_every_route_but_health_requires_login(client):
    assert client.get("/api/v1/datacenters").json()["code"] == "NOT_AUTHENTICATED"
    assert client.get("/api/v1/datacenters").status_code == 401
    assert client.get("/api/v1/datacenters", headers={"Authorization": "Bearer nope"}).status_code == 401
    r = client.post("/api/v1/session", json={"username": "admin", "password": "wrong"})
    assert r.status_code == 401 and r.json()["code"] == "BAD_CREDENTIALS"
    assert client.get("/livez").status_code == 200
    # The refused attempt is recorded although its transaction was rolled back.
    events = client.get("/api/v1/events?kind=session.login_failed", headers=login(client)).json()
    assert events["total"] == 1 and events["items"][0]["username"] == "admin"


def test_logout_revokes_the_token(client, auth):
    assert client.get("/api/v1/datacenters", headers=auth).status_code == 200
    assert client.delete("/api/v1/session", headers=auth).status_code == 204
    assert client.get("/api/v1/datacenters", headers=auth).status_code == 401


def test_health_metrics_and_local_docs(client, auth):
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "redis": "ok"}
    client.get("/livez")
    # /metrics is not anonymous (tests/api/test_security_edge.py covers the token)
    metrics = client.get("/metrics", headers=auth).text
    assert 'vcenter_http_requests_total{method="GET",route="/livez",status="200"}' in metrics
    docs = client.get("/docs").text
    assert "/static/docs/vendor/swagger-ui/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
    assert client.get("/static/docs/vendor/swagger-ui/swagger-ui-bundle.js").status_code == 200
    redoc = client.get("/redoc").text
    assert "/static/docs/vendor/redoc/redoc.standalone.js" in redoc and "cdn" not in redoc.lower()
    assert client.get("/static/docs/vendor/redoc/redoc.standalone.js").status_code == 200
    assert "/api/v1/vms/{vm_id}/power/on" in client.get("/openapi.json").json()["paths"]


def test_datacenter_crud_paging_sorting_filtering(client, auth):
    for name in ("delta", "alpha", "charlie", "bravo"):
        _dc(client, auth, name)
    r = client.get("/api/v1/datacenters?sort=name&limit=2&offset=1", headers=auth).json()
    assert r["total"] == 4 and [d["name"] for d in r["items"]] == ["bravo", "charlie"]
    r = client.get("/api/v1/datacenters?sort=-name", headers=auth).json()
    assert [d["name"] for d in r["items"]] == ["delta", "charlie", "bravo", "alpha"]
    r = client.get("/api/v1/datacenters?name=*a*ie", headers=auth).json()
    assert [d["name"] for d in r["items"]] == ["charlie"]
    bad = client.get("/api/v1/datacenters?sort=password", headers=auth)
    assert bad.status_code == 422 and bad.json()["code"] == "INVALID_SORT"
    bad = client.get("/api/v1/datacenters?colour=red", headers=auth)
    assert bad.status_code == 422 and bad.json()["code"] == "INVALID_FILTER"

    dup = client.post("/api/v1/datacenters", json={"name": "alpha"}, headers=auth)
    assert dup.status_code == 409 and dup.json()["code"] == "DUPLICATE_NAME"
    alpha = client.get("/api/v1/datacenters?name=alpha", headers=auth).json()["items"][0]
    assert alpha["created_at"].endswith(("+00:00", "Z"))
    renamed = client.patch(f"/api/v1/datacenters/{alpha['id']}", json={"name": "alpha2", "version": alpha["version"]}, headers=auth)
    assert renamed.status_code == 200 and renamed.json()["version"] == alpha["version"] + 1
    stale = client.patch(f"/api/v1/datacenters/{alpha['id']}", json={"name": "alpha3", "version": alpha["version"]}, headers=auth)
    assert stale.status_code == 409 and stale.json()["code"] == "STALE_VERSION"
    assert client.get(f"/api/v1/datacenters/{alpha['id']}", headers=auth).json()["name"] == "alpha2"
    missing = client.get("/api/v1/datacenters/999999", headers=auth)
    assert missing.status_code == 404 and missing.json()["code"] == "DATACENTER_NOT_FOUND"
    assert client.delete(f"/api/v1/datacenters/{alpha['id']}", headers=auth).status_code == 204
    assert client.get(f"/api/v1/datacenters/{alpha['id']}", headers=auth).status_code == 404


def test_list_filters_are_declared_repeatable_bounded_and_typed(client, auth):
    """Issue 18: a filter repeated matches any of its values (the last one alone was read); a
    value outside a declared set is a 422 naming the parameter (an empty 200 before); the
    number of values and their length are bounded."""
    for name in ("web1", "web2", "db1"):
        _dc(client, auth, name)
    both = client.get("/api/v1/datacenters?name=web1&name=web2&sort=name", headers=auth).json()
    assert [d["name"] for d in both["items"]] == ["web1", "web2"] and both["total"] == 2
    wild = client.get("/api/v1/datacenters?name=db*&name=web2&sort=name", headers=auth).json()
    assert [d["name"] for d in wild["items"]] == ["db1", "web2"]
    for path, field in (("/api/v1/vms?power_state=bogus", "power_state"), ("/api/v1/tasks?state=bogus", "state"), ("/api/v1/hosts?connection_state=up", "connection_state")):
        bad = client.get(path, headers=auth)
        assert bad.status_code == 422 and bad.json()["code"] == "INVALID", (path, bad.text)
        assert [d["field"] for d in bad.json()["details"]] == [f"query.{field}.0"], bad.json()
    assert client.get("/api/v1/vms?power_state=poweredOn&power_state=suspended", headers=auth).status_code == 200
    bad = client.get("/api/v1/vms?host_id=1&host_id=+2", headers=auth)  # each value by the one id parser
    assert bad.status_code == 422 and bad.json()["code"] == "INVALID_ID", bad.text
    many = "&".join(f"name=n{i}" for i in range(51))
    assert client.get(f"/api/v1/datacenters?{many}", headers=auth).status_code == 422
    assert client.get(f"/api/v1/datacenters?name={'x' * 256}", headers=auth).status_code == 422


def test_bad_input_is_422_naming_the_field_and_writes_nothing(client, auth):
    r = client.post("/api/v1/datacenters", json={"name": "a</name><devices>"}, headers=auth)
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "name"
    r = client.post("/api/v1/datacenters", json={"name": "ok", "colour": "red"}, headers=auth)
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "colour"
    r = client.post("/api/v1/clusters", json={"name": "c1", "datacenter_id": 4242}, headers=auth)
    assert r.status_code == 422 and r.json()["code"] == "INVALID_REFERENCE" and r.json()["details"]["field"] == "datacenter_id"
    r = client.post("/api/v1/datastores", json={"name": "ds", "datacenter_id": 1, "url": "/srv/../etc"}, headers=auth)
    assert r.status_code == 422
    r = client.post("/api/v1/datacenters", content=b"{not json", headers={**auth, "content-type": "application/json"})
    assert r.status_code == 422
    assert client.get("/api/v1/datacenters", headers=auth).json()["total"] == 0
    assert client.get("/api/v1/clusters", headers=auth).json()["total"] == 0


def test_inventory_objects_and_delete_refusals(client, auth):
    dc = _dc(client, auth)
    cluster = client.post("/api/v1/clusters", json={"name": "c1", "datacenter_id": dc["id"], "settings": {"drs": {"enabled": True}}}, headers=auth).json()
    assert cluster["settings"]["schema"] == 1 and cluster["settings"]["drs"] == {"enabled": True}
    pools = client.get(f"/api/v1/pools?cluster_id={cluster['id']}", headers=auth).json()["items"]
    assert [p["name"] for p in pools] == ["Resources"]
    child = client.post("/api/v1/pools", json={"name": "gold", "cluster_id": cluster["id"], "memory_reservation_mib": 512}, headers=auth).json()
    assert child["parent_id"] == pools[0]["id"]
    host = client.post("/api/v1/hosts", json={"name": "h1", "datacenter_id": dc["id"], "cluster_id": cluster["id"]}, headers=auth).json()
    assert host["connection_state"] == "disconnected" and host["trust_state"] == "awaitingAgent" and len(host["registration_token"]) > 20
    assert "registration_token" not in client.get(f"/api/v1/hosts/{host['id']}", headers=auth).json()
    ds = client.post("/api/v1/datastores", json={"name": "ds1", "datacenter_id": dc["id"], "url": "/srv/ds1", "host_ids": [host["id"]]}, headers=auth).json()
    assert ds["host_ids"] == [host["id"]]
    pg = client.post("/api/v1/portgroups", json={"name": "vlan10", "datacenter_id": dc["id"], "vlan_id": 10, "host_ids": [host["id"]]}, headers=auth).json()
    assert pg["bridge"] == f"vcpg{pg['id']}" and pg["present_on_host_ids"] == []
    r = client.post("/api/v1/portgroups", json={"name": "bad", "datacenter_id": dc["id"], "vlan_id": 5000}, headers=auth)
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "vlan_id"
    folder = client.post("/api/v1/folders", json={"name": "web", "datacenter_id": dc["id"]}, headers=auth).json()
    assert folder["kind"] == "vm"

    r = client.delete(f"/api/v1/clusters/{cluster['id']}", headers=auth)
    assert r.status_code == 409 and r.json()["code"] == "CLUSTER_NOT_EMPTY"
    r = client.delete(f"/api/v1/datacenters/{dc['id']}", headers=auth)
    assert r.status_code == 409 and r.json()["code"] == "DATACENTER_NOT_EMPTY"
    events = client.get("/api/v1/events?kind=host.added", headers=auth).json()["items"]
    assert events[0]["username"] == "admin" and events[0]["object_id"] == host["id"]


def test_vm_task_pipeline_with_the_agent_played_by_the_test(client, auth, settings):
    dc = _dc(client, auth)
    host, agent = _connected_host(client, auth, dc["id"])
    assert client.get(f"/api/v1/hosts/{host['id']}", headers=auth).json()["connection_state"] == "connected"
    # Another host's token cannot report for this host.
    other, _ = _connected_host(client, auth, dc["id"], name="h2")
    r = client.post(f"/api/v1/agent/hosts/{other['id']}/state", json={"facts": {"hostname": "x"}, "domains": []}, headers=agent)
    assert r.status_code == 401 and r.json()["code"] == "BAD_AGENT_CREDENTIAL"

    broker = redis.Redis.from_url(settings.redis_url)
    queue = f"host.{host['id']}"
    broker.delete(queue)
    task = client.post("/api/v1/vms", json={"name": "web1", "host_id": host["id"], "memory_mib": 64}, headers=auth)
    assert task.status_code == 202, task.text
    # A 202 names the Task's own URL (issue 18): where to poll it.
    assert task.headers["location"] == f"/api/v1/tasks/{task.json()['id']}"
    assert client.get(task.headers["location"], headers=auth).json()["id"] == task.json()["id"]
    task = task.json()
    assert task["state"] == "queued" and task["kind"] == "vm.create"
    # The outbox relayed the command to the host's own queue after the commit.
    messages = broker.lrange(queue, 0, -1)
    assert len(messages) == 1
    body = json.loads(base64.b64decode(json.loads(messages[0])["body"]))
    # It travels signed by the server, for this host only (vcenter.messaging.signing).
    from vcenter.messaging.signing import CommandSigner, CommandVerifier

    command = CommandVerifier(CommandSigner.from_settings(settings).public_key, host["id"]).open(body[0][0]).model_dump(mode="json")
    assert command["name"] == "vm.create" and command["host_id"] == host["id"] and command["task_id"] == task["id"]

    vm = client.get("/api/v1/vms?name=web1", headers=auth).json()["items"][0]
    assert vm["status"] == "creating"
    busy = client.post(f"/api/v1/vms/{vm['id']}/power/on", headers=auth)
    assert busy.status_code == 409 and busy.json()["code"] == "OBJECT_BUSY"

    progress = client.post(f"/api/v1/agent/hosts/{host['id']}/tasks/{task['id']}/progress", json={"command_id": command["command_id"], "step": "vm.create", "progress": 5}, headers=agent)
    assert progress.json() == {"proceed": True}
    running = client.get(f"/api/v1/tasks/{task['id']}", headers=auth).json()
    assert running["state"] == "running"
    domain = {"uuid": vm["libvirt_uuid"], "name": "web1", "power_state": "poweredOff", "vcpus": 1, "memory_mib": 64}
    stale = client.post(f"/api/v1/agent/hosts/{host['id']}/tasks/{task['id']}/result", json={"command_id": "other", "ok": False, "error_code": "X"}, headers=agent)
    assert stale.json() == {"applied": False}
    done = client.post(f"/api/v1/agent/hosts/{host['id']}/tasks/{task['id']}/result", json={"command_id": command["command_id"], "ok": True, "domain": domain}, headers=agent)
    assert done.json() == {"applied": True}
    again = client.post(f"/api/v1/agent/hosts/{host['id']}/tasks/{task['id']}/result", json={"command_id": command["command_id"], "ok": True, "domain": domain}, headers=agent)
    assert again.json() == {"applied": False}
    finished = client.get(f"/api/v1/tasks/{task['id']}", headers=auth).json()
    assert finished["state"] == "success" and finished["progress"] == 100
    assert client.get(f"/api/v1/vms/{vm['id']}", headers=auth).json()["status"] == "ready"

    # Power actions: vCenter's rules, one task at a time.
    r = client.post(f"/api/v1/vms/{vm['id']}/power/off", headers=auth)
    assert r.status_code == 409 and r.json()["code"] == "ALREADY_POWERED_OFF"
    on = client.post(f"/api/v1/vms/{vm['id']}/power/on", headers=auth)
    assert on.status_code == 202
    for action in ("on", "off", "suspend"):  # busy wins over any state judgement
        r = client.post(f"/api/v1/vms/{vm['id']}/power/{action}", headers=auth)
        assert r.status_code == 409 and r.json()["code"] == "OBJECT_BUSY", action
    r = client.post(f"/api/v1/vms/{vm['id']}/reconfigure", json={"vcpus": 0}, headers=auth)
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "vcpus"
    cancelled = client.post(f"/api/v1/tasks/{on.json()['id']}/cancel", headers=auth).json()
    assert cancelled["state"] == "cancelled"
    # The claim was released with the cancelled task.
    assert client.post(f"/api/v1/vms/{vm['id']}/power/on", headers=auth).status_code == 202

    # A lifecycle event from libvirt changes the VM with its reason.
    r = client.post(
        f"/api/v1/agent/hosts/{host['id']}/events",
        headers=agent,
        json=[{"uuid": vm["libvirt_uuid"], "name": "web1", "event": "stopped", "reason": "crashed", "power_state": "poweredOff", "at": "2026-01-01T00:00:00Z"}],
    )
    assert r.json() == {"applied": 1}
    events = client.get(f"/api/v1/events?object_type=vm&object_id={vm['id']}&kind=vm.stopped", headers=auth).json()["items"]
    assert events[0]["reason"] == "crashed"
    r = client.delete(f"/api/v1/hosts/{host['id']}", headers=auth)
    assert r.status_code == 409 and r.json()["code"] == "HOST_HAS_VMS"
