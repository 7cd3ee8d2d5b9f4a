"""VMotion checks, the migration saga and maintenance mode through the API, with the agents
played by the test (the real migration is in test_lab_vmotion.py)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.apihelpers import app_for, command_id_of, finish_as_agent, login, make_admin, register_host
from vcenter.db.models import Cluster, OutboxMessage
from vcenter.db.session import session_scope


@pytest.fixture
def env(settings):
    make_admin(settings)
    with TestClient(app_for(settings)) as client:
        auth = login(client)
        dc = client.post("/api/v1/datacenters", json={"name": "dc"}, headers=auth).json()
        cl = client.post("/api/v1/clusters", json={"name": "cl", "datacenter_id": dc["id"], "settings": {"migration": {"max_per_host": 1}}}, headers=auth).json()
        hosts, agents = [], {}
        for name, features in (("h1", ["avx2", "sse4.2"]), ("h2", ["avx2", "sse4.2"]), ("h3", ["sse4.2"])):
            host, agent = register_host(client, auth, dc["id"], name, cluster_id=cl["id"])
            hosts.append(host)
            agents[host["id"]] = agent
        pg = client.post("/api/v1/portgroups", headers=auth, json={"name": "pg1", "datacenter_id": dc["id"], "vlan_id": 10, "host_ids": [h["id"] for h in hosts]}).json()
        for host, (_, features) in zip(hosts, (("h1", ["avx2", "sse4.2"]), ("h2", ["avx2", "sse4.2"]), ("h3", ["sse4.2"]))):
            bridges = [pg["bridge"]] if host["name"] != "h2" else []  # really absent on h2
            client.post(
                f"/api/v1/agent/hosts/{host['id']}/state",
                headers=agents[host["id"]],
                json={"facts": {"hostname": host["name"], "cpu_cores": 4, "cpu_mhz": 2000, "memory_mib": 2048, "cpu_model": "X", "cpu_features": features}, "domains": [], "bridges": bridges},
            )
        yield client, auth, cl, hosts, agents, pg, settings


def _running_vm(client, auth, agents, settings, host, name, memory=256, **extra):
    task = client.post("/api/v1/vms", headers=auth, json={"name": name, "host_id": host["id"], "memory_mib": memory, **extra}).json()
    vm = finish_as_agent(client, settings, agents[host["id"]], task)
    on = client.post(f"/api/v1/vms/{vm['id']}/power/on", headers=auth).json()
    finish_as_agent(client, settings, agents[host["id"]], on, power_state="poweredOn")
    return client.get(f"/api/v1/vms/{vm['id']}", headers=auth).json()


def _sent_commands(settings, name):
    with session_scope(settings.database_url) as session:
        return [r.payload for r in session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)) if r.payload.get("name") == name]


def test_checks_refuse_with_the_right_code(env):
    client, auth, cl, (h1, h2, h3), agents, pg, settings = env
    vm = _running_vm(client, auth, agents, settings, h1, "web1", nics=[{"portgroup_id": pg["id"]}], cpu={"model": "Haswell", "features_require": ["avx2"]})
    check = client.get(f"/api/v1/vms/{vm['id']}/migrate/check?host={h2['id']}", headers=auth).json()
    assert check["ok"] is False and {c["code"] for c in check["checks"] if not c["ok"]} == {"PORTGROUP_ABSENT"}
    r = client.post(f"/api/v1/vms/{vm['id']}/migrate", headers=auth, json={"host_id": h2["id"]})
    assert r.status_code == 409 and r.json()["code"] == "PORTGROUP_ABSENT"
    r = client.post(f"/api/v1/vms/{vm['id']}/migrate", headers=auth, json={"host_id": h3["id"]})
    assert r.status_code == 409 and r.json()["code"] == "CPU_INCOMPATIBLE" and "avx2" in r.json()["message"]
    big = _running_vm(client, auth, agents, settings, h3, "big1", memory=1900)
    small = _running_vm(client, auth, agents, settings, h1, "web2", memory=512)
    r = client.post(f"/api/v1/vms/{small['id']}/migrate", headers=auth, json={"host_id": h3["id"]})
    assert r.status_code == 409 and r.json()["code"] == "INSUFFICIENT_MEMORY"
    assert big["host_id"] == h3["id"]


def test_migration_saga_waits_for_slots_and_moves_the_vm_only_after_success(env):
    client, auth, cl, (h1, h2, h3), agents, pg, settings = env
    a = _running_vm(client, auth, agents, settings, h1, "a")
    b = _running_vm(client, auth, agents, settings, h1, "b")
    t1 = client.post(f"/api/v1/vms/{a['id']}/migrate", headers=auth, json={"host_id": h3["id"]}).json()
    t2 = client.post(f"/api/v1/vms/{b['id']}/migrate", headers=auth, json={"host_id": h3["id"]}).json()
    assert client.get(f"/api/v1/tasks/{t1['id']}", headers=auth).json()["state"] == "running"
    waiting = client.get(f"/api/v1/tasks/{t2['id']}", headers=auth).json()
    assert waiting["state"] == "queued" and waiting["step"] == "waiting-for-slot"  # max_per_host = 1
    assert len(_sent_commands(settings, "vm.migrate")) == 1
    # Progress from libvirt's job stats shows in the task; the VM has not moved yet.
    cid = command_id_of(settings, t1["id"])
    client.post(
        f"/api/v1/agent/hosts/{h1['id']}/tasks/{t1['id']}/progress",
        headers=agents[h1["id"]],
        json={"command_id": cid, "step": "migrating", "progress": 40, "details": {"phase": "precopy", "memory_processed": 100, "memory_remaining": 150}},
    )
    mid = client.get(f"/api/v1/tasks/{t1['id']}", headers=auth).json()
    assert mid["progress"] == 40 and mid["result"]["migration"]["memory_remaining"] == 150
    assert client.get(f"/api/v1/vms/{a['id']}", headers=auth).json()["host_id"] == h1["id"]
    client.post(f"/api/v1/agent/hosts/{h1['id']}/tasks/{t1['id']}/result", headers=agents[h1["id"]], json={"command_id": cid, "ok": True, "result": {"stats": {"downtime_ms": 42}}})
    assert client.get(f"/api/v1/vms/{a['id']}", headers=auth).json()["host_id"] == h3["id"]
    # The slot freed: the waiting migration was dispatched.
    assert client.get(f"/api/v1/tasks/{t2['id']}", headers=auth).json()["state"] == "running"
    # A cancelled migration leaves the VM where it was.
    client.post(f"/api/v1/tasks/{t2['id']}/cancel", headers=auth)
    cid2 = command_id_of(settings, t2["id"])
    answer = client.post(f"/api/v1/agent/hosts/{h1['id']}/tasks/{t2['id']}/progress", headers=agents[h1["id"]], json={"command_id": cid2, "step": "migrating", "progress": 20}).json()
    assert answer == {"proceed": False, "reason": "CANCEL_REQUESTED"}
    client.post(
        f"/api/v1/agent/hosts/{h1['id']}/tasks/{t2['id']}/result", headers=agents[h1["id"]], json={"command_id": cid2, "ok": False, "error_code": "MIGRATION_CANCELLED", "error_message": "cancelled"}
    )
    assert client.get(f"/api/v1/tasks/{t2['id']}", headers=auth).json()["state"] == "cancelled"
    assert client.get(f"/api/v1/vms/{b['id']}", headers=auth).json()["host_id"] == h1["id"]


def test_maintenance_names_what_cannot_leave_and_evacuates_the_rest(env):
    client, auth, cl, (h1, h2, h3), agents, pg, settings = env
    stuck = _running_vm(client, auth, agents, settings, h1, "stuck", cpu={"model": "Haswell", "features_require": ["avx2"]}, nics=[{"portgroup_id": pg["id"]}])
    r = client.post(f"/api/v1/hosts/{h1['id']}/maintenance", headers=auth)
    assert r.status_code == 409 and r.json()["code"] == "CANNOT_EVACUATE" and "stuck" in r.json()["details"]["vms"]
    assert client.get(f"/api/v1/hosts/{h1['id']}", headers=auth).json()["maintenance"] is False
    # Powered off, it may stay registered there (policy "leave").
    off = client.post(f"/api/v1/vms/{stuck['id']}/power/off", headers=auth).json()
    finish_as_agent(client, settings, agents[h1["id"]], off, power_state="poweredOff")
    mover = _running_vm(client, auth, agents, settings, h1, "mover")
    task = client.post(f"/api/v1/hosts/{h1['id']}/maintenance", headers=auth)
    assert task.status_code == 202, task.text
    evacuation = task.json()["placement"]["evacuation"]
    assert [d["vm"] for d in evacuation] == [str(mover["id"])] and evacuation[0]["candidates"]
    child = [p for p in _sent_commands(settings, "vm.migrate")][-1]
    cid = child["command_id"]
    client.post(f"/api/v1/agent/hosts/{h1['id']}/tasks/{child['task_id']}/result", headers=agents[h1["id"]], json={"command_id": cid, "ok": True, "result": {"stats": {}}})
    done = client.get(f"/api/v1/tasks/{task.json()['id']}", headers=auth).json()
    assert done["state"] == "success" and client.get(f"/api/v1/hosts/{h1['id']}", headers=auth).json()["maintenance"] is True
    assert client.get(f"/api/v1/vms/{mover['id']}", headers=auth).json()["host_id"] != h1["id"]
    # In maintenance, the host takes nothing: placement says why.
    dry = client.post(f"/api/v1/clusters/{cl['id']}/placement", headers=auth, json={"memory_mib": 64}).json()
    assert any(r["name"] == "h1" and "MaintenanceFilter" in r["filters"] for r in dry["rejected"])
    assert client.post(f"/api/v1/hosts/{h1['id']}/maintenance/exit", headers=auth).json()["maintenance"] is False


def test_maintenance_moves_powered_off_vms_when_the_cluster_says_move(env):
    client, auth, cl, (h1, h2, h3), agents, pg, settings = env
    current = client.get(f"/api/v1/clusters/{cl['id']}", headers=auth).json()

    def set_maintenance(value):
        cluster = client.get(f"/api/v1/clusters/{cl['id']}", headers=auth).json()
        return client.patch(f"/api/v1/clusters/{cl['id']}", headers=auth, json={"settings": {**cluster["settings"], "maintenance": value}, "version": cluster["version"]})

    # The setting is validated when written, and when read (a document stored before validation).
    for bad in ({"powered_off": "migrate"}, {"powered_off": None}, {"move_powered_off": True}, "move"):
        r = set_maintenance(bad)
        assert r.status_code == 422 and r.json()["code"] == "INVALID_MAINTENANCE_SETTINGS", (bad, r.text)
    r = client.post("/api/v1/clusters", headers=auth, json={"name": "cl2", "datacenter_id": current["datacenter_id"], "settings": {"maintenance": {"powered_off": "bogus"}}})
    assert r.status_code == 422 and r.json()["code"] == "INVALID_MAINTENANCE_SETTINGS"
    with session_scope(settings.database_url) as session:
        row = session.get(Cluster, cl["id"])
        row.settings = {**row.settings, "maintenance": {"powered_off": "teleport"}}
    r = client.post(f"/api/v1/hosts/{h1['id']}/maintenance", headers=auth)
    assert r.status_code == 422 and r.json()["code"] == "INVALID_MAINTENANCE_SETTINGS" and "teleport" in r.json()["message"]
    assert set_maintenance({"powered_off": "move"}).status_code == 200

    dc_id = current["datacenter_id"]
    local1 = client.post("/api/v1/datastores", headers=auth, json={"name": "local1", "datacenter_id": dc_id, "url": "/srv/local1", "host_ids": [h1["id"]]}).json()
    shared = client.post("/api/v1/datastores", headers=auth, json={"name": "shared13", "datacenter_id": dc_id, "url": "/srv/shared13", "host_ids": [h1["id"], h3["id"]]}).json()
    mover = _running_vm(client, auth, agents, settings, h1, "mover")
    cold = _powered_off_vm(client, auth, agents, settings, h1, "cold", [{"datastore_id": shared["id"], "capacity_mib": 8}])
    stuck = _powered_off_vm(client, auth, agents, settings, h1, "stuck", [{"datastore_id": local1["id"], "capacity_mib": 8}])
    # No other host mounts local1: "stuck" cannot leave, named with its reason; nothing starts.
    r = client.post(f"/api/v1/hosts/{h1['id']}/maintenance", headers=auth)
    assert r.status_code == 409 and r.json()["code"] == "CANNOT_EVACUATE", r.text
    assert r.json()["details"]["codes"] == {"stuck": "DATASTORE_NOT_MOUNTED"} and "local1" in r.json()["details"]["vms"]["stuck"]
    assert not _sent_commands(settings, "vm.migrate") and not _sent_commands(settings, "vm.relocate")
    # The operator mounts local1 on h2 too: every VM can leave.
    assert client.patch(f"/api/v1/datastores/{local1['id']}", headers=auth, json={"host_ids": [h1["id"], h2["id"]]}).status_code == 200
    task = client.post(f"/api/v1/hosts/{h1['id']}/maintenance", headers=auth)
    assert task.status_code == 202, task.text
    task = task.json()
    cold_plan = {d["vm"]: d["host"] for d in task["placement"]["powered_off"]}
    assert cold_plan == {str(cold["id"]): str(h3["id"]), str(stuck["id"]): str(h2["id"])}  # where their datastores are mounted
    assert [d["vm"] for d in task["placement"]["evacuation"]] == [str(mover["id"])]
    # max_per_host = 1: the VMotion runs first, the cold moves wait for h1's slot.
    vmotion = _sent_commands(settings, "vm.migrate")[-1]
    assert not _sent_commands(settings, "vm.relocate")
    _as_agent(client, settings, agents, h1["id"], vmotion["task_id"], result={"stats": {}})
    assert client.get(f"/api/v1/tasks/{task['id']}", headers=auth).json()["state"] == "running"
    moves = {}
    for _ in range(2):  # each cold move: define on the target (no copy), then undefine on h1
        sent = _sent_commands(settings, "vm.relocate")[-1]
        assert sent["args"]["offline_step"] == "define", sent
        target = sent["host_id"]
        moves[sent["args"]["spec"]["name"]] = target
        _as_agent(client, settings, agents, target, sent["task_id"], result={"defined": True})
        finish = _last_command(settings, sent["task_id"])
        assert finish["host_id"] == h1["id"] and finish["args"]["offline_step"] == "finish" and finish["args"]["remove"] == []
        if len(moves) == 1:
            # The first cold move fails on the source: its definition on the target is discarded.
            _as_agent(client, settings, agents, h1["id"], sent["task_id"], ok=False, error_code="VM_POWERED_ON", error_message="running")
            discard = _last_command(settings, sent["task_id"])
            assert discard["host_id"] == target and discard["args"]["offline_step"] == "discard"
            _as_agent(client, settings, agents, target, sent["task_id"], result={})
        else:
            _as_agent(client, settings, agents, h1["id"], sent["task_id"], result={"removed": [], "not_removed": []})
    assert moves == {"cold": h3["id"], "stuck": h2["id"]}
    failed = client.get(f"/api/v1/tasks/{task['id']}", headers=auth).json()
    assert failed["state"] == "error" and failed["error_code"] == "EVACUATION_FAILED" and "cold: VM_POWERED_ON" in failed["error_message"], failed
    assert client.get(f"/api/v1/hosts/{h1['id']}", headers=auth).json()["maintenance"] is False
    hosts_now = {v["name"]: v["host_id"] for v in client.get("/api/v1/vms", headers=auth).json()["items"]}
    assert hosts_now == {"mover": h2["id"], "cold": h1["id"], "stuck": h2["id"]}
    # Again: only "cold" is left to move, and the host enters maintenance with nothing registered.
    task = client.post(f"/api/v1/hosts/{h1['id']}/maintenance", headers=auth).json()
    sent = _sent_commands(settings, "vm.relocate")[-1]
    _as_agent(client, settings, agents, h3["id"], sent["task_id"], result={"defined": True})
    _as_agent(client, settings, agents, h1["id"], sent["task_id"], result={"removed": [], "not_removed": []})
    done = client.get(f"/api/v1/tasks/{task['id']}", headers=auth).json()
    assert done["state"] == "success" and done["result"] == {"moved": 1, "powered_off_moved": 1}, done
    assert client.get(f"/api/v1/hosts/{h1['id']}", headers=auth).json()["maintenance"] is True
    assert client.get(f"/api/v1/vms?host_id={h1['id']}", headers=auth).json()["total"] == 0
    assert client.get(f"/api/v1/vms/{cold['id']}", headers=auth).json()["power_state"] == "poweredOff"


def test_relocate_to_another_host_checks_and_moves_host_and_disks_only_after_success(env):
    client, auth, cl, (h1, h2, h3), agents, pg, settings = env
    dc_id = client.get(f"/api/v1/clusters/{cl['id']}", headers=auth).json()["datacenter_id"]
    local1 = client.post("/api/v1/datastores", headers=auth, json={"name": "local1", "datacenter_id": dc_id, "url": "/srv/local1", "host_ids": [h1["id"]]}).json()
    local3 = client.post("/api/v1/datastores", headers=auth, json={"name": "local3", "datacenter_id": dc_id, "url": "/srv/local3", "host_ids": [h3["id"]]}).json()
    other1 = client.post("/api/v1/datastores", headers=auth, json={"name": "other1", "datacenter_id": dc_id, "url": "/srv/other1", "host_ids": [h1["id"]]}).json()
    vm = _running_vm(client, auth, agents, settings, h1, "mover", disks=[{"datastore_id": local1["id"], "capacity_mib": 8}, {"datastore_id": other1["id"], "capacity_mib": 8}])
    url = f"/api/v1/vms/{vm['id']}/relocate"
    # A target datastore the target host does not mount.
    r = client.post(url, headers=auth, json={"host_id": h3["id"], "disks": [{"index": 0, "datastore_id": other1["id"]}]})
    assert r.status_code == 409 and r.json()["code"] == "DATASTORE_NOT_MOUNTED", r.text
    # A disk left behind on a datastore the target does not mount: the datastore check names it.
    r = client.post(url, headers=auth, json={"host_id": h3["id"], "disks": [{"index": 0, "datastore_id": local3["id"]}]})
    assert r.status_code == 409 and r.json()["code"] == "DATASTORE_NOT_MOUNTED" and "disk 1" in r.json()["message"], r.text
    # VMotion's checks on the target (here the port group really absent on h2).
    pgvm = _running_vm(client, auth, agents, settings, h1, "pgvm", nics=[{"portgroup_id": pg["id"]}], disks=[{"datastore_id": local1["id"], "capacity_mib": 8}])
    local2 = client.post("/api/v1/datastores", headers=auth, json={"name": "local2", "datacenter_id": dc_id, "url": "/srv/local2", "host_ids": [h2["id"]]}).json()
    r = client.post(f"/api/v1/vms/{pgvm['id']}/relocate", headers=auth, json={"host_id": h2["id"], "disks": [{"index": 0, "datastore_id": local2["id"]}]})
    assert r.status_code == 409 and r.json()["code"] == "PORTGROUP_ABSENT", r.text
    # Accepted: one command to the SOURCE agent, a live migration copying both disks to the new paths.
    both = [{"index": 0, "datastore_id": local3["id"]}, {"index": 1, "datastore_id": local3["id"]}]
    r = client.post(url, headers=auth, json={"host_id": h3["id"], "disks": both})
    assert r.status_code == 202, r.text
    task = r.json()
    assert task["kind"] == "vm.relocate" and task["host_id"] == h1["id"]
    sent = _sent_commands(settings, "vm.relocate")[-1]
    options = sent["args"]["migrate"]
    assert options["copy_storage"] is True and options["copy_disks"] == ["vda", "vdb"]
    files = [d["file"] for d in vm["disks"]]
    assert options["dest_disk_paths"] == {"vda": f"/srv/local3/{files[0]}", "vdb": f"/srv/local3/{files[1]}"}
    assert [m["from"] for m in sent["args"]["moves"]] == [f"/srv/local1/{files[0]}", f"/srv/other1/{files[1]}"]
    # Progress from libvirt shows; nothing moved in the inventory yet.
    cid = command_id_of(settings, task["id"])
    client.post(
        f"/api/v1/agent/hosts/{h1['id']}/tasks/{task['id']}/progress",
        headers=agents[h1["id"]],
        json={"command_id": cid, "step": "migrating", "progress": 30, "details": {"phase": "precopy", "data_processed": 10, "data_total": 30}},
    )
    mid = client.get(f"/api/v1/tasks/{task['id']}", headers=auth).json()
    assert mid["progress"] == 30 and mid["result"]["migration"]["data_total"] == 30
    assert client.get(f"/api/v1/vms/{vm['id']}", headers=auth).json()["host_id"] == h1["id"]
    client.post(f"/api/v1/agent/hosts/{h1['id']}/tasks/{task['id']}/result", headers=agents[h1["id"]], json={"command_id": cid, "ok": True, "result": {"stats": {"downtime_ms": 20}}})
    after = client.get(f"/api/v1/vms/{vm['id']}", headers=auth).json()
    assert client.get(f"/api/v1/tasks/{task['id']}", headers=auth).json()["state"] == "success"
    assert after["host_id"] == h3["id"] and [d["datastore_id"] for d in after["disks"]] == [local3["id"], local3["id"]]


def test_relocate_to_another_host_failure_leaves_everything_and_offline_is_refused(env):
    client, auth, cl, (h1, h2, h3), agents, pg, settings = env
    dc_id = client.get(f"/api/v1/clusters/{cl['id']}", headers=auth).json()["datacenter_id"]
    local1 = client.post("/api/v1/datastores", headers=auth, json={"name": "local1", "datacenter_id": dc_id, "url": "/srv/local1", "host_ids": [h1["id"]]}).json()
    local3 = client.post("/api/v1/datastores", headers=auth, json={"name": "local3", "datacenter_id": dc_id, "url": "/srv/local3", "host_ids": [h3["id"]]}).json()
    vm = _running_vm(client, auth, agents, settings, h1, "mover", disks=[{"datastore_id": local1["id"], "capacity_mib": 8}])
    body = {"host_id": h3["id"], "disks": [{"index": 0, "datastore_id": local3["id"]}]}
    task = client.post(f"/api/v1/vms/{vm['id']}/relocate", headers=auth, json=body).json()
    cid = command_id_of(settings, task["id"])
    domain = {"uuid": vm["libvirt_uuid"], "name": vm["name"], "power_state": "poweredOn"}
    client.post(
        f"/api/v1/agent/hosts/{h1['id']}/tasks/{task['id']}/result",
        headers=agents[h1["id"]],
        json={"command_id": cid, "ok": False, "error_code": "MIGRATION_FAILED", "error_message": "boom", "domain": domain},
    )
    done = client.get(f"/api/v1/tasks/{task['id']}", headers=auth).json()
    assert done["state"] == "error" and done["error_code"] == "MIGRATION_FAILED"
    after = client.get(f"/api/v1/vms/{vm['id']}", headers=auth).json()
    assert after["host_id"] == h1["id"] and after["disks"][0]["datastore_id"] == local1["id"] and after["power_state"] == "poweredOn"
    off = client.post(f"/api/v1/vms/{vm['id']}/power/off", headers=auth).json()
    finish_as_agent(client, settings, agents[h1["id"]], off, power_state="poweredOff")
    # Powered off: its files would be copied by a host mounting both datastores; none does.
    r = client.post(f"/api/v1/vms/{vm['id']}/relocate", headers=auth, json=body)
    assert r.status_code == 409 and r.json()["code"] == "RELOCATE_NO_HOST_MOUNTS_BOTH" and "local1 -> local3" in r.json()["message"], r.text


def test_relocate_to_another_host_cancelled_ends_cancelled_on_the_old_host(env):
    client, auth, cl, (h1, h2, h3), agents, pg, settings = env
    dc_id = client.get(f"/api/v1/clusters/{cl['id']}", headers=auth).json()["datacenter_id"]
    local1 = client.post("/api/v1/datastores", headers=auth, json={"name": "local1", "datacenter_id": dc_id, "url": "/srv/local1", "host_ids": [h1["id"]]}).json()
    local3 = client.post("/api/v1/datastores", headers=auth, json={"name": "local3", "datacenter_id": dc_id, "url": "/srv/local3", "host_ids": [h3["id"]]}).json()
    vm = _running_vm(client, auth, agents, settings, h1, "mover", disks=[{"datastore_id": local1["id"], "capacity_mib": 8}])
    task = client.post(f"/api/v1/vms/{vm['id']}/relocate", headers=auth, json={"host_id": h3["id"], "disks": [{"index": 0, "datastore_id": local3["id"]}]}).json()
    cid = command_id_of(settings, task["id"])
    client.post(f"/api/v1/agent/hosts/{h1['id']}/tasks/{task['id']}/progress", headers=agents[h1["id"]], json={"command_id": cid, "step": "migrating", "progress": 10})
    assert client.post(f"/api/v1/tasks/{task['id']}/cancel", headers=auth).status_code == 202
    answer = client.post(f"/api/v1/agent/hosts/{h1['id']}/tasks/{task['id']}/progress", headers=agents[h1["id"]], json={"command_id": cid, "step": "migrating", "progress": 20}).json()
    assert answer == {"proceed": False, "reason": "CANCEL_REQUESTED"}
    client.post(
        f"/api/v1/agent/hosts/{h1['id']}/tasks/{task['id']}/result", headers=agents[h1["id"]], json={"command_id": cid, "ok": False, "error_code": "MIGRATION_CANCELLED", "error_message": "cancelled"}
    )
    assert client.get(f"/api/v1/tasks/{task['id']}", headers=auth).json()["state"] == "cancelled"
    after = client.get(f"/api/v1/vms/{vm['id']}", headers=auth).json()
    assert after["host_id"] == h1["id"] and after["disks"][0]["datastore_id"] == local1["id"]


def _as_agent(client, settings, agents, host_id, task_id, ok=True, **body):
    cid = command_id_of(settings, task_id)
    r = client.post(f"/api/v1/agent/hosts/{host_id}/tasks/{task_id}/result", headers=agents[host_id], json={"command_id": cid, "ok": ok, **body})
    assert r.status_code == 200, r.text


def _last_command(settings, task_id):
    with session_scope(settings.database_url) as session:
        return [r.payload for r in session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)) if r.payload.get("task_id") == task_id][-1]


def _powered_off_vm(client, auth, agents, settings, host, name, disks):
    task = client.post("/api/v1/vms", headers=auth, json={"name": name, "host_id": host["id"], "memory_mib": 128, "disks": disks}).json()
    return finish_as_agent(client, settings, agents[host["id"]], task)


def test_powered_off_vm_moves_to_another_host_copied_by_a_host_mounting_both(env):
    client, auth, cl, (h1, h2, h3), agents, pg, settings = env
    dc_id = client.get(f"/api/v1/clusters/{cl['id']}", headers=auth).json()["datacenter_id"]
    local1 = client.post("/api/v1/datastores", headers=auth, json={"name": "local1", "datacenter_id": dc_id, "url": "/srv/local1", "host_ids": [h1["id"]]}).json()
    shared = client.post("/api/v1/datastores", headers=auth, json={"name": "shared13", "datacenter_id": dc_id, "url": "/srv/shared13", "host_ids": [h1["id"], h3["id"]]}).json()
    vm = _powered_off_vm(client, auth, agents, settings, h1, "cold", [{"datastore_id": local1["id"], "capacity_mib": 8}])
    file = client.get(f"/api/v1/vms/{vm['id']}", headers=auth).json()["disks"][0]["file"]
    body = {"host_id": h3["id"], "disks": [{"index": 0, "datastore_id": shared["id"]}]}
    r = client.post(f"/api/v1/vms/{vm['id']}/relocate", headers=auth, json=body)
    assert r.status_code == 202, r.text
    task = r.json()
    # h3 does not mount local1; h1 mounts both: the source copies.
    assert task["kind"] == "vm.relocate" and task["host_id"] == h1["id"] and task["state"] == "running"
    sent = _last_command(settings, task["id"])
    assert sent["host_id"] == h1["id"] and sent["args"]["offline_step"] == "copy"
    assert sent["args"]["copies"] == [{"from": f"/srv/local1/{file}", "to": f"/srv/shared13/{file}", "format": "qcow2"}]
    # The VM is claimed meanwhile: no power-on during its move.
    assert client.post(f"/api/v1/vms/{vm['id']}/power/on", headers=auth).status_code == 409
    _as_agent(client, settings, agents, h1["id"], task["id"], result={"copied": [f"/srv/shared13/{file}"]})
    sent = _last_command(settings, task["id"])
    assert sent["host_id"] == h3["id"] and sent["args"]["offline_step"] == "define"
    assert [(d["datastore_id"], d["datastore_path"]) for d in sent["args"]["spec"]["disks"]] == [(shared["id"], "/srv/shared13")]
    assert client.get(f"/api/v1/vms/{vm['id']}", headers=auth).json()["host_id"] == h1["id"]
    _as_agent(client, settings, agents, h3["id"], task["id"], result={"defined": True})
    sent = _last_command(settings, task["id"])
    assert sent["host_id"] == h1["id"] and sent["args"] == {"offline_step": "finish", "uuid": vm["libvirt_uuid"], "remove": [f"/srv/local1/{file}"]}
    _as_agent(client, settings, agents, h1["id"], task["id"], result={"removed": [f"/srv/local1/{file}"], "not_removed": []})
    done = client.get(f"/api/v1/tasks/{task['id']}", headers=auth).json()
    assert done["state"] == "success" and done["result"]["removed"] == [f"/srv/local1/{file}"] and done["result"]["copier"] == h1["id"]
    after = client.get(f"/api/v1/vms/{vm['id']}", headers=auth).json()
    assert after["host_id"] == h3["id"] and after["disks"][0]["datastore_id"] == shared["id"] and after["power_state"] == "poweredOff"


def test_powered_off_relocation_failures_and_cancel_leave_the_vm_on_its_old_host(env):
    client, auth, cl, (h1, h2, h3), agents, pg, settings = env
    dc_id = client.get(f"/api/v1/clusters/{cl['id']}", headers=auth).json()["datacenter_id"]
    shared = client.post("/api/v1/datastores", headers=auth, json={"name": "shared13", "datacenter_id": dc_id, "url": "/srv/shared13", "host_ids": [h1["id"], h3["id"]]}).json()
    local3 = client.post("/api/v1/datastores", headers=auth, json={"name": "local3", "datacenter_id": dc_id, "url": "/srv/local3", "host_ids": [h3["id"]]}).json()
    vm = _powered_off_vm(client, auth, agents, settings, h1, "cold2", [{"datastore_id": shared["id"], "capacity_mib": 8}])
    body = {"host_id": h3["id"], "disks": [{"index": 0, "datastore_id": local3["id"]}]}
    # The target mounts both (it reads the old file from the shared datastore): it copies.
    task = client.post(f"/api/v1/vms/{vm['id']}/relocate", headers=auth, json=body).json()
    assert task["host_id"] == h3["id"] and _last_command(settings, task["id"])["args"]["offline_step"] == "copy"
    _as_agent(client, settings, agents, h3["id"], task["id"], result={})
    # The target cannot define it: the copies are discarded by the copier, the task ends in error.
    _as_agent(client, settings, agents, h3["id"], task["id"], ok=False, error_code="DISK_NOT_FOUND", error_message="gone")
    sent = _last_command(settings, task["id"])
    assert sent["host_id"] == h3["id"] and sent["args"]["offline_step"] == "discard" and sent["args"]["uuid"] is None
    assert client.get(f"/api/v1/tasks/{task['id']}", headers=auth).json()["state"] == "running"
    _as_agent(client, settings, agents, h3["id"], task["id"], result={"removed": sent["args"]["paths"]})
    done = client.get(f"/api/v1/tasks/{task['id']}", headers=auth).json()
    assert done["state"] == "error" and done["error_code"] == "DISK_NOT_FOUND" and "defining on the target failed" in done["error_message"]
    after = client.get(f"/api/v1/vms/{vm['id']}", headers=auth).json()
    assert after["host_id"] == h1["id"] and after["disks"][0]["datastore_id"] == shared["id"]
    # Cancelled while copying: the copier removed its files; the task ends cancelled.
    task = client.post(f"/api/v1/vms/{vm['id']}/relocate", headers=auth, json=body).json()
    assert client.post(f"/api/v1/tasks/{task['id']}/cancel", headers=auth).status_code == 202
    _as_agent(client, settings, agents, h3["id"], task["id"], ok=False, error_code="MIGRATION_CANCELLED", error_message="cancelled")
    assert client.get(f"/api/v1/tasks/{task['id']}", headers=auth).json()["state"] == "cancelled"
    # A cancel while the target defines: that step runs to its end, then everything is discarded.
    task = client.post(f"/api/v1/vms/{vm['id']}/relocate", headers=auth, json=body).json()
    _as_agent(client, settings, agents, h3["id"], task["id"], result={})
    assert client.post(f"/api/v1/tasks/{task['id']}/cancel", headers=auth).status_code == 202
    cid = command_id_of(settings, task["id"])
    answer = client.post(f"/api/v1/agent/hosts/{h3['id']}/tasks/{task['id']}/progress", headers=agents[h3["id"]], json={"command_id": cid, "step": "vm.relocate", "progress": 5}).json()
    assert answer == {"proceed": True}
    _as_agent(client, settings, agents, h3["id"], task["id"], result={"defined": True})
    sent = _last_command(settings, task["id"])
    assert sent["args"]["offline_step"] == "discard" and sent["args"]["uuid"] == vm["libvirt_uuid"]
    _as_agent(client, settings, agents, h3["id"], task["id"], result={})
    assert client.get(f"/api/v1/tasks/{task['id']}", headers=auth).json()["state"] == "cancelled"
    # The source cannot undefine: the target's definition and copies go, the VM stays on h1.
    task = client.post(f"/api/v1/vms/{vm['id']}/relocate", headers=auth, json=body).json()
    _as_agent(client, settings, agents, h3["id"], task["id"], result={})
    _as_agent(client, settings, agents, h3["id"], task["id"], result={"defined": True})
    _as_agent(client, settings, agents, h1["id"], task["id"], ok=False, error_code="VM_POWERED_ON", error_message="running")
    sent = _last_command(settings, task["id"])
    assert sent["host_id"] == h3["id"] and sent["args"]["offline_step"] == "discard" and sent["args"]["uuid"] == vm["libvirt_uuid"]
    _as_agent(client, settings, agents, h3["id"], task["id"], result={})
    assert client.get(f"/api/v1/tasks/{task['id']}", headers=auth).json()["error_code"] == "VM_POWERED_ON"
    assert client.get(f"/api/v1/vms/{vm['id']}", headers=auth).json()["host_id"] == h1["id"]


def test_relocations_to_another_host_take_migration_slots(env):
    client, auth, cl, (h1, h2, h3), agents, pg, settings = env
    dc_id = client.get(f"/api/v1/clusters/{cl['id']}", headers=auth).json()["datacenter_id"]
    local1 = client.post("/api/v1/datastores", headers=auth, json={"name": "local1", "datacenter_id": dc_id, "url": "/srv/local1", "host_ids": [h1["id"]]}).json()
    shared = client.post("/api/v1/datastores", headers=auth, json={"name": "shared13", "datacenter_id": dc_id, "url": "/srv/shared13", "host_ids": [h1["id"], h3["id"]]}).json()
    a = _running_vm(client, auth, agents, settings, h1, "a")
    b = _running_vm(client, auth, agents, settings, h1, "b", disks=[{"datastore_id": local1["id"], "capacity_mib": 8}])
    c = _powered_off_vm(client, auth, agents, settings, h1, "c", [{"datastore_id": local1["id"], "capacity_mib": 8}])
    vmotion = client.post(f"/api/v1/vms/{a['id']}/migrate", headers=auth, json={"host_id": h3["id"]}).json()
    assert client.get(f"/api/v1/tasks/{vmotion['id']}", headers=auth).json()["state"] == "running"
    # max_per_host = 1: h1 and h3 are busy, a live relocation to h3 waits in queue (nothing sent).
    live = client.post(f"/api/v1/vms/{b['id']}/relocate", headers=auth, json={"host_id": h3["id"], "disks": [{"index": 0, "datastore_id": shared["id"]}]})
    assert live.status_code == 202, live.text
    live = client.get(f"/api/v1/tasks/{live.json()['id']}", headers=auth).json()
    assert live["state"] == "queued" and live["step"] == "waiting-for-slot"
    assert not [p for p in _sent_commands(settings, "vm.relocate") if p["task_id"] == live["id"]]
    cold = client.post(f"/api/v1/vms/{c['id']}/relocate", headers=auth, json={"host_id": h3["id"], "disks": [{"index": 0, "datastore_id": shared["id"]}]}).json()
    assert client.get(f"/api/v1/tasks/{cold['id']}", headers=auth).json()["step"] == "waiting-for-slot"
    # The VMotion ends: the live relocation takes the slots, the cold one still waits.
    _as_agent(client, settings, agents, h1["id"], vmotion["id"], result={"stats": {}})
    assert client.get(f"/api/v1/tasks/{live['id']}", headers=auth).json()["state"] == "running"
    assert _last_command(settings, live["id"])["args"]["migrate"]["copy_storage"] is True
    assert client.get(f"/api/v1/tasks/{cold['id']}", headers=auth).json()["state"] == "queued"
    # ... and while it runs a VMotion into h3 waits too.
    d = _running_vm(client, auth, agents, settings, h2, "d")
    waiting = client.post(f"/api/v1/vms/{d['id']}/migrate", headers=auth, json={"host_id": h3["id"]}).json()
    assert client.get(f"/api/v1/tasks/{waiting['id']}", headers=auth).json()["step"] == "waiting-for-slot"
    _as_agent(client, settings, agents, h1["id"], live["id"], result={"stats": {}, "moved": [], "removed": []})
    assert client.get(f"/api/v1/tasks/{live['id']}", headers=auth).json()["state"] == "success"
    # Freed: the oldest waiting one (the cold relocation) goes first and holds h1 and h3.
    assert client.get(f"/api/v1/tasks/{cold['id']}", headers=auth).json()["state"] == "running"
    assert client.get(f"/api/v1/tasks/{waiting['id']}", headers=auth).json()["state"] == "queued"


@pytest.mark.parametrize("ha_admission", [False, True], ids=["no-ha", "ha-admission"])
@pytest.mark.parametrize("named_target", [False, True], ids=["placement-chooses", "target-named"])
def test_one_migrate_request_reads_the_cluster_once(env, monkeypatch, named_target, ha_admission):
    """POST /vms/{id}/migrate builds the cluster snapshot once: the choice of a target, the
    checks and HA admission control share it (before, each read the cluster again)."""
    from vcenter.services.ha import ha
    from vcenter.services.compute import migration

    client, auth, cl, (h1, h2, h3), agents, pg, settings = env
    vm = _running_vm(client, auth, agents, settings, h1, "once")
    if ha_admission:
        r = client.patch(f"/api/v1/clusters/{cl['id']}/ha", headers=auth, json={"enabled": True, "admission": {"kind": "host-failures", "host_failures": 1}})
        assert r.status_code == 200, r.text
    built = []

    def counting(session, cluster_id):
        built.append(cluster_id)
        return real(session, cluster_id)

    real = migration.cluster_snapshot
    monkeypatch.setattr(migration, "cluster_snapshot", counting)
    monkeypatch.setattr(ha, "cluster_snapshot", counting)  # HA admission would be a second read
    body = {"host_id": h3["id"]} if named_target else None
    r = client.post(f"/api/v1/vms/{vm['id']}/migrate", headers=auth, json=body)
    assert r.status_code == 202, r.json()
    assert built == [cl["id"]]
