"""The vSphere-compatible API in process (issue 19, items 1-3, 5): sessions on our users and
sessions, identifiers, inventory reads with vSphere's filters, errors in vSphere's format; every
answer of every test here validates against the upstream specification (tests/vsphere_spec.py).
"""

from __future__ import annotations

import types
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.apihelpers import app_for, login, make_admin
from tests.vsphere_spec import problems
from tests.vsphere_world import ADMIN, AUDITOR, NOBODY, basic, seed
from vcenter.api.app import create_app

HTTPS = "https://testserver"


class Vsphere:
    """A vSphere client over a TestClient: the session header, and every answer checked
    against the specification as it arrives."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.session: str | None = None

    def login(self, user: tuple[str, str]) -> "Vsphere":
        r = self.request("POST", "/api/session", headers=basic(user))
        assert r.status_code == 201, r.text
        self.session = r.json()
        return self

    def request(self, method: str, path: str, **kw: Any) -> Any:
        headers = {**({"vmware-api-session-id": self.session} if self.session else {}), **kw.pop("headers", {})}
        r = self.client.request(method, path, headers=headers, **kw)
        body = r.json() if r.content else None
        if r.status_code != 204 and not (method == "DELETE" and r.status_code == 200):
            found = problems(method, path + ("?" + str(r.request.url.query.decode()) if r.request.url.query else ""), r.status_code, body)
            assert not found, (method, path, r.status_code, body, found)
        return r

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def ok(self, path: str, **params: Any) -> Any:
        r = self.get(path, **params)
        assert r.status_code == 200, (path, params, r.status_code, r.text)
        return r.json()

    def refused(self, path: str, status: int, error_type: str, **params: Any) -> dict[str, Any]:
        r = self.get(path, **params)
        assert r.status_code == status and r.json()["error_type"] == error_type, (path, params, r.status_code, r.text)
        return r.json()


@pytest.fixture
def world(settings):
    make_admin(settings, *ADMIN)
    with TestClient(app_for(settings), base_url=HTTPS) as client:
        w = seed(client, settings)
        yield types.SimpleNamespace(client=client, settings=settings, ids=w.ids, admin=Vsphere(client).login(ADMIN), auditor=Vsphere(client).login(AUDITOR))


def names(items: list[dict[str, Any]]) -> list[str]:
    return sorted(i["name"] for i in items)


# --- item 1: sessions ----------------------------------------------------------------------------
def test_sessions_on_both_paths_read_and_end(world):
    vs = Vsphere(world.client)
    r = vs.request("POST", "/rest/com/vmware/cis/session", headers=basic(ADMIN))
    assert r.status_code == 200 and isinstance(r.json()["value"], str)
    vs.session = r.json()["value"]
    info = vs.ok("/api/session")
    assert info["user"] == "admin" and info["created_time"].endswith("Z")
    r = vs.request("POST", "/rest/com/vmware/cis/session?~action=get")
    assert r.status_code == 200 and r.json()["value"]["user"] == "admin"
    assert vs.request("DELETE", "/rest/com/vmware/cis/session").status_code == 200
    assert vs.refused("/api/session", 401, "UNAUTHENTICATED")
    assert vs.refused("/api/vcenter/datacenter", 401, "UNAUTHENTICATED")

    other = Vsphere(world.client).login(AUDITOR)
    assert other.ok("/api/session")["user"] == "auditor"
    assert other.request("DELETE", "/api/session").status_code == 204
    assert other.refused("/api/vcenter/vm", 401, "UNAUTHENTICATED")


def test_logins_are_ours_password_lockout_and_audit(world):
    vs = Vsphere(world.client)
    for header in ({}, {"Authorization": "Basic !!!"}, {"Authorization": "Basic " + "QQ==" * 1000}, {"Authorization": "Bearer x"}):
        r = vs.request("POST", "/api/session", headers=header)
        assert r.status_code == 401 and r.json()["error_type"] == "UNAUTHENTICATED", (header, r.text)
    limit = world.settings.login_lockout_failures
    for _ in range(limit):
        r = vs.request("POST", "/api/session", headers=basic(("nobody", "wrong-password")))
        assert r.status_code == 401 and r.json()["messages"][0]["id"] == "virtcenter.BAD_CREDENTIALS", r.text
    # locked out now, even with the right password (our lockout, the same for /api/v1)
    r = vs.request("POST", "/rest/com/vmware/cis/session", headers=basic(NOBODY))
    assert r.status_code == 401 and r.json()["messages"][0]["id"] == "virtcenter.LOCKED_OUT", r.text
    assert world.client.post("/api/v1/session", json={"username": NOBODY[0], "password": NOBODY[1]}).json()["code"] == "LOCKED_OUT"

    admin = login(world.client, *ADMIN)
    events = world.client.get("/api/v1/events", headers=admin, params={"limit": 500}).json()["items"]
    kinds = [e["kind"] for e in events if e.get("username") in ("admin", "nobody")]
    assert "session.login" in kinds and "session.login_failed" in kinds and "session.login_locked" in kinds, kinds
    refused = world.client.get("/api/v1/audit/refused-credentials", headers=admin, params={"credential": "password"}).json()["items"]
    assert sum(r["count"] for r in refused) >= limit + 1


def test_a_session_holds_across_api_replicas(world):
    """Two applications on the same database (two replicas): a session made on one is valid on
    the other, and its logout there ends it on both."""
    replica = create_app(world.settings)
    with TestClient(replica, base_url=HTTPS) as other_client:
        other = Vsphere(other_client)
        other.session = world.admin.session
        assert other.ok("/api/session")["user"] == "admin"
        assert other.request("DELETE", "/api/session").status_code == 204
    assert world.admin.refused("/api/session", 401, "UNAUTHENTICATED")


def test_plain_http_is_refused_before_any_credential_is_read(world):
    plain = TestClient(world.client.app, base_url="http://testserver")
    admin = login(world.client, *ADMIN)
    before = [e for e in world.client.get("/api/v1/events", headers=admin, params={"limit": 500}).json()["items"] if e["kind"] == "session.login"]
    for method, path in (("POST", "/rest/com/vmware/cis/session"), ("POST", "/api/session"), ("GET", "/api/session"), ("DELETE", "/api/session"), ("GET", "/api/vcenter/vm")):
        r = plain.request(method, path, headers={**basic(ADMIN), "vmware-api-session-id": world.admin.session})
        assert r.status_code == 400, (method, path, r.status_code, r.text)
        body = r.json()
        assert body["error_type"] == "INVALID_REQUEST" and "HTTPS only" in body["messages"][0]["default_message"], body
        assert not problems(method, path, 400, body)
    after = [e for e in world.client.get("/api/v1/events", headers=admin, params={"limit": 500}).json()["items"] if e["kind"] == "session.login"]
    assert len(after) == len(before)  # no login over plain HTTP
    # a TLS-terminating proxy we trust: its X-Forwarded-Proto is the scheme
    assert plain.get("/api/session", headers={"vmware-api-session-id": world.admin.session, "X-Forwarded-Proto": "https"}).status_code == 400


# --- item 2: identifiers ---------------------------------------------------------------------------
def test_ids_are_vsphere_names_of_our_ids(world):
    vs, ids = world.admin, world.ids
    dc = ids["dc1"]
    assert vs.ok("/api/vcenter/datacenter", names="dc1") == [{"datacenter": f"datacenter-{dc}", "name": "dc1"}]
    assert vs.ok(f"/api/vcenter/datacenter/datacenter-{dc}") == {
        "name": "dc1",
        "vm_folder": f"group-v{2 * dc}",
        "host_folder": f"group-h{2 * dc}",
        "datastore_folder": f"group-s{2 * dc}",
        "network_folder": f"group-n{2 * dc}",
    }
    assert vs.ok(f"/api/vcenter/cluster/domain-c{ids['cluster1']}") == {"name": "cluster1", "resource_pool": f"resgroup-{ids['Resources']}"}
    folders = {f["folder"]: f for f in vs.ok("/api/vcenter/folder")}
    assert folders["group-d1"] == {"folder": "group-d1", "name": "Datacenters", "type": "DATACENTER"}
    assert folders[f"group-v{2 * dc}"] == {"folder": f"group-v{2 * dc}", "name": "vm", "type": "VIRTUAL_MACHINE"}
    assert folders[f"group-v{2 * ids['prod'] + 1}"]["name"] == "prod"
    pools = {p["resource_pool"]: p["name"] for p in vs.ok("/api/vcenter/resource-pool")}
    assert pools == {f"resgroup-{ids['Resources']}": "Resources", f"resgroup-{ids['pool1']}": "pool1", f"resgroup-{ids['pool1-child']}": "pool1-child"}
    assert vs.ok(f"/api/vcenter/vm/vm-{ids['web1']}")["name"] == "web1"
    assert vs.ok(f"/api/vcenter/host/host-{ids['esx1']}")["name"] == "esx1"
    assert vs.ok(f"/api/vcenter/datastore/datastore-{ids['shared1']}")["name"] == "shared1"
    assert vs.ok(f"/api/vcenter/network/network-{ids['vm-network']}")["name"] == "vm-network"


def test_a_non_canonical_id_is_refused_never_read_as_another(world):
    vs, vm = world.admin, world.ids["web1"]
    s = str(vm)
    spellings = [f"vm-+{s}", f"vm-0{s}", f"vm-{s[:-1]}_{s[-1]}" if len(s) > 1 else f"vm-0_{s}", f"vm- {s}", f"vm-{s}.0", "vm-\u0661", f"VM-{s}", f"vm{s}", f"vm--{s}", f"vm-{2**31}"]
    for spelling in spellings:
        body = vs.refused(f"/api/vcenter/vm/{spelling}", 400, "INVALID_ARGUMENT")
        assert body["messages"][0]["id"] == "virtcenter.INVALID_ID", body
        vs.refused("/api/vcenter/vm", 400, "INVALID_ARGUMENT", vms=spelling)
    for path, spelling in (("datacenter", "datacenter-01"), ("cluster", "domain-c+1"), ("folder", "group-v01"), ("resource-pool", "resgroup-1_0"), ("host", "host-1e0")):
        vs.refused(f"/api/vcenter/{path}/{spelling}", 400, "INVALID_ARGUMENT")
    # the wrong kind's prefix names nothing of this kind
    vs.refused(f"/api/vcenter/vm/host-{world.ids['esx1']}", 400, "INVALID_ARGUMENT")
    vs.refused("/api/vcenter/vm/vm-999999", 404, "NOT_FOUND")
    vs.refused("/api/vcenter/folder/group-d2", 404, "NOT_FOUND")
    vs.refused("/api/vcenter/resource-pool/resgroup-99999", 404, "NOT_FOUND")


# --- item 3: reads and filters ---------------------------------------------------------------------
def test_lists_with_vsphere_filters(world):
    vs, ids = world.admin, world.ids
    dc1, dc2 = f"datacenter-{ids['dc1']}", f"datacenter-{ids['dc2']}"
    host_folder = f"group-h{2 * ids['dc1']}"
    vm_folder = f"group-v{2 * ids['dc1']}"
    cluster = f"domain-c{ids['cluster1']}"
    assert names(vs.ok("/api/vcenter/datacenter")) == ["dc1", "dc2"]
    assert names(vs.ok("/api/vcenter/datacenter", folders="group-d1", names=["dc1", "nope"])) == ["dc1"]
    assert vs.ok("/api/vcenter/datacenter", folders=vm_folder) == []
    assert vs.ok("/api/vcenter/cluster", datacenters=dc1, folders=host_folder, names="cluster1") == [{"cluster": cluster, "name": "cluster1", "ha_enabled": False, "drs_enabled": False}]
    hosts = vs.ok("/api/vcenter/host", datacenters=dc1)
    assert names(hosts) == ["esx1", "esx2", "esx3"] and all(h["connection_state"] == "CONNECTED" and h["power_state"] == "POWERED_ON" for h in hosts)
    assert names(vs.ok("/api/vcenter/host", folders=host_folder, clusters=cluster)) == ["esx1", "esx2"]
    assert names(vs.ok("/api/vcenter/host", standalone="true")) == ["esx3", "esx9"]
    assert vs.ok("/api/vcenter/host", connection_states="DISCONNECTED") == []
    datastores = vs.ok("/api/vcenter/datastore", datacenters=dc1, types="VMFS")
    assert names(datastores) == ["scratch", "shared1"]
    assert vs.ok("/api/vcenter/datastore", types="NFS") == []
    assert names(vs.ok("/api/vcenter/network", folders=f"group-n{2 * ids['dc1']}", types="STANDARD_PORTGROUP")) == ["vm-network"]
    assert vs.ok("/api/vcenter/network", types="DISTRIBUTED_PORTGROUP") == []
    assert names(vs.ok("/api/vcenter/folder", datacenters=dc1, names="vm")) == ["vm"]
    assert names(vs.ok("/api/vcenter/folder", parent_folders=vm_folder)) == ["prod"]
    assert names(vs.ok("/api/vcenter/folder", type="VIRTUAL_MACHINE", datacenters=[dc1, dc2])) == ["prod", "vm", "vm"]
    assert names(vs.ok("/api/vcenter/resource-pool", clusters=cluster, names="Resources")) == ["Resources"]
    assert names(vs.ok("/api/vcenter/resource-pool", parent_resource_pools=f"resgroup-{ids['Resources']}")) == ["pool1"]
    assert names(vs.ok("/api/vcenter/resource-pool", hosts=f"host-{ids['esx1']}", parent_resource_pools=f"resgroup-{ids['pool1']}")) == ["pool1-child"]
    # VMs: containment, hosts, clusters, power states
    assert names(vs.ok("/api/vcenter/vm", datacenters=dc1)) == ["db1", "web1", "web2"]
    assert names(vs.ok("/api/vcenter/vm", folders=vm_folder)) == ["db1", "web1", "web2"]  # anywhere below
    assert names(vs.ok("/api/vcenter/vm", folders=f"group-v{2 * ids['prod'] + 1}")) == ["web2"]
    assert names(vs.ok("/api/vcenter/vm", resource_pools=f"resgroup-{ids['Resources']}")) == ["web1", "web2"]
    assert names(vs.ok("/api/vcenter/vm", resource_pools=f"resgroup-{ids['pool1']}")) == ["web2"]
    assert names(vs.ok("/api/vcenter/vm", hosts=f"host-{ids['esx3']}")) == ["db1"]
    assert names(vs.ok("/api/vcenter/vm", clusters=cluster, power_states="POWERED_ON")) == ["web1"]
    assert names(vs.ok("/api/vcenter/vm", **{"filter.names": "web1"})) == ["web1"]  # vSphere 6.7's spelling
    assert vs.ok("/api/vcenter/vm", names="web*") == []  # names are exact, not patterns
    web1 = vs.ok("/api/vcenter/vm", names="web1")[0]
    assert web1 == {"vm": f"vm-{ids['web1']}", "name": "web1", "power_state": "POWERED_ON", "cpu_count": 2, "memory_size_MiB": 256}


def test_one_vm_as_vsphere_describes_it(world):
    vs, ids = world.admin, world.ids
    info = vs.ok(f"/api/vcenter/vm/vm-{ids['web1']}")
    assert info["power_state"] == "POWERED_ON" and info["guest_OS"] == "OTHER_LINUX_64"
    assert info["cpu"]["count"] == 2 and info["memory"]["size_MiB"] == 256
    (disk,) = info["disks"].values()
    assert disk["capacity"] == 1024 * 1024 * 1024 and disk["backing"]["vmdk_file"].startswith("[shared1] ")
    (nic,) = info["nics"].values()
    assert nic["backing"] == {"type": "STANDARD_PORTGROUP", "network": f"network-{ids['vm-network']}", "network_name": "vm-network"} and nic["state"] == "CONNECTED"
    ds = vs.ok(f"/api/vcenter/datastore/datastore-{ids['shared1']}")
    assert ds["accessible"] is True and ds["multiple_host_access"] is True
    pool = vs.ok(f"/api/vcenter/resource-pool/resgroup-{ids['pool1']}")
    assert pool["resource_pools"] == [f"resgroup-{ids['pool1-child']}"] and pool["cpu_allocation"]["limit"] == -1
    root = vs.ok(f"/api/vcenter/resource-pool/resgroup-{ids['Resources']}")
    assert root["name"] == "Resources" and root["resource_pools"] == [f"resgroup-{ids['pool1']}"]


def test_a_vms_power_state_and_hardware_read_as_pieces_of_its_info(world):
    vs, ids = world.admin, world.ids
    vm = f"/api/vcenter/vm/vm-{ids['web1']}"
    info = vs.ok(vm)
    assert vs.ok(f"{vm}/power") == {"state": "POWERED_ON"}
    for part in ("hardware", "cpu", "memory", "boot"):
        assert vs.ok(f"{vm}/hardware" + ("" if part == "hardware" else f"/{part}")) == info[part]
    assert vs.ok(f"{vm}/hardware/disk") == [{"disk": "2000"}] and vs.ok(f"{vm}/hardware/disk/2000") == info["disks"]["2000"]
    assert vs.ok(f"{vm}/hardware/ethernet") == [{"nic": "4000"}] and vs.ok(f"{vm}/hardware/ethernet/4000") == info["nics"]["4000"]
    vs.refused(f"{vm}/hardware/disk/2001", 404, "NOT_FOUND")
    vs.refused(f"{vm}/hardware/ethernet/x", 404, "NOT_FOUND")
    vs.refused("/api/vcenter/vm/vm-999999/power", 404, "NOT_FOUND")
    vs.refused("/api/vcenter/vm/vm-01/hardware/cpu", 400, "INVALID_ARGUMENT")
    world.auditor.refused(f"/api/vcenter/vm/vm-{ids['web2']}/hardware/memory", 403, "UNAUTHORIZED")
    r = world.client.post(f"{vm}/power?action=stop", headers={"vmware-api-session-id": vs.session})
    assert r.status_code == 404 and r.json()["error_type"] == "OPERATION_NOT_FOUND", r.text  # the next stage


def test_lists_show_what_the_caller_may_see_gets_refuse_the_rest(world):
    vs, ids = world.auditor, world.ids
    assert names(vs.ok("/api/vcenter/datacenter")) == ["dc1"]
    assert names(vs.ok("/api/vcenter/vm")) == ["db1", "web1"]
    assert names(vs.ok("/api/vcenter/host")) == ["esx1", "esx2", "esx3"]
    vs.refused(f"/api/vcenter/vm/vm-{ids['web2']}", 403, "UNAUTHORIZED")
    vs.refused(f"/api/vcenter/datacenter/datacenter-{ids['dc2']}", 403, "UNAUTHORIZED")
    vs.refused(f"/api/vcenter/folder/group-v{2 * ids['dc2']}", 403, "UNAUTHORIZED")
    nobody = Vsphere(world.client).login(NOBODY)
    assert nobody.ok("/api/vcenter/vm") == [] and nobody.ok("/api/vcenter/folder") == []
    nobody.refused(f"/api/vcenter/vm/vm-{ids['web1']}", 403, "UNAUTHORIZED")


# --- item 5: errors ---------------------------------------------------------------------------------
def test_bad_filters_and_unserved_operations_answer_in_vsphere_format(world):
    vs = world.admin
    # a parameter that is no filter of the list is ignored, as vCenter does (the collection's
    # lookups send one list's filters to another)
    assert names(vs.ok("/api/vcenter/vm", color="red", parent_folders="group-v1")) == ["db1", "hidden1", "web1", "web2"]
    for params in ({"power_states": "ON"}, {"folders": "group-x1"}, {"names": "x" * 300}, {"names": ["a"] * 1001}):
        body = vs.refused("/api/vcenter/vm", 400, "INVALID_ARGUMENT", **params)
        assert body["messages"][0]["default_message"], body
    vs.refused("/api/vcenter/host", 400, "INVALID_ARGUMENT", standalone="maybe")
    for method, path in (
        ("POST", "/api/vcenter/vm"),
        ("DELETE", f"/api/vcenter/vm/vm-{world.ids['web1']}"),
        ("GET", "/api/vcenter/vm/vm-1/tools"),
        ("GET", "/api/vcenter/tagging"),
        ("GET", "/rest/vcenter/vm"),
    ):
        r = world.client.request(method, path, headers={"vmware-api-session-id": vs.session})
        assert r.status_code == 404 and r.json()["error_type"] == "OPERATION_NOT_FOUND", (method, path, r.status_code, r.text)
        assert "docs/api.md" in r.json()["messages"][0]["default_message"]


def test_the_vsphere_routes_stay_out_of_our_openapi_document(world):
    paths = world.client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith(("/api/vcenter", "/api/session", "/rest"))]
