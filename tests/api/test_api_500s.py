"""Requests that were answered 500 (issue 15, finding 7), each now a 4xx with a stable code or
a proper answer, on both databases: a PATCH that sends ``null`` for a field that cannot be
empty, the deletion of an orphaned VM whose host was removed by force, the audit export with a
time that has no zone (it answered 200 with an empty body after a traceback: a streamed
response validates before it starts), an OVA whose disk capacity no disk can have, and the
deletion of a datastore that a backup job still uses (the database's RESTRICT refused it)."""

from __future__ import annotations

import hashlib
import json

import pytest
from fastapi.testclient import TestClient

from templates_store.ova import write_ova
from templates_store.ovf import build_ovf
from tests.apihelpers import app_for, finish_as_agent, login, make_admin, register_host
from vcenter.db.models import Host
from vcenter.db.session import session_scope
from vcenter.services.orchestration.reports import mark_host_heartbeat


FACTS = {"hostname": "h1", "cpu_model": "Skylake", "cpu_cores": 4, "cpu_mhz": 2000, "memory_mib": 8192, "hypervisor": "qemu"}


@pytest.fixture
def ctx(settings):
    make_admin(settings)
    with TestClient(app_for(settings)) as client:
        auth = login(client)
        dc = client.post("/api/v1/datacenters", json={"name": "dc"}, headers=auth).json()
        cl = client.post("/api/v1/clusters", json={"name": "cl", "datacenter_id": dc["id"]}, headers=auth).json()
        yield client, auth, dc, cl, settings


def _host_with_vm(client, auth, dc, cl, settings, name="h1"):
    host, agent = register_host(client, auth, dc["id"], name, cluster_id=cl["id"] if cl else None)
    assert client.post(f"/api/v1/agent/hosts/{host['id']}/state", json={"facts": {**FACTS, "hostname": name}, "domains": []}, headers=agent).status_code == 200
    task = client.post("/api/v1/vms", headers=auth, json={"name": f"vm-{name}", "host_id": host["id"], "memory_mib": 64}).json()
    return host, agent, finish_as_agent(client, settings, agent, task)


def test_patch_of_a_rule_with_null_members_is_a_422(ctx):
    client, auth, dc, cl, settings = ctx
    host, _agent, vm = _host_with_vm(client, auth, dc, cl, settings)
    rule = client.post(f"/api/v1/clusters/{cl['id']}/rules", headers=auth, json={"name": "r1", "kind": "run-on", "vm_ids": [vm["id"]], "host_ids": [host["id"]]}).json()
    for field in ("vm_ids", "host_ids", "name", "mandatory", "enabled"):
        r = client.patch(f"/api/v1/clusters/{cl['id']}/rules/{rule['id']}", headers=auth, json={field: None})
        assert r.status_code == 422 and r.json()["code"] == "INVALID" and r.json()["details"]["field"] == field, (field, r.status_code, r.text)
    after = client.get(f"/api/v1/clusters/{cl['id']}/rules/{rule['id']}", headers=auth).json()
    assert (after["vm_ids"], after["host_ids"], after["name"], after["version"]) == ([vm["id"]], [host["id"]], "r1", rule["version"])


def test_an_orphaned_vm_whose_host_was_removed_is_deleted_from_the_inventory(ctx):
    client, auth, dc, _cl, settings = ctx
    host, _agent, vm = _host_with_vm(client, auth, dc, None, settings, "dead")
    with session_scope(settings.database_url) as session:
        mark_host_heartbeat(session, session.get(Host, host["id"]), alive=False)
    assert client.delete(f"/api/v1/hosts/{host['id']}?force=true", headers=auth).status_code == 204
    orphan = client.get(f"/api/v1/vms/{vm['id']}", headers=auth).json()
    assert (orphan["status"], orphan["host_id"]) == ("orphaned", None)

    # Anything that needs its host says so.
    r = client.post(f"/api/v1/vms/{vm['id']}/power/on", headers=auth)
    assert r.status_code == 409 and r.json()["code"] in ("VM_HAS_NO_HOST", "INVALID_STATE", "VM_NOT_READY"), r.text

    r = client.delete(f"/api/v1/vms/{vm['id']}", headers=auth)
    assert r.status_code == 202, r.text
    task = client.get(f"/api/v1/tasks/{r.json()['id']}", headers=auth).json()
    assert (task["kind"], task["state"]) == ("vm.delete", "success")
    assert client.get(f"/api/v1/vms/{vm['id']}", headers=auth).status_code == 404
    events = client.get("/api/v1/events?limit=200", headers=auth).json()["items"]
    assert any(e["kind"] == "vm.deleted" and e["object_id"] == vm["id"] for e in events)


