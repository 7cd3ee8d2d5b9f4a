"""Switches and port groups on their uplinks (issue 17 item 4), through the REST API with the
agent side played by the test: validation (4xx with stable codes, never a 500), a tagged port
group refused on a host whose agent reported no 802.1Q (at creation, at a host change, and
never sent to it), untagged port groups of a switch sharing one bridge, what the server sends
an agent, and the agent's refusals shown on the port group."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.apihelpers import app_for, login, make_admin, register_host

FACTS = {"hostname": "h", "cpu_model": "Skylake", "cpu_cores": 2, "cpu_mhz": 2000, "memory_mib": 4096, "hypervisor": "qemu"}


@pytest.fixture
def client(settings):
    make_admin(settings)
    with TestClient(app_for(settings)) as c:
        yield c


@pytest.fixture
def auth(client):
    return login(client)


@pytest.fixture
def dc(client, auth):
    return client.post("/api/v1/datacenters", json={"name": "dc1"}, headers=auth).json()


def _report(client, host, agent, vlan_8021q, nics=("eth0", "eth1"), bridges=(), errors=()):
    state = {
        "facts": {**FACTS, "hostname": host["name"], "nics": list(nics), "vlan_8021q": vlan_8021q},
        "domains": [],
        "bridges": list(bridges),
        "portgroup_errors": list(errors),
    }
    r = client.post(f"/api/v1/agent/hosts/{host['id']}/state", json=state, headers=agent)
    assert r.status_code == 200 and r.json()["accepted"], r.text
    return r.json()


def _host(client, auth, dc, name, vlan_8021q):
    host, agent = register_host(client, auth, dc["id"], name)
    _report(client, host, agent, vlan_8021q)
    return host, agent


def test_switch_crud_and_validation(client, auth, dc):
    r = client.post("/api/v1/switches", json={"name": "vSwitch0", "datacenter_id": dc["id"], "uplinks": ["eth1", "ens4"]}, headers=auth)
    assert r.status_code == 201, r.text
    sw = r.json()
    assert sw["uplinks"] == ["eth1", "ens4"] and sw["bridge"] == f"vcsw{sw['id']}"
    bad = [
        {"uplinks": []},
        {"uplinks": ["eth1", "eth1"]},
        {"uplinks": ["x" * 16]},
        {"uplinks": ["eth 1"]},
        {"uplinks": ["eth1;reboot"]},
        {"uplinks": ["../x"]},
        {"uplinks": [f"eth{i}" for i in range(9)]},
        {"uplinks": "eth1"},
    ]
    for i, extra in enumerate(bad):
        r = client.post("/api/v1/switches", json={"name": f"s{i}", "datacenter_id": dc["id"], **extra}, headers=auth)
        assert r.status_code == 422, (extra, r.status_code, r.text)
        assert r.json()["code"], r.text
    r = client.post("/api/v1/switches", json={"name": "vSwitch0", "datacenter_id": dc["id"], "uplinks": ["eth2"]}, headers=auth)
    assert r.status_code == 409, r.text
    r = client.post("/api/v1/switches", json={"name": "s9", "datacenter_id": 999999, "uplinks": ["eth2"]}, headers=auth)
    assert r.status_code == 422 and r.json()["code"] == "INVALID_REFERENCE"
    r = client.patch(f"/api/v1/switches/{sw['id']}", json={"uplinks": ["ens4"]}, headers=auth)
    assert r.status_code == 200 and r.json()["uplinks"] == ["ens4"]
    assert client.get(f"/api/v1/switches?datacenter_id={dc['id']}", headers=auth).json()["total"] == 1
    pg = client.post("/api/v1/portgroups", json={"name": "pg", "datacenter_id": dc["id"], "switch_id": sw["id"]}, headers=auth).json()
    r = client.delete(f"/api/v1/switches/{sw['id']}", headers=auth)
    assert r.status_code == 409 and r.json()["code"] == "SWITCH_IN_USE"
    assert client.delete(f"/api/v1/portgroups/{pg['id']}", headers=auth).status_code == 204
    assert client.delete(f"/api/v1/switches/{sw['id']}", headers=auth).status_code == 204
    assert client.get(f"/api/v1/switches/{sw['id']}", headers=auth).json()["code"] == "SWITCH_NOT_FOUND"


def test_port_group_validation_on_a_switch(client, auth, dc):
    sw = client.post("/api/v1/switches", json={"name": "vSwitch0", "datacenter_id": dc["id"], "uplinks": ["eth1"]}, headers=auth).json()
    other_dc = client.post("/api/v1/datacenters", json={"name": "dc2"}, headers=auth).json()
    for body, status, code in (
        ({"vlan_id": 4095}, 422, None),
        ({"vlan_id": -1}, 422, None),
        ({"switch_id": 0}, 422, None),
        ({"switch_id": 424242}, 422, "INVALID_REFERENCE"),
        ({"datacenter_id": other_dc["id"]}, 422, "INVALID_REFERENCE"),
    ):
        r = client.post("/api/v1/portgroups", json={"name": "pgx", "datacenter_id": dc["id"], "switch_id": sw["id"], **body}, headers=auth)
        assert r.status_code == status, (body, r.text)
        if code:
            assert r.json()["code"] == code
    assert client.post("/api/v1/portgroups", json={"name": "v10", "datacenter_id": dc["id"], "switch_id": sw["id"], "vlan_id": 10}, headers=auth).status_code == 201
    r = client.post("/api/v1/portgroups", json={"name": "v10b", "datacenter_id": dc["id"], "switch_id": sw["id"], "vlan_id": 10}, headers=auth)
    assert r.status_code == 409 and r.json()["code"] == "VLAN_IN_USE"


def test_tagged_port_group_refused_on_a_host_without_8021q(client, auth, dc):
    sw = client.post("/api/v1/switches", json={"name": "vSwitch0", "datacenter_id": dc["id"], "uplinks": ["eth1"]}, headers=auth).json()
    plain, plain_agent = _host(client, auth, dc, "h1", vlan_8021q=False)
    tagging, _ = _host(client, auth, dc, "h2", vlan_8021q=True)
    assert client.get(f"/api/v1/hosts/{plain['id']}", headers=auth).json()["vlan_8021q"] is False
    assert client.get(f"/api/v1/hosts/{plain['id']}", headers=auth).json()["nics"] == ["eth0", "eth1"]
    r = client.post("/api/v1/portgroups", json={"name": "v10", "datacenter_id": dc["id"], "switch_id": sw["id"], "vlan_id": 10, "host_ids": [tagging["id"], plain["id"]]}, headers=auth)
    assert r.status_code == 409 and r.json()["code"] == "VLAN_UNSUPPORTED" and r.json()["details"]["host_id"] == plain["id"]
    assert client.get("/api/v1/portgroups?name=v10", headers=auth).json()["total"] == 0  # nothing written
    pg = client.post("/api/v1/portgroups", json={"name": "v10", "datacenter_id": dc["id"], "switch_id": sw["id"], "vlan_id": 10, "host_ids": [tagging["id"]]}, headers=auth).json()
    r = client.patch(f"/api/v1/portgroups/{pg['id']}", json={"host_ids": [tagging["id"], plain["id"]]}, headers=auth)
    assert r.status_code == 409 and r.json()["code"] == "VLAN_UNSUPPORTED"
    # Untagged on the same host is fine, and so is a VLAN id of a port group without a switch (the agents' mode).
    assert client.post("/api/v1/portgroups", json={"name": "lan", "datacenter_id": dc["id"], "switch_id": sw["id"], "vlan_id": 0, "host_ids": [plain["id"]]}, headers=auth).status_code == 201
    assert client.post("/api/v1/portgroups", json={"name": "overlay", "datacenter_id": dc["id"], "vlan_id": 10, "host_ids": [plain["id"]]}, headers=auth).status_code == 201


def test_a_host_that_loses_8021q_is_sent_no_tagged_port_group_and_the_refusal_is_shown(client, auth, dc):
    sw = client.post("/api/v1/switches", json={"name": "vSwitch0", "datacenter_id": dc["id"], "uplinks": ["eth1"]}, headers=auth).json()
    host, agent = register_host(client, auth, dc["id"], "h1")  # not reported yet: its agent will judge
    pg = client.post("/api/v1/portgroups", json={"name": "v10", "datacenter_id": dc["id"], "switch_id": sw["id"], "vlan_id": 10, "host_ids": [host["id"]]}, headers=auth).json()
    answer = _report(client, host, agent, vlan_8021q=False)
    assert all(b["bridge"] != pg["bridge"] for b in answer["bridges"])
    got = client.get(f"/api/v1/portgroups/{pg['id']}", headers=auth).json()
    assert got["present_on_host_ids"] == [] and got["errors"] == [{"host_id": host["id"], "code": "VLAN_UNSUPPORTED", "message": got["errors"][0]["message"]}]
    events = client.get("/api/v1/events?kind=portgroup.host_error", headers=auth).json()["items"]
    assert len(events) == 1 and events[0]["reason"] == "VLAN_UNSUPPORTED"
    _report(client, host, agent, vlan_8021q=False)  # the same error again: no second event
    assert client.get("/api/v1/events?kind=portgroup.host_error", headers=auth).json()["total"] == 1


def test_untagged_port_groups_share_the_switch_bridge_and_agent_errors_are_shown(client, auth, dc):
    sw = client.post("/api/v1/switches", json={"name": "vSwitch0", "datacenter_id": dc["id"], "uplinks": ["ens4", "eth1"]}, headers=auth).json()
    h1, a1 = _host(client, auth, dc, "h1", vlan_8021q=True)
    h2, a2 = _host(client, auth, dc, "h2", vlan_8021q=True)
    ids = [h1["id"], h2["id"]]
    web = client.post("/api/v1/portgroups", json={"name": "web", "datacenter_id": dc["id"], "switch_id": sw["id"], "host_ids": ids}, headers=auth).json()
    db = client.post("/api/v1/portgroups", json={"name": "db", "datacenter_id": dc["id"], "switch_id": sw["id"], "host_ids": ids}, headers=auth).json()
    tagged = client.post("/api/v1/portgroups", json={"name": "v20", "datacenter_id": dc["id"], "switch_id": sw["id"], "vlan_id": 20, "host_ids": ids}, headers=auth).json()
    overlay = client.post("/api/v1/portgroups", json={"name": "seg", "datacenter_id": dc["id"], "vlan_id": 300, "host_ids": ids}, headers=auth).json()
    assert web["bridge"] == db["bridge"] == sw["bridge"] and web["switch_id"] == sw["id"]
    assert tagged["bridge"] == f"vcpg{tagged['id']}" and overlay["switch_id"] is None
    answer = _report(client, h1, a1, vlan_8021q=True)
    assert answer["bridges"][:2] == [  # the shared bridge once, then the tagged one
        {"bridge": sw["bridge"], "vlan_id": 0, "peers": [], "switch": "vSwitch0", "uplinks": ["ens4", "eth1"]},
        {"bridge": tagged["bridge"], "vlan_id": 20, "peers": [], "switch": "vSwitch0", "uplinks": ["ens4", "eth1"]},
    ]
    assert [b["bridge"] for b in answer["bridges"][2:]] == [overlay["bridge"]] and "uplinks" not in answer["bridges"][2]  # the agents' mode makes it
    # host1 made all; host2 lacks the uplink: its agent says so, by name.
    _report(client, h1, a1, True, bridges=[sw["bridge"], tagged["bridge"], overlay["bridge"]])
    missing = {"code": "UPLINK_MISSING", "message": "none of the uplink NICs ens4, eth1 exists on this host (it has eth0)"}
    _report(client, h2, a2, True, nics=["eth0"], bridges=[overlay["bridge"]], errors=[{"bridge": sw["bridge"], **missing}, {"bridge": tagged["bridge"], **missing}])
    for pg in (web, db, tagged):
        got = client.get(f"/api/v1/portgroups/{pg['id']}", headers=auth).json()
        assert got["present_on_host_ids"] == [h1["id"]] and got["errors"] == [{"host_id": h2["id"], **missing}], got
    assert client.get(f"/api/v1/portgroups/{overlay['id']}", headers=auth).json()["present_on_host_ids"] == sorted(ids)
    # Fixed on the host: the next report clears the error.
    _report(client, h2, a2, True, bridges=[sw["bridge"], tagged["bridge"], overlay["bridge"]])
    got = client.get(f"/api/v1/portgroups/{web['id']}", headers=auth).json()
    assert got["present_on_host_ids"] == sorted(ids) and got["errors"] == []


def test_bad_reports_of_nics_and_errors_are_422_not_500(client, auth, dc):
    host, agent = register_host(client, auth, dc["id"], "h1")
    for state in (
        {"facts": {**FACTS, "nics": ["eth 0"]}, "domains": []},
        {"facts": {**FACTS, "nics": ["x" * 16]}, "domains": []},
        {"facts": FACTS, "domains": [], "portgroup_errors": [{"bridge": "b" * 16, "code": "X", "message": ""}]},
        {"facts": FACTS, "domains": [], "portgroup_errors": [{"bridge": "b", "code": "not a code", "message": ""}]},
        {"facts": FACTS, "domains": [], "portgroup_errors": [{"bridge": "b", "code": "X", "message": "m" * 501}]},
    ):
        r = client.post(f"/api/v1/agent/hosts/{host['id']}/state", json=state, headers=agent)
        assert r.status_code == 422, (state, r.text)
