"""DRS through the API: a pass on a skewed cluster, recommendations with reasons, apply
(a VMotion Task), dismiss, staleness, full automation, rule fixes first, what-if. Agents are
played by the test; the balancer itself is covered by unit tests and golden scenarios."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.apihelpers import finish_as_agent, login, make_admin, register_host
from vcenter.api.app import create_app

pytestmark = pytest.mark.integration


@pytest.fixture
def env(settings):
    make_admin(settings)
    with TestClient(create_app(settings)) as client:
        auth = login(client)
        dc = client.post("/api/v1/datacenters", json={"name": "dc"}, headers=auth).json()
        cl = client.post("/api/v1/clusters", json={"name": "cl", "datacenter_id": dc["id"], "settings": {"drs": {"enabled": True, "automation": "manual"}}}, headers=auth).json()
        hosts, agents = [], {}
        for name in ("h1", "h2", "h3"):
            host, agent = register_host(client, auth, dc["id"], name, cluster_id=cl["id"])
            client.post(f"/api/v1/agent/hosts/{host['id']}/state", headers=agent, json={"facts": {"hostname": name, "cpu_cores": 4, "cpu_mhz": 2000, "memory_mib": 4096}, "domains": []})
            hosts.append(host)
            agents[host["id"]] = agent
        vms = []
        for i in range(4):  # everything on h1: a skewed cluster
            task = client.post("/api/v1/vms", headers=auth, json={"name": f"vm{i}", "host_id": hosts[0]["id"], "memory_mib": 900, "vcpus": 2}).json()
            vm = finish_as_agent(client, settings, agents[hosts[0]["id"]], task)
            on = client.post(f"/api/v1/vms/{vm['id']}/power/on", headers=auth).json()
            finish_as_agent(client, settings, agents[hosts[0]["id"]], on, power_state="poweredOn")
            vms.append(vm)
        yield client, auth, cl, hosts, vms


def _set_drs(client, auth, cl, **values):
    current = client.get(f"/api/v1/clusters/{cl['id']}", headers=auth).json()
    settings = {**current["settings"], "drs": {**current["settings"]["drs"], **values}}
    assert client.patch(f"/api/v1/clusters/{cl['id']}", headers=auth, json={"settings": settings, "version": current["version"]}).status_code == 200


def test_manual_drs_recommends_with_reasons_and_applies_on_request(env):
    client, auth, cl, hosts, vms = env
    result = client.post(f"/api/v1/clusters/{cl['id']}/drs/run", headers=auth).json()
    assert result["imbalance_before"] > result["target"] and result["imbalance_after"] < result["imbalance_before"]
    recs = result["recommendations"]
    assert recs and all(r["state"] == "pending" and r["source_host_id"] == hosts[0]["id"] and r["target_host_id"] != hosts[0]["id"] for r in recs)
    assert "imbalance" in recs[0]["reason"] and recs[0]["reasons"]["imbalance_before"] > recs[0]["reasons"]["imbalance_after"]
    applied = client.post(f"/api/v1/clusters/{cl['id']}/drs/recommendations/{recs[0]['id']}/apply", headers=auth).json()
    assert applied["state"] == "applied" and applied["task_id"]
    task = client.get(f"/api/v1/tasks/{applied['task_id']}", headers=auth).json()
    assert task["kind"] == "vm.migrate" and task["object_id"] == recs[0]["vm_id"]
    if len(recs) > 1:
        dismissed = client.post(f"/api/v1/clusters/{cl['id']}/drs/recommendations/{recs[1]['id']}/dismiss", headers=auth).json()
        assert dismissed["state"] == "dismissed"
    again = client.post(f"/api/v1/clusters/{cl['id']}/drs/recommendations/{recs[0]['id']}/apply", headers=auth)
    assert again.status_code == 409 and again.json()["code"] == "RECOMMENDATION_NOT_PENDING"
    # The VM moving now is not recommended again; older pending ones become stale.
    second = client.post(f"/api/v1/clusters/{cl['id']}/drs/run", headers=auth).json()
    assert recs[0]["vm_id"] not in {r["vm_id"] for r in second["recommendations"]}
    assert all(r["state"] != "pending" for r in client.get(f"/api/v1/clusters/{cl['id']}/drs/recommendations", headers=auth).json() if r["id"] in {x["id"] for x in recs})


def test_fully_automated_drs_moves_and_fixes_must_rules_first(env):
    client, auth, cl, hosts, vms = env
    r = client.post(f"/api/v1/clusters/{cl['id']}/rules", headers=auth, json={"name": "apart", "kind": "anti-affinity", "mandatory": False, "vm_ids": [vms[0]["id"], vms[1]["id"]]})
    assert r.status_code == 201
    _set_drs(client, auth, cl, automation="full")
    result = client.post(f"/api/v1/clusters/{cl['id']}/drs/run", headers=auth).json()
    first = result["recommendations"][0]
    assert first["kind"] == "rule" and first["priority"] == 1 and first["reasons"]["rule"] == "apart"
    assert all(r["state"] == "applied" and r["task_id"] for r in result["recommendations"])
    tasks = client.get("/api/v1/tasks?kind=vm.migrate", headers=auth).json()
    assert tasks["total"] == len(result["recommendations"])


def test_whatif_changes_nothing(env):
    client, auth, cl, hosts, vms = env
    before = client.get("/api/v1/vms", headers=auth).json()["items"]
    answer = client.post(f"/api/v1/clusters/{cl['id']}/drs/whatif", headers=auth, json={"kind": "host-fails", "host_id": hosts[0]["id"]}).json()
    assert answer["imbalance_now"] > 0 and set(answer["displaced"]) == {str(v["id"]) for v in vms}
    assert all(h != str(hosts[0]["id"]) for h in answer["displaced"].values() if h)
    assert client.get("/api/v1/vms", headers=auth).json()["items"] == before
    assert client.get("/api/v1/tasks?kind=vm.migrate", headers=auth).json()["total"] == 0
    bad = client.post(f"/api/v1/clusters/{cl['id']}/drs/whatif", headers=auth, json={"kind": "host-fails", "host_id": 99999})
    assert bad.status_code == 422
