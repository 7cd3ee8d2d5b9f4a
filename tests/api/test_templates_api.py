"""Templates, deploy, uploads and import through the API on both databases, with the host agent
played by the test (the lab test test_lab_templates.py runs the real agents and guests):
the commands carry no secret, the seed is fetched by the VM's own host only, linked clones
block their template's deletion (409 naming them), uploads are size-limited and checksummed,
user-given paths are refused before anything runs, cancel rolls the inventory back."""

from __future__ import annotations

import hashlib

import pytest
from fastapi.testclient import TestClient

from tests.apihelpers import app_for, command_id_of, login, make_admin, register_host


MANIFEST = {
    "schema": 1,
    "template_id": None,
    "name": "base",
    "version": 1,
    "guest_os": "linux",
    "hardware": {"vcpus": 1, "memory_mib": 96},
    "disks": [{"index": 0, "file": "disk0.qcow2", "format": "qcow2", "capacity_mib": 8, "size_bytes": 1, "sha256": "0" * 64}],
    "origin": {"kind": "vm"},
    "created_at": "2026-01-01T00:00:00+00:00",
}


@pytest.fixture
def env(settings, tmp_path):
    settings = settings.model_copy(update={"upload_dir": str(tmp_path / "uploads"), "upload_max_bytes": 4096})
    make_admin(settings)
    with TestClient(app_for(settings)) as client:
        auth = login(client)
        dc = client.post("/api/v1/datacenters", json={"name": "dc1"}, headers=auth).json()
        cl = client.post("/api/v1/clusters", json={"name": "cl1", "datacenter_id": dc["id"]}, headers=auth).json()
        hosts = {}
        for name in ("h1", "h2"):
            host, agent = register_host(client, auth, dc["id"], name, cluster_id=cl["id"])
            state = {"facts": {"hostname": name, "cpu_model": "x", "cpu_cores": 2, "cpu_mhz": 2000, "memory_mib": 4096, "hypervisor": "qemu"}, "domains": []}
            assert client.post(f"/api/v1/agent/hosts/{host['id']}/state", json=state, headers=agent).json()["accepted"]
            hosts[name] = (host, agent)
        ds = client.post("/api/v1/datastores", json={"name": "ds1", "datacenter_id": dc["id"], "url": "/srv/ds1", "host_ids": [h["id"] for h, _ in hosts.values()]}, headers=auth).json()
        yield {"client": client, "auth": auth, "settings": settings, "dc": dc, "cl": cl, "hosts": hosts, "ds": ds}


def _agent_of(env, host_id):
    return next(a for h, a in env["hosts"].values() if h["id"] == host_id)


def _finish(env, task, ok=True, result=None, error_code=None, domain=None):
    c = env["client"]
    cid = command_id_of(env["settings"], task["id"])
    agent = _agent_of(env, task["host_id"])
    body = {"command_id": cid, "ok": ok, "result": result or {}, "error_code": error_code, "domain": domain}
    r = c.post(f"/api/v1/agent/hosts/{task['host_id']}/tasks/{task['id']}/result", json=body, headers=agent)
    assert r.json() == {"applied": True}, r.text
    return c.get(f"/api/v1/tasks/{task['id']}", headers=env["auth"]).json()


def _command(env, task_id):
    from vcenter.db.models import Task
    from vcenter.db.session import session_scope

    with session_scope(env["settings"].database_url) as session:
        params = session.get(Task, task_id).params
        return params["command"], params["command_args"]


def _template(env, name="base"):
    """A ready template, made the real way: a VM converted to a template (agent played)."""
    c, auth = env["client"], env["auth"]
    h1 = env["hosts"]["h1"][0]
    task = c.post("/api/v1/vms", json={"name": f"{name}-src", "host_id": h1["id"], "memory_mib": 96, "disks": [{"datastore_id": env["ds"]["id"], "capacity_mib": 8}]}, headers=auth).json()
    vm = c.get(f"/api/v1/vms/{task['object_id']}", headers=auth).json()
    _finish(env, task, domain={"uuid": vm["libvirt_uuid"], "name": vm["name"], "power_state": "poweredOff"})
    r = c.post(f"/api/v1/vms/{vm['id']}/template", json={"name": name}, headers=auth)
    assert r.status_code == 202, r.text
    task = r.json()
    name_, args = _command(env, task["id"])
    assert name_ == "template.capture" and args["datastore_path"] == "/srv/ds1" and args["dir"].startswith(f"templates/{name}-v")
    template_id = task["params"]["template_id"] if "params" in task else None
    listed = c.get(f"/api/v1/templates?name={name}", headers=auth).json()
    assert listed[-1]["state"] == "creating"
    template_id = listed[-1]["id"]
    done = _finish(env, task, result={"manifest": {**MANIFEST, "template_id": template_id, "name": name}})
    assert done["state"] == "success"
    assert c.get(f"/api/v1/vms/{vm['id']}", headers=auth).status_code == 404  # the VM became the template
    t = c.get(f"/api/v1/templates/{template_id}", headers=auth).json()
    assert t["state"] == "ready" and t["disks"][0]["file"] == "disk0.qcow2"
    return t