def test_audit_export_refuses_a_time_without_zone_before_streaming(ctx):
    client, auth, _dc, _cl, _settings = ctx
    for since in ("2026-01-01T00:00:00", "2026-01-01 00:00", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
        r = client.get("/api/v1/events/export", params={"since": since}, headers=auth)
        assert r.status_code == 422 and r.json()["code"] == "INVALID", (since, r.status_code, r.text)
    r = client.get("/api/v1/events/export", params={"since": "2000-01-01T00:00:00+02:00"}, headers=auth)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    kinds = [json.loads(line)["kind"] for line in r.text.splitlines()]
    assert "datacenter.created" in kinds, kinds


@pytest.mark.parametrize("capacity_bytes", [2**70, 2**63, (16 << 40) + 1])
def test_ova_whose_disk_no_disk_can_be_is_a_422(ctx, tmp_path, capacity_bytes):
    client, auth, dc, cl, settings = ctx
    _host_with_vm(client, auth, dc, cl, settings)
    ds = client.post("/api/v1/datastores", headers=auth, json={"name": "ds1", "datacenter_id": dc["id"], "url": "/srv/ds1"}).json()
    disk = tmp_path / "big-disk1.vmdk"
    disk.write_bytes(b"\0" * 512)
    ovf = build_ovf(name="big", vcpus=1, memory_mib=64, guest_os="linux", disks=[{"file": disk.name, "size": 512, "capacity_bytes": capacity_bytes}])
    ova = tmp_path / "big.ova"
    write_ova(str(ova), "big.ovf", ovf, [(disk.name, str(disk))])
    data = ova.read_bytes()
    upload = client.post(f"/api/v1/uploads?filename=big.ova&sha256={hashlib.sha256(data).hexdigest()}", content=data, headers=auth)
    assert upload.status_code == 201, upload.text
    r = client.get(f"/api/v1/uploads/{upload.json()['id']}/appliance", headers=auth)
    assert r.status_code == 422 and r.json()["code"] in ("OVF_INVALID", "OVF_UNSUPPORTED"), r.text
    r = client.post("/api/v1/imports/ova", headers=auth, json={"upload_id": upload.json()["id"], "datastore_id": ds["id"], "name": "big", "cluster_id": cl["id"]})
    assert r.status_code == 422 and r.json()["code"] in ("OVF_INVALID", "OVF_UNSUPPORTED"), r.text


def test_patch_of_a_backup_job_with_null_is_a_422(ctx):
    client, auth, dc, cl, settings = ctx
    host, _agent, vm = _host_with_vm(client, auth, dc, cl, settings)
    ds = client.post("/api/v1/datastores", headers=auth, json={"name": "ds1", "datacenter_id": dc["id"], "url": "/srv/ds1", "host_ids": [host["id"]]}).json()
    job = client.post(f"/api/v1/vms/{vm['id']}/backup-jobs", headers=auth, json={"name": "nightly", "datastore_id": ds["id"], "directory": "backups", "keep": 3})
    assert job.status_code == 201, job.text
    for field in ("keep", "incremental", "full_every", "enabled"):
        r = client.patch(f"/api/v1/vms/{vm['id']}/backup-jobs/{job.json()['id']}", headers=auth, json={field: None})
        assert r.status_code == 422 and r.json()["details"]["field"] == field, (field, r.status_code, r.text)
    # interval_s may be null: on demand only.
    r = client.patch(f"/api/v1/vms/{vm['id']}/backup-jobs/{job.json()['id']}", headers=auth, json={"interval_s": None})
    assert r.status_code == 200 and r.json()["interval_s"] is None and r.json()["keep"] == 3, r.text


def test_delete_of_a_datastore_a_backup_job_uses_is_a_409(ctx):
    client, auth, dc, cl, settings = ctx
    host, _agent, vm = _host_with_vm(client, auth, dc, cl, settings)
    ds = client.post("/api/v1/datastores", headers=auth, json={"name": "ds1", "datacenter_id": dc["id"], "url": "/srv/ds1", "host_ids": [host["id"]]}).json()
    job = client.post(f"/api/v1/vms/{vm['id']}/backup-jobs", headers=auth, json={"name": "nightly", "datastore_id": ds["id"], "directory": "backups"})
    assert job.status_code == 201, job.text
    r = client.delete(f"/api/v1/datastores/{ds['id']}", headers=auth)
    assert r.status_code == 409 and r.json()["code"] == "DATASTORE_IN_USE" and r.json()["details"] == {"used_by": "backup_jobs"}, r.text
    assert client.get(f"/api/v1/datastores/{ds['id']}", headers=auth).status_code == 200
