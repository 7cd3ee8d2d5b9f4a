"""Snapshots, clones, backups and restores through the API, with the agents played by the
test: which command goes to which host with which files, what the inventory records only
after the agent's success, and the refusals (4xx with stable codes). The real libvirt side is
in test_libvirt_vmdata.py and test_lab_vmdata.py."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.apihelpers import app_for, command_id_of, finish_as_agent, login, make_admin, register_host
from vcenter.db.models import OutboxMessage
from vcenter.db.session import session_scope


@pytest.fixture
def env(settings):
    make_admin(settings)
    with TestClient(app_for(settings)) as client:
        auth = login(client)
        dc = client.post("/api/v1/datacenters", json={"name": "dc"}, headers=auth).json()
        cl = client.post("/api/v1/clusters", json={"name": "cl", "datacenter_id": dc["id"]}, headers=auth).json()
        hosts, agents = [], {}
        for name in ("h1", "h2"):
            host, agent = register_host(client, auth, dc["id"], name, cluster_id=cl["id"])
            hosts.append(host)
            agents[host["id"]] = agent
            client.post(
                f"/api/v1/agent/hosts/{host['id']}/state", headers=agent, json={"facts": {"hostname": name, "cpu_cores": 4, "cpu_mhz": 2000, "memory_mib": 4096, "cpu_model": "X"}, "domains": []}
            )
        shared = client.post("/api/v1/datastores", headers=auth, json={"name": "shared", "datacenter_id": dc["id"], "url": "/srv/shared", "host_ids": [h["id"] for h in hosts]}).json()
        local1 = client.post("/api/v1/datastores", headers=auth, json={"name": "local1", "datacenter_id": dc["id"], "url": "/srv/local1", "host_ids": [hosts[0]["id"]]}).json()
        yield client, auth, hosts, agents, {"shared": shared, "local1": local1}, settings


def _vm(client, auth, agents, settings, host, name, ds, running=True):
    task = client.post("/api/v1/vms", headers=auth, json={"name": name, "host_id": host["id"], "memory_mib": 128, "disks": [{"datastore_id": ds["id"], "capacity_mib": 64}]}).json()
    vm = finish_as_agent(client, settings, agents[host["id"]], task)
    if running:
        on = client.post(f"/api/v1/vms/{vm['id']}/power/on", headers=auth).json()
        finish_as_agent(client, settings, agents[host["id"]], on, power_state="poweredOn")
    return client.get(f"/api/v1/vms/{vm['id']}", headers=auth).json()


def _sent(settings, task_id):
    with session_scope(settings.database_url) as session:
        return [r.payload for r in session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)) if r.payload.get("task_id") == task_id][-1]


def _report(client, settings, agent, task_id, ok=True, result=None, error_code=None, domain=None):
    task = client.get(f"/api/v1/tasks/{task_id}", headers=login(client)).json()
    body = {"command_id": command_id_of(settings, task_id), "ok": ok, "result": result or {}, "error_code": error_code, "domain": domain}
    r = client.post(f"/api/v1/agent/hosts/{task['host_id']}/tasks/{task_id}/result", json=body, headers=agent)
    assert r.json() == {"applied": True}, r.text


def test_snapshot_tree_revert_and_delete(env):
    client, auth, (h1, h2), agents, ds, settings = env
    vm = _vm(client, auth, agents, settings, h1, "web1", ds["shared"])
    url = f"/api/v1/vms/{vm['id']}/snapshots"
    t1 = client.post(url, headers=auth, json={"name": "s1"}).json()
    assert t1["kind"] == "vm.snapshot.create" and _sent(settings, t1["id"])["args"] == {"uuid": vm["libvirt_uuid"], "name": "s1", "description": ""}
    assert client.post(url, headers=auth, json={"name": "s2"}).status_code == 409  # busy: one task per VM
    assert client.get(url, headers=auth).json()["count"] == 0  # nothing recorded before the agent's success
    _report(client, settings, agents[h1["id"]], t1["id"], result={"name": "s1", "parent": None, "state": "running", "memory": True})
    t2 = client.post(url, headers=auth, json={"name": "s2", "description": "after"}).json()
    _report(client, settings, agents[h1["id"]], t2["id"], result={"name": "s2", "parent": "s1", "state": "running", "memory": True})
    r = client.post(url, headers=auth, json={"name": "s2"})
    assert r.status_code == 409 and r.json()["code"] == "SNAPSHOT_NAME_TAKEN"
    assert client.post(url, headers=auth, json={"name": "../x"}).status_code == 422
    tree = client.get(url, headers=auth).json()
    (root,) = tree["tree"]
    assert root["name"] == "s1" and root["memory"] is True and [c["name"] for c in root["children"]] == ["s2"]
    s1, s2 = root["id"], root["children"][0]["id"]
    assert tree["current_id"] == s2

    rv = client.post(f"{url}/{s1}/revert", headers=auth).json()
    _report(client, settings, agents[h1["id"]], rv["id"], result={"reverted_to": "s1", "checkpoints_dropped": []}, domain={"uuid": vm["libvirt_uuid"], "name": "web1", "power_state": "poweredOn"})
    assert client.get(url, headers=auth).json()["current_id"] == s1
    assert client.post(f"{url}/9999/revert", headers=auth).json()["code"] == "SNAPSHOT_NOT_FOUND"

    dl = client.delete(f"{url}/{s1}", headers=auth).json()
    assert _sent(settings, dl["id"])["args"]["children"] is False
    _report(client, settings, agents[h1["id"]], dl["id"], result={"deleted": ["s1"]})
    tree = client.get(url, headers=auth).json()
    assert [n["name"] for n in tree["tree"]] == ["s2"] and tree["tree"][0]["parent_id"] is None  # re-parented


def test_full_clone_of_a_running_vm_copies_on_the_source_then_defines_on_the_target(env):
    client, auth, (h1, h2), agents, ds, settings = env
    vm = _vm(client, auth, agents, settings, h1, "web1", ds["shared"])
    r = client.post(f"/api/v1/vms/{vm['id']}/clone", headers=auth, json={"name": "web1-copy", "linked": True})
    assert r.status_code == 409 and r.json()["code"] == "LINKED_CLONE_NEEDS_POWERED_OFF"
    r = client.post(f"/api/v1/vms/{vm['id']}/clone", headers=auth, json={"name": "web1-copy", "host_id": h2["id"], "datastore_id": ds["local1"]["id"]})
    assert r.status_code == 409 and r.json()["code"] == "DATASTORE_NOT_MOUNTED"
    task = client.post(f"/api/v1/vms/{vm['id']}/clone", headers=auth, json={"name": "web1-copy", "host_id": h2["id"]}).json()
    assert task["host_id"] == h1["id"] and task["step"] == "copying"
    copy_cmd = _sent(settings, task["id"])
    assert copy_cmd["name"] == "vm.clone" and copy_cmd["host_id"] == h1["id"] and copy_cmd["args"]["linked"] is False
    clones = client.get("/api/v1/vms?name=web1-copy", headers=auth).json()["items"]
    assert clones[0]["status"] == "creating"
    _report(client, settings, agents[h1["id"]], task["id"], result={"files": {"vda": copy_cmd["args"]["disks"][0]["path"]}})
    task = client.get(f"/api/v1/tasks/{task['id']}", headers=auth).json()
    assert task["state"] == "running" and task["step"] == "defining" and task["host_id"] == h2["id"]
    define = _sent(settings, task["id"])
    assert define["name"] == "vm.create" and define["host_id"] == h2["id"]
    spec = define["args"]["spec"]
    assert spec["uuid"] != vm["libvirt_uuid"] and spec["disks"][0]["file"] == copy_cmd["args"]["disks"][0]["path"].rsplit("/", 1)[1]
    _report(client, settings, agents[h2["id"]], task["id"], domain={"uuid": spec["uuid"], "name": "web1-copy", "power_state": "poweredOff"})
    task = client.get(f"/api/v1/tasks/{task['id']}", headers=auth).json()
    assert task["state"] == "success"
    new = client.get(f"/api/v1/vms/{task['result']['clone_vm_id']}", headers=auth).json()
    assert new["status"] == "ready" and new["host_id"] == h2["id"] and new["libvirt_uuid"] != vm["libvirt_uuid"]


def test_linked_clone_and_promote_and_a_failed_clone_leaves_nothing(env):
    client, auth, (h1, h2), agents, ds, settings = env
    vm = _vm(client, auth, agents, settings, h1, "base1", ds["shared"], running=False)
    task = client.post(f"/api/v1/vms/{vm['id']}/clone", headers=auth, json={"name": "lc1", "linked": True, "host_id": h1["id"]}).json()
    disk = _sent(settings, task["id"])["args"]["disks"][0]
    assert disk["base_path"].startswith("/srv/shared/") and disk["path"].startswith("/srv/shared/lc1-")
    _report(client, settings, agents[h1["id"]], task["id"], result={"files": {"vda": disk["path"]}})
    _report(client, settings, agents[h1["id"]], task["id"])
    task = client.get(f"/api/v1/tasks/{task['id']}", headers=auth).json()
    new = client.get(f"/api/v1/vms/{task['result']['clone_vm_id']}", headers=auth).json()
    base = disk["base_path"].rsplit("/", 1)[1]
    assert new["disks"][0]["backing_file"] == base
    assert client.get(f"/api/v1/vms/{vm['id']}", headers=auth).json()["disks"][0]["backing_file"] == base
    pr = client.post(f"/api/v1/vms/{new['id']}/promote", headers=auth).json()
    _report(client, settings, agents[h1["id"]], pr["id"], result={"flattened": ["vda"]})
    assert client.get(f"/api/v1/vms/{new['id']}", headers=auth).json()["disks"][0]["backing_file"] is None
    assert client.post(f"/api/v1/vms/{new['id']}/promote", headers=auth).json()["code"] == "NOT_A_LINKED_CLONE"

    failing = client.post(f"/api/v1/vms/{vm['id']}/clone", headers=auth, json={"name": "lc2", "host_id": h1["id"]}).json()
    _report(client, settings, agents[h1["id"]], failing["id"], ok=False, error_code="QEMU_IMG_FAILED")
    assert client.get("/api/v1/vms?name=lc2", headers=auth).json()["total"] == 0
    assert client.get(f"/api/v1/tasks/{failing['id']}", headers=auth).json()["error_code"] == "QEMU_IMG_FAILED"


def test_backup_chain_retention_and_restore(env):
    client, auth, (h1, h2), agents, ds, settings = env
    vm = _vm(client, auth, agents, settings, h1, "db1", ds["shared"])
    jobs = f"/api/v1/vms/{vm['id']}/backup-jobs"
    for bad, code in (("../etc", "PATH_ESCAPES"), ("/etc", "PATH_ABSOLUTE")):
        r = client.post(jobs, headers=auth, json={"name": "nightly", "datastore_id": ds["shared"]["id"], "directory": bad})
        assert r.status_code == 422 and r.json()["code"] == code, r.text
    r = client.post(f"/api/v1/vms/{vm['id']}/backup-jobs", headers=auth, json={"name": "x", "datastore_id": 999, "directory": "b"})
    assert r.status_code == 422 and r.json()["code"] == "INVALID_REFERENCE"
    job = client.post(jobs, headers=auth, json={"name": "nightly", "datastore_id": ds["shared"]["id"], "directory": "backups/db1", "keep": 1, "full_every": 3})
    assert job.status_code == 201, job.text
    job = job.json()
    kinds, paths, checkpoints = [], [], []
    for i in range(4):
        task = client.post(f"{jobs}/{job['id']}/run", headers=auth).json()
        cmd = _sent(settings, task["id"])["args"]
        kinds.append("incremental" if cmd["incremental_from"] else "full")
        paths.append(cmd["disks"][0]["path"])
        checkpoints.append(cmd["checkpoint"])
        if i == 1:
            assert cmd["disks"][0]["parent_path"] == paths[0] and cmd["incremental_from"] == checkpoints[0]
        assert paths[-1].startswith("/srv/shared/backups/db1/db1-b")
        _report(client, settings, agents[h1["id"]], task["id"], result={"kind": kinds[-1], "checkpoint": cmd["checkpoint"], "files": {"vda": 1000 + i}})
        if i < 3:
            assert cmd["delete_after"] == []
        if i == 3:
            # Retention (keep 1): the fourth point is a full one; the first chain (1, 2, 3) goes,
            # while before, every point was needed by the newest one.
            assert cmd["delete_after"] == [paths[2], paths[1], paths[0]]
    assert kinds == ["full", "incremental", "incremental", "full"]
    points = client.get(f"/api/v1/vms/{vm['id']}/backups", headers=auth).json()
    assert [p["kind"] for p in points] == ["full"] and points[0]["size_bytes"] == 1003

    # A cancelled run: the point is failed, the task cancelled.
    task = client.post(f"{jobs}/{job['id']}/run", headers=auth).json()
    assert client.post(f"/api/v1/tasks/{task['id']}/cancel", headers=auth).status_code in (200, 202)
    assert client.get(f"/api/v1/tasks/{task['id']}", headers=auth).json()["state"] == "cancelled"

    point = points[0]
    r = client.post(f"/api/v1/vms/{vm['id']}/backups/{point['id']}/restore", headers=auth, json={"mode": "replace"})
    assert r.status_code == 409 and r.json()["code"] == "VM_POWERED_ON"
    r = client.post(f"/api/v1/vms/{vm['id']}/backups/{point['id']}/restore", headers=auth, json={"mode": "new"})
    assert r.status_code == 422 and r.json()["code"] == "INVALID"
    task = client.post(f"/api/v1/vms/{vm['id']}/backups/{point['id']}/restore", headers=auth, json={"mode": "new", "name": "db1-restored", "host_id": h2["id"]}).json()
    cmd = _sent(settings, task["id"])
    assert cmd["host_id"] == h2["id"] and cmd["args"]["disks"][0]["source"] == paths[3]
    assert cmd["args"]["spec"]["name"] == "db1-restored" and cmd["args"]["spec"]["uuid"] != vm["libvirt_uuid"]
    _report(client, settings, agents[h2["id"]], task["id"], result={"restored": [cmd["args"]["disks"][0]["path"]]})
    task = client.get(f"/api/v1/tasks/{task['id']}", headers=auth).json()
    assert task["state"] == "success"
    restored = client.get(f"/api/v1/vms/{task['result']['new_vm_id']}", headers=auth).json()
    assert restored["status"] == "ready" and restored["host_id"] == h2["id"]
    assert client.post(f"/api/v1/vms/{vm['id']}/backups/999/restore", headers=auth, json={"mode": "new", "name": "x"}).json()["code"] == "BACKUP_NOT_FOUND"


def test_scheduled_jobs_run_when_due(env):
    from vcenter.services.protection import backups

    client, auth, (h1, h2), agents, ds, settings = env
    vm = _vm(client, auth, agents, settings, h1, "app1", ds["shared"])
    client.post(f"/api/v1/vms/{vm['id']}/backup-jobs", headers=auth, json={"name": "often", "datastore_id": ds["shared"]["id"], "directory": "b", "interval_s": 3600})
    client.post(f"/api/v1/vms/{vm['id']}/backup-jobs", headers=auth, json={"name": "manual", "datastore_id": ds["shared"]["id"], "directory": "m"})
    with session_scope(settings.database_url) as session:
        first = backups.run_due(session, settings)
    assert len(first) == 1
    with session_scope(settings.database_url) as session:
        assert backups.run_due(session, settings) == []  # not due again, and the VM is busy
    task = client.get(f"/api/v1/tasks/{first[0]}", headers=auth).json()
    assert task["kind"] == "vm.backup" and task["username"] == "scheduler"


def test_a_reaped_clone_or_backup_leaves_no_half_made_rows(env):
    from datetime import timedelta

    from vcenter.core.clock import utcnow
    from vcenter.db.models import BackupPoint, Task
    from vcenter.services.housekeeping import reaper

    client, auth, (h1, h2), agents, ds, settings = env
    vm = _vm(client, auth, agents, settings, h1, "web9", ds["shared"], running=False)
    clone = client.post(f"/api/v1/vms/{vm['id']}/clone", headers=auth, json={"name": "web9-copy", "host_id": h1["id"]}).json()
    with session_scope(settings.database_url) as session:
        task = session.get(Task, clone["id"])
        task.state, task.attempts, task.lease_expires_at = "running", 99, utcnow() - timedelta(seconds=1)
    with session_scope(settings.database_url) as session:
        assert reaper.reap(session, settings)["lost"] == 1
    assert client.get(f"/api/v1/tasks/{clone['id']}", headers=auth).json()["error_code"] == "WORKER_LOST"
    assert client.get("/api/v1/vms?name=web9-copy", headers=auth).json()["total"] == 0
    job = client.post(f"/api/v1/vms/{vm['id']}/backup-jobs", headers=auth, json={"name": "j", "datastore_id": ds["shared"]["id"], "directory": "b"}).json()
    run = client.post(f"/api/v1/vms/{vm['id']}/backup-jobs/{job['id']}/run", headers=auth).json()
    with session_scope(settings.database_url) as session:
        task = session.get(Task, run["id"])
        task.state, task.attempts, task.lease_expires_at = "running", 99, utcnow() - timedelta(seconds=1)
    with session_scope(settings.database_url) as session:
        reaper.reap(session, settings)
    with session_scope(settings.database_url) as session:
        point_id = session.get(Task, run["id"]).params["point_id"]
        assert session.get(BackupPoint, point_id).state == "failed"


def test_a_customised_vm_gives_its_clone_a_new_identity_and_seed(env):
    from vcenter.db.models import VirtualDisk, VirtualMachine, VmCustomization
    from vcenter.services.library.templates import SEED_SUFFIX

    client, auth, (h1, h2), agents, ds, settings = env
    vm = _vm(client, auth, agents, settings, h1, "cust1", ds["shared"], running=False)
    with session_scope(settings.database_url) as session:
        session.add(VmCustomization(vm_id=vm["id"], instance_id="i-source", machine_id="a" * 32, hostname="cust1", spec={"hostname": "cust1"}))
        session.add(VirtualDisk(vm_id=vm["id"], index=1, datastore_id=ds["shared"]["id"], file=f"cust1{SEED_SUFFIX}", capacity_mib=1, format="raw"))
    task = client.post(f"/api/v1/vms/{vm['id']}/clone", headers=auth, json={"name": "cust2", "host_id": h2["id"]}).json()
    copy = _sent(settings, task["id"])
    assert [d["target"] for d in copy["args"]["disks"]] == ["vda"]  # the seed is not copied
    _report(client, settings, agents[h1["id"]], task["id"], result={"files": {}})
    define = _sent(settings, task["id"])
    assert define["name"] == "vm.deploy" and define["host_id"] == h2["id"] and define["args"]["clones"] == []
    assert define["args"]["seed"]["path"].startswith("/srv/shared/cust2-") and define["args"]["seed"]["path"].endswith(SEED_SUFFIX)
    with session_scope(settings.database_url) as session:
        clone = session.scalar(select(VirtualMachine).where(VirtualMachine.name == "cust2"))
        custom = session.get(VmCustomization, clone.id)
        assert custom.machine_id != "a" * 32 and custom.instance_id != "i-source" and custom.hostname == "cust2"


def test_a_vm_with_snapshots_is_not_migrated(env):
    client, auth, (h1, h2), agents, ds, settings = env
    vm = _vm(client, auth, agents, settings, h1, "snapvm", ds["shared"])
    t = client.post(f"/api/v1/vms/{vm['id']}/snapshots", headers=auth, json={"name": "s1"}).json()
    _report(client, settings, agents[h1["id"]], t["id"], result={"name": "s1", "parent": None, "state": "running", "memory": True})
    r = client.post(f"/api/v1/vms/{vm['id']}/migrate", headers=auth, json={"host_id": h2["id"]})
    assert r.status_code == 409 and r.json()["code"] == "VM_HAS_SNAPSHOTS", r.text


def test_a_restore_to_a_new_vm_gets_a_new_identity(env):
    """Restored as a new VM (the source may still run): new name, UUID and MAC addresses, and a
    guest identity of its own through a new seed (instance id, machine-id, hostname); the
    source's seed disk is not restored. An uncustomised source's restore gets a seed too."""
    from vcenter.db.models import VirtualDisk, VirtualMachine, VmCustomization
    from vcenter.services.library.templates import SEED_SUFFIX

    client, auth, (h1, h2), agents, ds, settings = env
    pg = client.post("/api/v1/portgroups", headers=auth, json={"name": "pg-r", "datacenter_id": ds["shared"]["datacenter_id"], "host_ids": [h1["id"], h2["id"]]}).json()
    for name, customised in (("idsrc", True), ("plainsrc", False)):
        task = client.post(
            "/api/v1/vms",
            headers=auth,
            json={"name": name, "host_id": h1["id"], "memory_mib": 128, "nics": [{"portgroup_id": pg["id"]}], "disks": [{"datastore_id": ds["shared"]["id"], "capacity_mib": 64}]},
        ).json()
        vm = finish_as_agent(client, settings, agents[h1["id"]], task)
        with session_scope(settings.database_url) as session:
            row = session.get(VirtualMachine, vm["id"])
            if customised:
                session.add(
                    VmCustomization(
                        vm_id=vm["id"],
                        instance_id=f"i-{name}",
                        machine_id="b" * 32,
                        hostname=name,
                        spec={"hostname": name, "users": [{"name": "ops", "ssh_authorized_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ ops"]}]},
                    )
                )
                session.add(VirtualDisk(vm_id=vm["id"], index=1, datastore_id=ds["shared"]["id"], file=f"{name}{SEED_SUFFIX}", capacity_mib=1, format="raw"))
            source_macs = {n.mac for n in row.nics}
            assert len(source_macs) == 1
        job = client.post(f"/api/v1/vms/{vm['id']}/backup-jobs", headers=auth, json={"name": "j", "datastore_id": ds["shared"]["id"], "directory": f"b/{name}"}).json()
        run = client.post(f"/api/v1/vms/{vm['id']}/backup-jobs/{job['id']}/run", headers=auth).json()
        cmd = _sent(settings, run["id"])["args"]
        _report(client, settings, agents[h1["id"]], run["id"], result={"kind": "full", "checkpoint": cmd["checkpoint"], "files": {d["target"]: 10 for d in cmd["disks"]}})
        (point,) = client.get(f"/api/v1/vms/{vm['id']}/backups", headers=auth).json()

        task = client.post(f"/api/v1/vms/{vm['id']}/backups/{point['id']}/restore", headers=auth, json={"mode": "new", "name": f"{name}-copy", "host_id": h2["id"]}).json()
        restore = _sent(settings, task["id"])
        args = restore["args"]
        assert restore["host_id"] == h2["id"]
        # Only the data disk is restored; the seed is a new file the agent writes.
        assert [d["source"].rsplit("/", 1)[1] for d in args["disks"]] == [f"{name}-b{point['id']}-disk0.qcow2"]
        assert args["seed"]["path"].startswith(f"/srv/shared/{name}-copy-") and args["seed"]["path"].endswith(SEED_SUFFIX)
        spec = args["spec"]
        assert spec["name"] == f"{name}-copy" and spec["uuid"] != vm["libvirt_uuid"]
        assert {n["mac"] for n in spec["nics"]}.isdisjoint(source_macs) and len(spec["nics"]) == len(source_macs)
        assert sorted((d["index"], d["file"].endswith(SEED_SUFFIX)) for d in spec["disks"]) == [(0, False), (1, True)]
        # The agent fetches the new VM's seed: its own instance id, machine-id and hostname.
        seed = client.get(f"/api/v1/agent/hosts/{h2['id']}/seeds/{spec['uuid']}", headers=agents[h2["id"]])
        assert seed.status_code == 200, seed.text
        with session_scope(settings.database_url) as session:
            new = session.scalar(select(VirtualMachine).where(VirtualMachine.name == f"{name}-copy"))
            custom = session.get(VmCustomization, new.id)
            assert custom.hostname == f"{name}-copy" and custom.instance_id != f"i-{name}" and len(custom.machine_id) == 32
            assert seed.json()["instance_id"] == custom.instance_id
            assert custom.machine_id in seed.json()["files"]["user-data"]
            if customised:
                assert custom.machine_id != "b" * 32 and custom.spec["users"][0]["name"] == "ops"
        _report(client, settings, agents[h2["id"]], task["id"], result={"restored": [args["disks"][0]["path"]], "seed": args["seed"]["path"]})
        done = client.get(f"/api/v1/tasks/{task['id']}", headers=auth).json()
        assert done["state"] == "success", done
        restored = client.get(f"/api/v1/vms/{done['result']['new_vm_id']}", headers=auth).json()
        assert restored["status"] == "ready" and restored["libvirt_uuid"] == spec["uuid"]