def test_template_versions_deploy_linked_clone_and_delete_refused_while_in_use(env):
    c, auth = env["client"], env["auth"]
    t1 = _template(env)
    t2 = _template(env)
    assert (t1["version"], t2["version"]) == (1, 2)
    r = c.post(f"/api/v1/templates/{t1['id']}/verify", headers=auth)
    assert r.status_code == 202, r.text
    name, args = _command(env, r.json()["id"])
    assert name == "template.verify" and args["disks"] == [{"file": "disk0.qcow2", "sha256": "0" * 64}] and args["dir"] == t1["dir"]
    assert _finish(env, r.json(), ok=False, error_code="TEMPLATE_CHECKSUM_MISMATCH")["error_code"] == "TEMPLATE_CHECKSUM_MISMATCH"
    assert c.get(f"/api/v1/templates/{t1['id']}", headers=auth).json()["state"] == "ready"
    assert [t["id"] for t in c.get("/api/v1/templates?latest=true", headers=auth).json()] == [t2["id"]]
    secret_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@lab"
    body = {
        "name": "clone1",
        "cluster_id": env["cl"]["id"],
        "mode": "linked",
        "kernel_boot": {"image": "tiny-linux"},
        "customization": {"users": [{"name": "ops", "ssh_authorized_keys": [secret_key], "password_hash": "$6$saltsalt$abcdefghijkl"}], "runcmd": ["touch /x"]},
    }
    r = c.post(f"/api/v1/templates/{t2['id']}/deploy", json=body, headers=auth)
    assert r.status_code == 202, r.text
    task = r.json()
    assert task["placement"]["host"] in {str(h["id"]) for h, _ in env["hosts"].values()}  # placement chose
    name, args = _command(env, task["id"])
    assert name == "vm.deploy" and args["clones"][0]["mode"] == "linked"
    assert args["clones"][0]["source"] == f"/srv/ds1/{t2['dir']}/disk0.qcow2"
    assert "ops" not in str(args) and "$6$" not in str(args) and "AAAAC3" not in str(args)  # no secret on the queue
    vm = c.get(f"/api/v1/vms/{task['object_id']}", headers=auth).json()
    # The seed: only the VM's own host gets it.
    other = next((h, a) for h, a in env["hosts"].values() if h["id"] != task["host_id"])
    assert c.get(f"/api/v1/agent/hosts/{other[0]['id']}/seeds/{vm['libvirt_uuid']}", headers=other[1]).status_code == 403
    seed = c.get(f"/api/v1/agent/hosts/{task['host_id']}/seeds/{vm['libvirt_uuid']}", headers=_agent_of(env, task["host_id"])).json()
    assert secret_key in seed["files"]["user-data"] and "local-hostname: clone1" in seed["files"]["meta-data"]
    issued = c.get(f"/api/v1/vms/{vm['id']}/customization", headers=auth).json()
    assert issued["machine_id"] in seed["files"]["user-data"] and issued["instance_id"] == seed["instance_id"]
    assert _finish(env, task, domain={"uuid": vm["libvirt_uuid"], "name": vm["name"], "power_state": "poweredOff"})["state"] == "success"
    assert c.get(f"/api/v1/vms/{vm['id']}", headers=auth).json()["status"] == "ready"
    # A linked clone on another datastore is refused before anything runs.
    r = c.post(f"/api/v1/templates/{t2['id']}/deploy", json={**body, "name": "clone2", "datastore_id": 999}, headers=auth)
    assert r.status_code == 422 and r.json()["code"] == "LINKED_CLONE_OTHER_DATASTORE"
    # The template cannot go while the clone depends on it: 409 naming it.
    r = c.delete(f"/api/v1/templates/{t2['id']}", headers=auth)
    assert r.status_code == 409 and r.json()["code"] == "TEMPLATE_IN_USE" and "clone1" in r.json()["message"]
    assert r.json()["details"]["vms"] == [{"id": vm["id"], "name": "clone1"}]
    r = c.post(f"/api/v1/templates/{t2['id']}/vm", json={"host_id": task["host_id"]}, headers=auth)
    assert r.status_code == 409 and r.json()["code"] == "TEMPLATE_IN_USE"
    # t1 has no clone: it can be deleted.
    r = c.delete(f"/api/v1/templates/{t1['id']}", headers=auth)
    assert r.status_code == 202
    assert _finish(env, r.json())["state"] == "success"
    assert c.get(f"/api/v1/templates/{t1['id']}", headers=auth).status_code == 404
    # Once the clone is deleted, t2 may go back to being a VM.
    r = c.delete(f"/api/v1/vms/{vm['id']}", headers=auth)
    _finish(env, r.json())
    r = c.post(f"/api/v1/templates/{t2['id']}/vm", json={"name": "base-again", "host_id": task["host_id"]}, headers=auth)
    assert r.status_code == 202, r.text
    name, args = _command(env, r.json()["id"])
    assert name == "template.release" and args["moves"][0]["from"].endswith(f"{t2['dir']}/disk0.qcow2")
    done = _finish(env, r.json())
    assert done["state"] == "success" and c.get(f"/api/v1/templates/{t2['id']}", headers=auth).status_code == 404
    assert c.get(f"/api/v1/vms/{done['result']['vm_id']}", headers=auth).json()["name"] == "base-again"


