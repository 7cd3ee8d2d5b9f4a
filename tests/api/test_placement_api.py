"""The placement engine through the API: deploy without a host, power-on admission with every
host's reason, must rules kept, contradictory rules refused, pool reservations enforced,
dry run and entitlements. Agents are played by the test (the engine needs no libvirt)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.apihelpers import app_for, finish_as_agent, login, make_admin, register_host


@pytest.fixture
def env(settings):
    make_admin(settings)
    with TestClient(app_for(settings)) as client:
        auth = login(client)
        dc = client.post("/api/v1/datacenters", json={"name": "dc"}, headers=auth).json()
        cl = client.post("/api/v1/clusters", json={"name": "cl", "datacenter_id": dc["id"]}, headers=auth).json()
        hosts, agents = [], {}
        for name in ("h1", "h2", "h3"):
            host, agent = register_host(client, auth, dc["id"], name, cluster_id=cl["id"])
            r = client.post(f"/api/v1/agent/hosts/{host['id']}/state", headers=agent, json={"facts": {"hostname": name, "cpu_cores": 2, "cpu_mhz": 2000, "memory_mib": 1024}, "domains": []})
            assert r.json()["accepted"]
            hosts.append(host)
            agents[host["id"]] = agent
        yield client, auth, cl, hosts, agents, settings


def _report(client, agent, host, vms_on_host):
    domains = [{"uuid": v["libvirt_uuid"], "name": v["name"], "power_state": state} for v, state in vms_on_host]
    r = client.post(f"/api/v1/agent/hosts/{host['id']}/state", headers=agent, json={"facts": {"hostname": host["name"]}, "domains": domains})
    assert r.json()["accepted"]


def _deploy(client, auth, agents, settings, cl, name, memory, **extra):
    r = client.post("/api/v1/vms", headers=auth, json={"name": name, "cluster_id": cl["id"], "memory_mib": memory, **extra})
    assert r.status_code == 202, r.text
    task = r.json()
    assert task["placement"]["host"] == str(task["host_id"]) and task["placement"]["candidates"]
    return finish_as_agent(client, settings, agents[task["host_id"]], task)


def test_deploy_places_by_load_and_power_on_refusal_lists_every_host(env):
    client, auth, cl, hosts, agents, settings = env
    big = []
    for i in range(3):
        vm = _deploy(client, auth, agents, settings, cl, f"big{i}", 700)
        on = client.post(f"/api/v1/vms/{vm['id']}/power/on", headers=auth)
        assert on.status_code == 202, on.text
        assert on.json()["placement"]["host"] == str(vm["host_id"])
        finish_as_agent(client, settings, agents[vm["host_id"]], on.json(), power_state="poweredOn")
        big.append(vm)
    # Least loaded first: three running 700 MiB VMs land on three different hosts.
    assert len({v["host_id"] for v in big}) == 3
    r = client.post("/api/v1/vms", headers=auth, json={"name": "toolarge", "cluster_id": cl["id"], "memory_mib": 512})
    assert r.status_code == 409 and r.json()["code"] == "PLACEMENT_FAILED"
    rejected = {x["name"]: x["reasons"] for x in r.json()["details"]["rejected"]}
    assert set(rejected) == {"h1", "h2", "h3"} and all(any("memory short by 188 MiB" in reason for reason in reasons) for reasons in rejected.values()), rejected

    # A registered VM whose host is full is refused at power-on, with every host's reason.
    small = client.post("/api/v1/vms", headers=auth, json={"name": "late", "host_id": big[0]["host_id"], "memory_mib": 400}).json()
    late = finish_as_agent(client, settings, agents[small["host_id"]], small)
    r = client.post(f"/api/v1/vms/{late['id']}/power/on", headers=auth)
    assert r.status_code == 409 and r.json()["code"] == "PLACEMENT_FAILED"
    assert "memory short by 76 MiB" in r.json()["message"]
    assert {x["name"] for x in r.json()["details"]["rejected"]} == {"h1", "h2", "h3"}

    dry = client.post(f"/api/v1/clusters/{cl['id']}/placement", headers=auth, json={"memory_mib": 200}).json()
    assert {c["name"] for c in dry["candidates"]} == {"h1", "h2", "h3"} and dry["rejected"] == []


def test_must_anti_affinity_is_never_broken_and_contradictions_are_refused(env):
    client, auth, cl, hosts, agents, settings = env
    h1 = hosts[0]
    a = finish_as_agent(client, settings, agents[h1["id"]], client.post("/api/v1/vms", headers=auth, json={"name": "web1", "host_id": h1["id"]}).json())
    b = finish_as_agent(client, settings, agents[h1["id"]], client.post("/api/v1/vms", headers=auth, json={"name": "web2", "host_id": h1["id"]}).json())
    rule = client.post(f"/api/v1/clusters/{cl['id']}/rules", headers=auth, json={"name": "web-apart", "kind": "anti-affinity", "mandatory": True, "vm_ids": [a["id"], b["id"]]})
    assert rule.status_code == 201, rule.text
    clash = client.post(f"/api/v1/clusters/{cl['id']}/rules", headers=auth, json={"name": "web-together", "kind": "affinity", "mandatory": True, "vm_ids": [a["id"], b["id"]]})
    assert clash.status_code == 409 and clash.json()["code"] == "RULE_CONTRADICTION"
    assert set(clash.json()["details"]["rules"]) == {"web-apart", "web-together"}
    assert len(client.get(f"/api/v1/clusters/{cl['id']}/rules", headers=auth).json()) == 1

    _report(client, agents[h1["id"]], h1, [(a, "poweredOn"), (b, "poweredOff")])
    r = client.post(f"/api/v1/vms/{b['id']}/power/on", headers=auth)
    assert r.status_code == 409 and r.json()["code"] == "PLACEMENT_FAILED" and "web-apart" in r.json()["message"]
    # Placement of a third VM in the rule respects it too.
    r = client.patch(f"/api/v1/clusters/{cl['id']}/rules/{rule.json()['id']}", headers=auth, json={"vm_ids": [a["id"], b["id"], 99999]})
    assert r.status_code == 422 and r.json()["details"]["field"] == "vm_ids"
    assert client.get(f"/api/v1/clusters/{cl['id']}/rules-violations", headers=auth).json() == []


def test_pool_reservation_refuses_the_vm_that_would_exceed_it(env):
    client, auth, cl, hosts, agents, settings = env
    pool = client.post("/api/v1/pools", headers=auth, json={"name": "gold", "cluster_id": cl["id"], "memory_reservation_mib": 256, "expandable_reservation": False}).json()
    first = _deploy(client, auth, agents, settings, cl, "g1", 128, pool_id=pool["id"], memory_reservation_mib=200)
    host = next(h for h in hosts if h["id"] == first["host_id"])
    on = client.post(f"/api/v1/vms/{first['id']}/power/on", headers=auth)
    assert on.status_code == 202
    finish_as_agent(client, settings, agents[host["id"]], on.json(), power_state="poweredOn")
    r = client.post("/api/v1/vms", headers=auth, json={"name": "g2", "cluster_id": cl["id"], "memory_mib": 128, "pool_id": pool["id"], "memory_reservation_mib": 100})
    assert r.status_code == 409 and r.json()["code"] == "POOL_ADMISSION_REFUSED" and "gold" in r.json()["message"]
    ent = client.get(f"/api/v1/clusters/{cl['id']}/entitlements", headers=auth).json()
    assert ent[str(first["id"])]["memory_mib"] >= 200


def test_a_host_that_cannot_meet_the_evc_baseline_is_refused_when_it_joins(env):
    client, auth, cl, hosts, agents, settings = env
    cluster = client.get(f"/api/v1/clusters/{cl['id']}", headers=auth).json()
    evc = {"mode": "Westmere", "features": ["aes", "sse4.2"], "model_features": []}
    r = client.patch(f"/api/v1/clusters/{cl['id']}", headers=auth, json={"settings": {**cluster["settings"], "evc": evc}, "version": cluster["version"]})
    assert r.status_code == 200, r.text
    newcomer, agent = register_host(client, auth, cl["datacenter_id"], "old1", cluster_id=cl["id"])
    r = client.post(f"/api/v1/agent/hosts/{newcomer['id']}/state", headers=agent, json={"facts": {"hostname": "old1", "cpu_model": "Penryn", "cpu_features": ["sse4.1"]}, "domains": []})
    assert r.json() == {"accepted": False, "error": "EVC_INCOMPATIBLE", "missing": ["aes", "sse4.2"]}
    assert client.get(f"/api/v1/hosts/{newcomer['id']}", headers=auth).json()["connection_state"] == "disconnected"
    ok = client.post(
        f"/api/v1/agent/hosts/{hosts[0]['id']}/state",
        headers=agents[hosts[0]["id"]],
        json={"facts": {"hostname": "h1", "cpu_model": "Skylake", "cpu_features": ["aes", "avx2", "sse4.2"]}, "domains": []},
    )
    assert ok.json()["accepted"] is True
