"""Host lifecycle through the API: registration with a one-time token and a confirmed
thumbprint, duplicate host UUIDs, reconnect reconciliation (orphaned, inaccessible, import),
forced removal of a dead host and re-adding it without losing a VM, standby."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from tests.apihelpers import agent_register, app_for, login, make_admin, register_host
from vcenter.db.models import Host
from vcenter.db.session import session_scope
from vcenter.services.orchestration.reports import mark_host_heartbeat
from workers.agent.identity import new_identity


@pytest.fixture
def ctx(settings):
    make_admin(settings)
    with TestClient(app_for(settings)) as client:
        auth = login(client)
        dc = client.post("/api/v1/datacenters", json={"name": "dc"}, headers=auth).json()
        yield client, auth, dc, settings


def _state(client, host, agent, domains, host_uuid=None):
    r = client.post(f"/api/v1/agent/hosts/{host['id']}/state", json={"facts": {"hostname": host["name"], "host_uuid": host_uuid}, "domains": domains}, headers=agent)
    assert r.status_code == 200, r.text
    return r.json()


def _dom(uuid_, name, state="poweredOn"):
    return {"uuid": uuid_, "name": name, "power_state": state, "vcpus": 1, "memory_mib": 64}


def test_registration_token_thumbprint_and_duplicate_uuid(ctx):
    client, auth, dc, settings = ctx
    r = client.post("/api/v1/agent/register/challenge", json={"registration_token": "x" * 20})
    assert r.status_code == 401 and r.json()["code"] == "BAD_REGISTRATION_TOKEN"
    r = client.post("/api/v1/agent/register", json={"registration_token": "x" * 20, "host_uuid": str(uuid.uuid4()), "hostname": "evil", "nonce": "v1.1.a.b", "certificate": "x", "signature": "x"})
    assert r.status_code == 401 and r.json()["code"] == "BAD_REGISTRATION_TOKEN"

    shared_uuid = str(uuid.uuid4())
    h1, agent1 = register_host(client, auth, dc["id"], "h1", host_uuid=shared_uuid)
    assert client.get(f"/api/v1/hosts/{h1['id']}", headers=auth).json()["trust_state"] == "trusted"
    # The token was consumed with the credential.
    again = agent_register(client, new_identity("h1"), h1["registration_token"], shared_uuid, "h1")
    assert again.status_code == 401 and again.json()["code"] == "BAD_REGISTRATION_TOKEN"

    h2 = client.post("/api/v1/hosts", json={"name": "h2", "datacenter_id": dc["id"]}, headers=auth).json()
    agent_key = new_identity("h2")
    dup = agent_register(client, agent_key, h2["registration_token"], shared_uuid, "h2")
    assert dup.status_code == 409 and dup.json()["code"] == "DUPLICATE_HOST_UUID"
    assert client.get("/api/v1/events?kind=host.registration_refused", headers=auth).json()["total"] == 1

    h2_uuid = str(uuid.uuid4())
    assert agent_register(client, agent_key, h2["registration_token"], h2_uuid, "h2").json()["trust_state"] == "awaitingConfirmation"
    wrong = client.post(f"/api/v1/hosts/{h2['id']}/confirm", json={"thumbprint": "SHA256:FF:FF:FF:FF"}, headers=auth)
    assert wrong.status_code == 409 and wrong.json()["code"] == "THUMBPRINT_MISMATCH"
    other_cert = agent_register(client, new_identity("h2"), h2["registration_token"], h2_uuid, "h2")
    assert other_cert.status_code == 409 and other_cert.json()["code"] == "THUMBPRINT_MISMATCH"
    assert agent_register(client, agent_key, h2["registration_token"], h2_uuid, "h2").json()["agent_token"] is None  # not before confirmation

    # A new registration token revokes the old credential at once.
    assert _state(client, h1, agent1, [])["accepted"]
    client.post(f"/api/v1/hosts/{h1['id']}/registration-token", headers=auth)
    r = client.post(f"/api/v1/agent/hosts/{h1['id']}/state", json={"facts": {"hostname": "h1"}, "domains": []}, headers=agent1)
    assert r.status_code == 401


def test_trust_on_first_use(ctx):
    client, auth, dc, settings = ctx
    settings.host_trust_on_first_use = True
    h = client.post("/api/v1/hosts", json={"name": "tofu", "datacenter_id": dc["id"]}, headers=auth).json()
    r = agent_register(client, new_identity("tofu"), h["registration_token"], str(uuid.uuid4()), "tofu").json()
    assert r["trust_state"] == "trusted" and r["agent_token"]


def test_reconnect_reconciles_without_deleting_anything(ctx):
    client, auth, dc, settings = ctx
    host, agent = register_host(client, auth, dc["id"], "h1")
    known = str(uuid.uuid4())
    stranger = str(uuid.uuid4())
    _state(client, host, agent, [_dom(known, "app1", "poweredOff")])
    app1 = client.get("/api/v1/vms?name=app1", headers=auth).json()["items"][0]
    assert app1["status"] == "orphaned" and app1["host_id"] == host["id"]
    assert client.post(f"/api/v1/vms/{app1['id']}/power/on", headers=auth).json()["code"] == "VM_NOT_READY"
    imported = client.post(f"/api/v1/vms/{app1['id']}/import", headers=auth).json()
    assert imported["status"] == "ready"

    # The host comes back with a stranger and without app1: nothing is deleted.
    _state(client, host, agent, [_dom(stranger, "app1")])
    app1 = client.get(f"/api/v1/vms/{app1['id']}", headers=auth).json()
    assert app1["status"] == "inaccessible"
    stranger_vm = client.get(f"/api/v1/vms?libvirt_uuid={stranger}", headers=auth).json()["items"][0]
    assert stranger_vm["status"] == "orphaned" and stranger_vm["name"] == f"app1-{stranger[:8]}"
    _state(client, host, agent, [_dom(known, "app1", "poweredOn"), _dom(stranger, "app1")])
    app1 = client.get(f"/api/v1/vms/{app1['id']}", headers=auth).json()
    assert app1["status"] == "ready" and app1["power_state"] == "poweredOn"
    kinds = {e["kind"] for e in client.get("/api/v1/events?object_type=vm&limit=100", headers=auth).json()["items"]}
    assert {"vm.discovered", "vm.imported", "vm.inaccessible", "vm.accessible", "vm.state_reconciled"} <= kinds


def test_dead_host_forced_out_and_re_added_keeps_every_vm(ctx):
    client, auth, dc, settings = ctx
    host_uuid = str(uuid.uuid4())
    host, agent = register_host(client, auth, dc["id"], "h1", host_uuid=host_uuid)
    domains = [_dom(str(uuid.uuid4()), f"vm{i}") for i in range(3)]
    _state(client, host, agent, domains, host_uuid=host_uuid)
    for vm in client.get("/api/v1/vms", headers=auth).json()["items"]:
        client.post(f"/api/v1/vms/{vm['id']}/import", headers=auth)

    r = client.delete(f"/api/v1/hosts/{host['id']}", headers=auth)
    assert r.status_code == 409 and r.json()["code"] == "HOST_HAS_VMS"
    r = client.delete(f"/api/v1/hosts/{host['id']}?force=true", headers=auth)
    assert r.status_code == 409 and r.json()["code"] == "HOST_IS_ALIVE"
    with session_scope(settings.database_url) as session:
        mark_host_heartbeat(session, session.get(Host, host["id"]), alive=False)
    assert client.get(f"/api/v1/hosts/{host['id']}", headers=auth).json()["connection_state"] == "notResponding"
    assert client.delete(f"/api/v1/hosts/{host['id']}?force=true", headers=auth).status_code == 204
    vms = client.get("/api/v1/vms", headers=auth).json()["items"]
    assert len(vms) == 3 and {v["status"] for v in vms} == {"orphaned"} and {v["host_id"] for v in vms} == {None}

    again, agent2 = register_host(client, auth, dc["id"], "h1", host_uuid=host_uuid)
    _state(client, again, agent2, domains, host_uuid=host_uuid)
    vms = client.get("/api/v1/vms", headers=auth).json()["items"]
    assert len(vms) == 3
    assert {v["status"] for v in vms} == {"ready"} and {v["host_id"] for v in vms} == {again["id"]}
    assert {v["libvirt_uuid"] for v in vms} == {d["uuid"] for d in domains}


def test_standby_is_recorded_and_refused_with_running_vms(ctx):
    client, auth, dc, settings = ctx
    host, agent = register_host(client, auth, dc["id"], "h1")
    _state(client, host, agent, [_dom(str(uuid.uuid4()), "busy1")])
    r = client.post(f"/api/v1/hosts/{host['id']}/standby/enter", headers=auth)
    assert r.status_code == 409 and r.json()["code"] == "HOST_HAS_RUNNING_VMS" and r.json()["details"]["vms"] == ["busy1"]
    vm = client.get("/api/v1/vms?name=busy1", headers=auth).json()["items"][0]
    _state(client, host, agent, [_dom(vm["libvirt_uuid"], "busy1", "poweredOff")])
    assert client.post(f"/api/v1/hosts/{host['id']}/standby/enter", headers=auth).json()["standby"] is True
    assert client.post(f"/api/v1/hosts/{host['id']}/standby/enter", headers=auth).json()["code"] == "ALREADY_IN_STANDBY"
    assert client.post(f"/api/v1/hosts/{host['id']}/standby/exit", headers=auth).json()["standby"] is False
    kinds = [e["kind"] for e in client.get(f"/api/v1/events?object_type=host&object_id={host['id']}", headers=auth).json()["items"]]
    assert "host.standby.entered" in kinds and "host.standby.exited" in kinds


def test_the_agent_release_is_shown_and_an_older_one_is_named(ctx):
    from tests.api.test_dashboard import ui_login
    from vcenter.core.release import release

    client, auth, dc, settings = ctx
    host, agent = register_host(client, auth, dc["id"], "old-agent")
    report = lambda v: client.post(f"/api/v1/agent/hosts/{host['id']}/state", json={"facts": {"hostname": "old-agent", "agent_version": v}, "domains": []}, headers=agent)  # noqa: E731
    assert client.get(f"/api/v1/hosts/{host['id']}", headers=auth).json()["agent_version"] is None
    assert report("0.0.1").status_code == 200
    read = client.get(f"/api/v1/hosts/{host['id']}", headers=auth).json()
    assert read["agent_version"] == "0.0.1" and read["agent_outdated"] is True
    events = client.get(f"/api/v1/events?object_type=host&object_id={host['id']}&kind=host.agent_version", headers=auth).json()["items"]
    assert events[0]["reason"] == "AGENT_OUTDATED" and f"older than this server's {release()}" in events[0]["message"]
    ui_login(client, "admin", "secret-pass-phrase")
    page = client.get(f"/ui/host/{host['id']}")
    assert 'id="agent-outdated"' in page.text and f"older than this server ({release()})" in page.text

    assert report(release()).status_code == 200  # upgraded
    read = client.get(f"/api/v1/hosts/{host['id']}", headers=auth).json()
    assert read["agent_version"] == release() and read["agent_outdated"] is False
    events = client.get(f"/api/v1/events?object_type=host&object_id={host['id']}&kind=host.agent_version", headers=auth).json()["items"]
    assert len(events) == 2 and events[0]["reason"] == "agent_version" and "(was 0.0.1)" in events[0]["message"]
    assert 'id="agent-outdated"' not in client.get(f"/ui/host/{host['id']}").text
    assert report(release()).status_code == 200  # the same release again: no new event
    assert client.get(f"/api/v1/events?object_type=host&object_id={host['id']}&kind=host.agent_version", headers=auth).json()["total"] == 2
    # A version longer than the contract allows is refused, not stored.
    assert report("9" * 65).status_code == 422