def test_failed_or_cancelled_deploy_rolls_back(env):
    c, auth = env["client"], env["auth"]
    t = _template(env)
    h1 = env["hosts"]["h1"][0]
    task = c.post(f"/api/v1/templates/{t['id']}/deploy", json={"name": "c1", "host_id": h1["id"], "mode": "full"}, headers=auth).json()
    vm_id = task["object_id"]
    done = _finish(env, task, ok=False, error_code="CANCELLED")
    assert done["state"] == "cancelled"
    assert c.get(f"/api/v1/vms/{vm_id}", headers=auth).status_code == 404
    # Cancelled while still queued: the VM being deployed goes too, and the agent will not run it.
    task = c.post(f"/api/v1/templates/{t['id']}/deploy", json={"name": "c2", "host_id": h1["id"]}, headers=auth).json()
    assert c.post(f"/api/v1/tasks/{task['id']}/cancel", headers=auth).json()["state"] == "cancelled"
    assert c.get(f"/api/v1/vms/{task['object_id']}", headers=auth).status_code == 404
    cid = command_id_of(env["settings"], task["id"])
    r = c.post(f"/api/v1/agent/hosts/{h1['id']}/tasks/{task['id']}/progress", json={"command_id": cid, "step": "vm.deploy", "progress": 5}, headers=env["hosts"]["h1"][1])
    assert r.json()["proceed"] is False
    # A failed conversion to a template leaves the VM as it was and no template behind.
    src = c.post("/api/v1/vms", json={"name": "src9", "host_id": h1["id"], "memory_mib": 96, "disks": [{"datastore_id": env["ds"]["id"], "capacity_mib": 8}]}, headers=auth).json()
    vm = c.get(f"/api/v1/vms/{src['object_id']}", headers=auth).json()
    _finish(env, src, domain={"uuid": vm["libvirt_uuid"], "name": vm["name"], "power_state": "poweredOff"})
    before = {x["id"] for x in c.get("/api/v1/templates", headers=auth).json()}
    task = c.post(f"/api/v1/vms/{vm['id']}/template", json={"name": "broken"}, headers=auth).json()
    assert _finish(env, task, ok=False, error_code="DISK_NOT_FOUND")["state"] == "error"
    assert {x["id"] for x in c.get("/api/v1/templates", headers=auth).json()} == before
    assert c.get(f"/api/v1/vms/{vm['id']}", headers=auth).json()["status"] == "ready"


