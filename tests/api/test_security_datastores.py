"""Issue 15, finding 5: a datastore could be any folder of the hypervisor host (``/etc``, ``/``,
``/root``, ``/proc/self`` were accepted with 201; browse listed the host's /etc and the root
agent wrote HA heartbeat files into /etc/.vcenter-ha/).

Now a datastore lives below a datastore root: the API refuses others (422
DATASTORE_PATH_NOT_ALLOWED, nothing created), the server sends a host no datastore outside the
roots its agent reports, and the agent refuses again by itself: a command or an HA heartbeat
naming a path outside its roots touches nothing. Paths outside the roots are folders of
tmp_path here: the tests run as root, and the old code would really have written into /etc.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from tests.apihelpers import app_for, login, make_admin, register_host
from tests.conftest import REDIS_URL, make_settings
from vcenter.core.ids import new_uuid
from vcenter.messaging.contracts import Command
from workers.agent import commands
from workers.agent.ha import DIR, HaAgent


REFUSED_URLS = ["/etc", "/", "/root", "/proc/self", "/etc/", "//", "/srv/../etc", "/srv", "/srv2/ds1", "/var/lib/virtcenter/keys", "/tmp/ds1"]


@pytest.fixture
def client(settings):
    make_admin(settings)
    with TestClient(app_for(settings)) as c:
        yield c


@pytest.fixture
def auth(client):
    return login(client)


def _dc(client, auth):
    r = client.post("/api/v1/datacenters", json={"name": "dc1"}, headers=auth)
    assert r.status_code == 201, r.text
    return r.json()


def test_a_datastore_on_a_host_folder_outside_the_roots_is_refused_and_nothing_is_created(client, auth):
    dc = _dc(client, auth)
    host = client.post("/api/v1/hosts", json={"name": "h1", "datacenter_id": dc["id"]}, headers=auth).json()
    for n, url in enumerate(REFUSED_URLS):
        r = client.post("/api/v1/datastores", json={"name": f"evil{n}", "datacenter_id": dc["id"], "url": url, "host_ids": [host["id"]]}, headers=auth)
        assert r.status_code == 422, (url, r.status_code, r.text)
        body = r.json()
        assert body["code"] == "DATASTORE_PATH_NOT_ALLOWED" and body["details"]["field"] == "url" and body["details"]["reason"], (url, body)
    assert client.get("/api/v1/datastores", headers=auth).json()["total"] == 0
    events = client.get("/api/v1/events?limit=500", headers=auth).json()["items"]
    assert not [e for e in events if e["kind"] == "datastore.created"]

    # Below a root: accepted, in normal form (the trailing slash gone).
    r = client.post("/api/v1/datastores", json={"name": "ok1", "datacenter_id": dc["id"], "url": "/srv//ds1/", "host_ids": [host["id"]]}, headers=auth)
    assert r.status_code == 201, r.text
    assert r.json()["url"] == "/srv/ds1"


def test_the_server_roots_are_a_setting(tmp_path):
    settings = make_settings(tmp_path, datastore_roots="/data/stores")
    from vcenter.db.migrate import upgrade

    upgrade(settings.database_url)
    make_admin(settings)
    with TestClient(app_for(settings)) as client:
        auth = login(client)
        dc = _dc(client, auth)
        r = client.post("/api/v1/datastores", json={"name": "a", "datacenter_id": dc["id"], "url": "/srv/ds1"}, headers=auth)
        assert r.status_code == 422 and r.json()["details"]["reason"] == "outside_roots" and r.json()["details"]["roots"] == ["/data/stores"]
        assert client.post("/api/v1/datastores", json={"name": "b", "datacenter_id": dc["id"], "url": "/data/stores/ds1"}, headers=auth).status_code == 201


def test_a_host_is_not_sent_a_datastore_outside_the_roots_its_agent_reports(client, auth):
    dc = _dc(client, auth)
    host, agent = register_host(client, auth, dc["id"], "h1")
    ds = client.post("/api/v1/datastores", json={"name": "ds1", "datacenter_id": dc["id"], "url": "/srv/ds1", "host_ids": [host["id"]]}, headers=auth).json()

    def report(roots):
        facts = {"hostname": "h1", "cpu_cores": 2, "memory_mib": 4096, "hypervisor": "qemu", **({"datastore_roots": roots} if roots is not None else {})}
        r = client.post(f"/api/v1/agent/hosts/{host['id']}/state", json={"facts": facts, "domains": []}, headers=agent)
        assert r.status_code == 200 and r.json()["accepted"], r.text
        return r.json()["datastores"]

    def refusals():
        return [e for e in client.get("/api/v1/events?limit=500", headers=auth).json()["items"] if e["kind"] == "datastore.mount_refused"]

    assert report(["/var/lib/virtcenter/datastores"]) == []
    assert report(["/var/lib/virtcenter/datastores"]) == []
    refused = refusals()
    assert len(refused) == 1, refused  # named once, not on every report
    assert refused[0]["object_type"] == "host" and refused[0]["object_id"] == host["id"] and refused[0]["reason"] == "DATASTORE_PATH_NOT_ALLOWED"
    assert "/srv/ds1" in refused[0]["message"]
    # An agent whose roots cover it (or an agent that reports none) is sent the datastore.
    assert report(["/srv", "/etc"]) == [{"id": ds["id"], "path": "/srv/ds1"}]  # '/etc' is no root: ignored
    assert report(None) == [{"id": ds["id"], "path": "/srv/ds1"}]


def test_mounting_outside_the_roots_a_host_reported_is_refused_at_the_request(client, auth):
    dc = _dc(client, auth)
    host, agent = register_host(client, auth, dc["id"], "h1")
    facts = {"hostname": "h1", "cpu_cores": 2, "memory_mib": 4096, "hypervisor": "qemu", "datastore_roots": ["/var/lib/virtcenter/datastores"]}
    assert client.post(f"/api/v1/agent/hosts/{host['id']}/state", json={"facts": facts, "domains": []}, headers=agent).status_code == 200
    r = client.post("/api/v1/datastores", json={"name": "ds2", "datacenter_id": dc["id"], "url": "/srv/ds2", "host_ids": [host["id"]]}, headers=auth)
    assert (r.status_code, r.json()["code"], r.json()["details"]["field"]) == (422, "DATASTORE_PATH_NOT_ALLOWED", "host_ids"), r.text
    unmounted = client.post("/api/v1/datastores", json={"name": "ds3", "datacenter_id": dc["id"], "url": "/srv/ds3"}, headers=auth).json()
    r = client.patch(f"/api/v1/datastores/{unmounted['id']}", json={"host_ids": [host["id"]]}, headers=auth)
    assert (r.status_code, r.json()["code"]) == (422, "DATASTORE_PATH_NOT_ALLOWED"), r.text
    assert client.get(f"/api/v1/datastores/{unmounted['id']}", headers=auth).json()["host_ids"] == []
    ok = client.post("/api/v1/datastores", json={"name": "ds4", "datacenter_id": dc["id"], "url": "/var/lib/virtcenter/datastores/ds4", "host_ids": [host["id"]]}, headers=auth)
    assert ok.status_code == 201, ok.text


def test_a_datastore_never_holds_or_lies_inside_another_of_its_datacenter(client, auth):
    dc = _dc(client, auth)
    first = client.post("/api/v1/datastores", json={"name": "a", "datacenter_id": dc["id"], "url": "/srv/a"}, headers=auth)
    assert first.status_code == 201, first.text
    for n, url in enumerate(("/srv/a", "/srv/a/b", "/srv/a/b/c")):
        r = client.post("/api/v1/datastores", json={"name": f"n{n}", "datacenter_id": dc["id"], "url": url}, headers=auth)
        assert (r.status_code, r.json()["code"]) == (409, "DATASTORE_PATH_OVERLAPS"), (url, r.text)
    inner = client.post("/api/v1/datastores", json={"name": "inner", "datacenter_id": dc["id"], "url": "/mnt/x/inner"}, headers=auth)
    assert inner.status_code == 201
    outer = client.post("/api/v1/datastores", json={"name": "outer", "datacenter_id": dc["id"], "url": "/mnt/x"}, headers=auth)
    assert (outer.status_code, outer.json()["code"]) == (409, "DATASTORE_PATH_OVERLAPS"), outer.text
    # Siblings and look-alike prefixes are not overlaps.
    assert client.post("/api/v1/datastores", json={"name": "a2", "datacenter_id": dc["id"], "url": "/srv/a2"}, headers=auth).status_code == 201


# --- the agent refuses by itself ------------------------------------------------------------


class _Api:
    def __init__(self):
        self.results: list[dict] = []

    def post(self, path, body, retry_for=None):
        if path.endswith("/result"):
            self.results.append(body)
        return {"proceed": True}


class _Driver:
    def __init__(self):
        self.calls: list[tuple] = []

    def domain_state(self, uuid):
        return None

    def undefine(self, uuid, disks):
        self.calls.append(("undefine", uuid, list(disks)))


def _agent(tmp_path):
    root = tmp_path / "roots"
    (root / "ds1").mkdir(parents=True)
    outside = tmp_path / "host-etc"
    outside.mkdir()
    (outside / "shadow").write_text("secret")
    (root / "escape").symlink_to(outside)  # inside the roots by name, outside once resolved
    settings = make_settings(tmp_path, redis_url=REDIS_URL, agent_datastore_roots=str(root), agent_state_dir=str(tmp_path / "state"))
    agent = SimpleNamespace(settings=settings, host_id=7, api=_Api(), driver=_Driver(), driver_lock=threading.RLock(), command_gate=None)
    return agent, root, outside


def _run(agent, name, args):
    command = Command(command_id=new_uuid(), task_id=1, host_id=agent.host_id, name=name, args=args, issued_at=datetime.now(UTC))
    outcome = commands._execute(agent, command)
    assert outcome == {"ok": False}, outcome
    return agent.api.results[-1]


def test_the_agent_refuses_a_command_naming_a_path_outside_its_roots(tmp_path):
    agent, root, outside = _agent(tmp_path)
    for datastore_path in (str(outside), str(root / "escape"), "/etc", "/", "/proc/self"):
        result = _run(agent, "datastore.browse", {"datastore_path": datastore_path, "path": ""})
        assert result["error_code"] == "DATASTORE_PATH_NOT_ALLOWED" and not result["result"], result
    result = _run(agent, "vm.delete", {"uuid": "u1", "disks": [str(outside / "shadow")]})
    assert result["error_code"] == "DATASTORE_PATH_NOT_ALLOWED" and agent.driver.calls == []
    result = _run(agent, "vm.relocate", {"offline_step": "discard", "paths": [str(root / "escape" / "shadow")]})
    assert result["error_code"] == "DATASTORE_PATH_NOT_ALLOWED"
    result = _run(agent, "template.capture", {"uuid": "u1", "datastore_path": str(outside), "dir": "templates/t1", "meta": {"template_id": 1}, "disks": []})
    assert result["error_code"] == "DATASTORE_PATH_NOT_ALLOWED"
    result = _run(agent, "vm.export", {"uuid": "u1", "name": "x", "hardware": {}, "disks": [], "upload_id": 1, "workdir": str(outside / "export")})
    assert result["error_code"] == "DATASTORE_PATH_NOT_ALLOWED"
    # Nothing touched: the file is there, nothing was made next to it.
    assert (outside / "shadow").read_text() == "secret" and sorted(p.name for p in outside.iterdir()) == ["shadow"]


def test_the_agent_writes_ha_heartbeats_only_below_its_roots(tmp_path):
    agent, root, outside = _agent(tmp_path)
    agent._expected = {
        "datastores": [{"id": 1, "path": str(outside)}, {"id": 2, "path": str(root / "escape")}, {"id": 3, "path": "/etc"}, {"id": 4, "path": str(root / "ds1")}],
        "ha": {"enabled": True},
    }
    agent.stop_event = threading.Event()
    ha = HaAgent(agent)
    ha.write_heartbeats()
    ha.read_peers()
    assert not (outside / DIR).exists() and sorted(p.name for p in outside.iterdir()) == ["shadow"]
    assert (root / "ds1" / DIR / "host-7.json").exists()


def test_the_agent_provides_no_datastore_outside_its_roots(tmp_path):
    from workers.agent.service import AgentService

    agent, root, outside = _agent(tmp_path)
    pools = []
    service = AgentService.__new__(AgentService)
    service.settings, service.driver_lock = agent.settings, threading.RLock()
    service.driver = SimpleNamespace(ensure_pool=lambda name, path: pools.append(path))
    service.network = SimpleNamespace(ensure_portgroup=lambda pg: None)
    service._expected = {"datastores": [{"id": 1, "path": str(outside / "new")}, {"id": 2, "path": str(root / "escape" / "new")}, {"id": 3, "path": str(root / "ds2")}], "bridges": []}
    service._provide_expected()
    assert pools == [str(root / "ds2")] and (root / "ds2").is_dir()
    assert sorted(p.name for p in outside.iterdir()) == ["shadow"]