def test_uploads_are_limited_and_checksummed(env):
    c, auth = env["client"], env["auth"]
    data = b"x" * 1000
    r = c.post("/api/v1/uploads?filename=disk.vmdk", content=data, headers=auth)
    assert r.status_code == 201, r.text
    up = r.json()
    assert up["sha256"] == hashlib.sha256(data).hexdigest() and up["size_bytes"] == 1000
    r = c.post("/api/v1/uploads?filename=big.vmdk", content=b"y" * 5000, headers=auth)
    assert r.status_code == 413 and r.json()["code"] == "UPLOAD_TOO_LARGE"
    r = c.post(f"/api/v1/uploads?filename=d.vmdk&sha256={'0' * 64}", content=data, headers=auth)
    assert r.status_code == 422 and r.json()["code"] == "UPLOAD_CHECKSUM_MISMATCH"
    import os

    assert sorted(os.listdir(env["settings"].upload_dir)) == [os.path.basename(p) for p in [up and _upload_path(env, up["id"])]]
    # An agent pulls an upload only for a task of its own host.
    h1, a1 = env["hosts"]["h1"]
    assert c.get(f"/api/v1/agent/hosts/{h1['id']}/uploads/{up['id']}/content", headers=a1).status_code == 403
    task = c.post("/api/v1/imports/disk", json={"name": "imp1", "host_id": h1["id"], "datastore_id": env["ds"]["id"], "upload_id": up["id"], "format": "vmdk"}, headers=auth).json()
    name, args = _command(env, task["id"])
    assert name == "vm.import_disk" and args["upload"] == {"id": up["id"], "sha256": up["sha256"], "size_bytes": 1000}
    got = c.get(f"/api/v1/agent/hosts/{h1['id']}/uploads/{up['id']}/content", headers=a1)
    assert got.status_code == 200 and got.content == data
    h2, a2 = env["hosts"]["h2"]
    assert c.get(f"/api/v1/agent/hosts/{h2['id']}/uploads/{up['id']}/content", headers=a2).status_code == 403
    assert c.get(f"/api/v1/agent/hosts/{h1['id']}/uploads/{up['id']}/content", headers=a2).status_code == 401
    done = _finish(env, task, result={"capacity_mib": 42})
    assert done["state"] == "success" and c.get(f"/api/v1/vms/{task['object_id']}", headers=auth).json()["disks"][0]["capacity_mib"] == 42


def _upload_path(env, upload_id):

    from vcenter.db.models import Upload
    from vcenter.db.session import session_scope

    with session_scope(env["settings"].database_url) as session:
        return session.get(Upload, upload_id).path


@pytest.mark.parametrize("path,code", [("../../etc/passwd", "PATH_ESCAPES"), ("/etc/passwd", "PATH_ABSOLUTE"), ("a\\..\\b", "PATH_INVALID")])
def test_import_paths_never_leave_the_datastore(env, path, code):
    c, auth = env["client"], env["auth"]
    h1 = env["hosts"]["h1"][0]
    r = c.post("/api/v1/imports/disk", json={"name": "imp", "host_id": h1["id"], "datastore_id": env["ds"]["id"], "path": path}, headers=auth)
    assert r.status_code == 422 and r.json()["code"] == code and r.json()["details"]["field"] == "path"
    assert c.get("/api/v1/vms", headers=auth).json()["total"] == 0


def test_bad_customisation_is_refused(env):
    c, auth = env["client"], env["auth"]
    t = _template(env)
    for custom in (
        {"users": [{"name": "Root!"}]},
        {"users": [{"name": "a", "ssh_authorized_keys": ["not a key"]}]},
        {"users": [{"name": "a", "password": "clear"}]},
        {"runcmd": ["a\nb"]},
        {"hostname": "-bad-"},
    ):
        r = c.post(f"/api/v1/templates/{t['id']}/deploy", json={"name": "x", "host_id": env["hosts"]["h1"][0]["id"], "customization": custom}, headers=auth)
        assert r.status_code == 422, (custom, r.text)


def test_browse_validates_the_path_before_anything_runs(env):
    c, auth = env["client"], env["auth"]
    ds = env["ds"]["id"]
    for path, code in (("../../etc", "PATH_ESCAPES"), ("/etc", "PATH_ABSOLUTE")):
        r = c.post(f"/api/v1/datastores/{ds}/browse", json={"path": path}, headers=auth)
        assert r.status_code == 422 and r.json()["code"] == code
    r = c.post(f"/api/v1/datastores/{ds}/browse", json={"path": "./templates//"}, headers=auth)
    assert r.status_code == 202
    name, args = _command(env, r.json()["id"])
    assert name == "datastore.browse" and args == {"datastore_path": "/srv/ds1", "path": "templates"}
    listing = {"path": "templates", "entries": [{"name": "t-v1-1", "kind": "dir", "size_bytes": None}], "truncated": False}
    assert _finish(env, r.json(), result=listing)["result"] == listing
