"""Roles, permissions and their inheritance through the API: every route declares a privilege;
for each route a user with every privilege but that one is refused and one with it is not;
lists are filtered before paging; API tokens narrow; no escalation by delegation; refusals
are in the audit log with the source address."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from tests.apihelpers import app_for, finish_as_agent, login, make_admin, register_host
from vcenter.domain.privileges import ANONYMOUS, PRIVILEGES, VIEW


def declared_privileges(route: Any) -> list[Any]:
    found, stack = [], [route.dependant]
    while stack:
        dependant = stack.pop()
        if getattr(dependant.call, "privilege", None):
            found.append(dependant.call)
        stack.extend(dependant.dependencies)
    return found


def http_routes(app, prefixes: tuple[str, ...] = ("/api/",)) -> list[Any]:
    """Every HTTP route under ``prefixes`` with its full path, methods and dependant (FastAPI
    keeps included routers as branches; their effective routes carry the router's dependencies)."""
    found: list[Any] = []

    def walk(routes):
        for route in routes:
            if isinstance(route, APIRoute):
                found.append(route)
            elif hasattr(route, "effective_route_contexts"):
                found.extend(c for c in route.effective_route_contexts() if c.dependant is not None and c.methods)

    walk(app.routes)
    return [r for r in found if r.path.startswith(prefixes)]


def api_routes(app) -> list[Any]:
    return http_routes(app)


def test_every_route_declares_its_privilege(settings):
    app = app_for(settings)
    missing = [f"{sorted(r.methods)} {r.path}" for r in api_routes(app) if not declared_privileges(r)]
    assert not missing, f"routes without a declared privilege: {missing}"
    for route in api_routes(app):
        for call in declared_privileges(route):
            assert call.privilege in PRIVILEGES, (route.path, call.privilege)
    assert len(api_routes(app)) > 60


@pytest.fixture
def client(settings):
    make_admin(settings)
    with TestClient(app_for(settings)) as c:
        yield c


def _user(client, admin, name: str) -> tuple[int, dict[str, str]]:
    r = client.post("/api/v1/users", headers=admin, json={"username": name, "password": f"{name}-password"})
    assert r.status_code == 201, r.text
    return r.json()["id"], login(client, name, f"{name}-password")


def _role(client, admin, name: str, privileges) -> int:
    r = client.post("/api/v1/roles", headers=admin, json={"name": name, "privileges": sorted(privileges)})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _grant(client, admin, principal_id: int, role_id: int, object_type: str = "root", object_id: int = 0, propagate: bool = True, principal_type: str = "user") -> dict:
    r = client.post(
        "/api/v1/permissions",
        headers=admin,
        json={"principal_type": principal_type, "principal_id": principal_id, "role_id": role_id, "object_type": object_type, "object_id": object_id, "propagate": propagate},
    )
    assert r.status_code == 201, r.text
    return r.json()


def _builtin(client, admin, name: str) -> int:
    return next(r["id"] for r in client.get("/api/v1/roles", headers=admin).json() if r["name"] == name)


@pytest.fixture
def inventory(client):
    admin = login(client)
    dc = client.post("/api/v1/datacenters", headers=admin, json={"name": "dc1"}).json()
    cl = client.post("/api/v1/clusters", headers=admin, json={"name": "cl1", "datacenter_id": dc["id"]}).json()
    host, agent = register_host(client, admin, dc["id"], "h1", cluster_id=cl["id"])
    state = {"facts": {"hostname": "h1", "cpu_model": "Skylake", "cpu_cores": 4, "cpu_mhz": 2000, "memory_mib": 8192, "hypervisor": "qemu"}, "domains": []}
    assert client.post(f"/api/v1/agent/hosts/{host['id']}/state", json=state, headers=agent).status_code == 200
    f_web = client.post("/api/v1/folders", headers=admin, json={"name": "web", "datacenter_id": dc["id"]}).json()
    f_db = client.post("/api/v1/folders", headers=admin, json={"name": "db", "datacenter_id": dc["id"]}).json()
    pool = client.post("/api/v1/pools", headers=admin, json={"name": "gold", "cluster_id": cl["id"]}).json()
    ds = client.post("/api/v1/datastores", headers=admin, json={"name": "ds1", "datacenter_id": dc["id"], "url": "/srv/ds1"}).json()
    pg = client.post("/api/v1/portgroups", headers=admin, json={"name": "pg1", "datacenter_id": dc["id"]}).json()
    sw = client.post("/api/v1/switches", headers=admin, json={"name": "sw1", "datacenter_id": dc["id"], "uplinks": ["eth1"]}).json()
    vms = {}
    for name, folder, pool_id in (("web1", f_web, None), ("web2", f_web, pool["id"]), ("db1", f_db, None), ("db2", f_db, pool["id"])):
        task = client.post("/api/v1/vms", headers=admin, json={"name": name, "host_id": host["id"], "memory_mib": 64, "folder_id": folder["id"], "pool_id": pool_id})
        assert task.status_code == 202, task.text
        vms[name] = finish_as_agent(client, client.app.state.runtime.settings, agent, task.json())["id"]
    no_access = next(r["id"] for r in client.get("/api/v1/roles", headers=admin).json() if r["name"] == "No access")
    return {"admin": admin, "no_access": no_access, "dc": dc, "cl": cl, "host": host, "web": f_web, "db": f_db, "pool": pool, "ds": ds, "pg": pg, "sw": sw, "vms": vms}


# --- per route: all but the privilege -> 403; the privilege -> not 403 ----------------------


def _path_for(route: Any, inv: dict, ids: dict[str, int]) -> str:
    prefix_kinds = {
        "datacenters": inv["dc"]["id"],
        "clusters": inv["cl"]["id"],
        "hosts": inv["host"]["id"],
        "folders": inv["web"]["id"],
        "pools": inv["pool"]["id"],
        "datastores": inv["ds"]["id"],
        "portgroups": inv["pg"]["id"],
        "switches": inv["sw"]["id"],
        "vms": inv["vms"]["web1"],
    }

    def value(match: re.Match) -> str:
        name = match.group(1)
        collection = route.path.split("/")[3]
        # The collection's own object: /hosts/{host_id}, /pools/{pool_id} (object_id elsewhere).
        if name == "object_id" or (collection in prefix_kinds and name == f"{collection.removesuffix('s')}_id"):
            return str(prefix_kinds.get(collection, 1))
        return str({"vm_id": inv["vms"]["web1"], "host_id": inv["host"]["id"], "cluster_id": inv["cl"]["id"]}.get(name, ids.get(name, 1)))

    return re.sub(r"\{(\w+)\}", value, route.path)


def _body_for(route: Any, inv: dict, n: int) -> dict | None:
    """Valid bodies for the routes that check their privilege on an object named in the body."""
    dc = inv["dc"]["id"]
    bodies = {
        ("POST", "/api/v1/datacenters"): {"name": f"dcx{n}"},
        ("POST", "/api/v1/folders"): {"name": f"fx{n}", "datacenter_id": dc},
        ("POST", "/api/v1/clusters"): {"name": f"clx{n}", "datacenter_id": dc},
        ("POST", "/api/v1/datastores"): {"name": f"dsx{n}", "datacenter_id": dc, "url": f"/srv/x{n}"},
        ("POST", "/api/v1/portgroups"): {"name": f"pgx{n}", "datacenter_id": dc},
        ("POST", "/api/v1/switches"): {"name": f"swx{n}", "datacenter_id": dc, "uplinks": ["eth1"]},
        ("POST", "/api/v1/pools"): {"name": f"px{n}", "cluster_id": inv["cl"]["id"]},
        ("POST", "/api/v1/hosts"): {"name": f"hx{n}", "datacenter_id": dc},
        ("POST", "/api/v1/vms"): {"name": f"vmx{n}", "host_id": inv["host"]["id"], "memory_mib": 64, "folder_id": inv["web"]["id"]},
        ("POST", "/api/v1/alarms"): {
            "name": f"ax{n}",
            "target_type": "host",
            "scope_type": "cluster",
            "scope_id": inv["cl"]["id"],
            "expression": {"type": "state", "condition": "host.not_responding"},
        },
        # "No access" holds no privilege, so a granter holding only Permissions.Modify may give it
        # (to a user holding nothing: delegation needs the granter to hold what the grantee holds)
        ("POST", "/api/v1/permissions"): {"principal_type": "user", "principal_id": inv["nobody"], "role_id": inv["no_access"], "object_type": "folder", "object_id": inv["web"]["id"]},
    }
    method = next(iter(route.methods))
    return bodies.get((method, route.path), {} if method in ("POST", "PATCH", "PUT") else None)


def test_each_route_refuses_a_user_lacking_its_privilege_and_admits_one_holding_it(client, inventory):
    admin = inventory["admin"]
    app = client.app
    # Users, groups and permissions the routes change belong to a user holding nothing: changing
    # one that holds more than the caller is refused whatever the route's privilege
    # (test_security_delegation covers that).
    # (two of them: deleting the first one deletes its permissions)
    nobody_id, _ = _user(client, admin, "nobody")
    bystander_id, _ = _user(client, admin, "bystander")
    inventory = {**inventory, "nobody": bystander_id}
    ids = {
        "task_id": inventory["vms"]["web1"] and client.get("/api/v1/tasks", headers=admin).json()["items"][0]["id"],
        "user_id": nobody_id,
        "role_id": _role(client, admin, "scratch", ["System.View"]),
        "rule_id": 1,
        "rec_id": 1,
        "permission_id": _grant(client, admin, bystander_id, inventory["no_access"], "folder", inventory["db"]["id"])["id"],
    }
    checked = 0
    # One user lacking and one holding; their roles change per privilege (cheap, unlike logins).
    lacking_id, lacking = _user(client, admin, "lacking")
    holding_id, holding = _user(client, admin, "holding")
    lacking_role, holding_role = _role(client, admin, "allbut", []), _role(client, admin, "only", [])
    _grant(client, admin, lacking_id, lacking_role)
    _grant(client, admin, holding_id, holding_role)
    for n, route in enumerate(api_routes(app)):
        calls = declared_privileges(route)
        if not calls:
            continue  # test_every_route_declares_its_privilege names it
        privilege = calls[0].privilege
        if privilege == ANONYMOUS or (privilege == VIEW and getattr(calls[0], "deferred", False)):
            continue  # public routes; lists (filtered, tested below)
        method = next(iter(route.methods))
        assert client.patch(f"/api/v1/roles/{lacking_role}", headers=admin, json={"privileges": sorted(set(PRIVILEGES) - {privilege, ANONYMOUS})}).status_code == 200
        assert client.patch(f"/api/v1/roles/{holding_role}", headers=admin, json={"privileges": [privilege]}).status_code == 200
        path = _path_for(route, inventory, ids)
        body = _body_for(route, inventory, n)
        refused = client.request(method, path, headers=lacking, json=body)
        assert refused.status_code == 403, (method, route.path, privilege, refused.status_code, refused.text)
        assert refused.json()["code"] in ("FORBIDDEN",), refused.text
        body = _body_for(route, inventory, n + 1000)
        admitted = client.request(method, path, headers=holding, json=body)
        assert admitted.status_code != 403, (method, route.path, privilege, admitted.text)
        checked += 1
    assert checked > 50


# --- inheritance and lists ---------------------------------------------------------------


def _names(client, headers, path="/api/v1/vms", **params) -> tuple[int, list[str]]:
    page = client.get(path, headers=headers, params=params).json()
    return page["total"], [item["name"] for item in page["items"]]


def test_a_folder_permission_shows_only_that_folders_vms_in_lists_and_counts(client, inventory):
    admin = inventory["admin"]
    uid, user = _user(client, admin, "webops")
    _grant(client, admin, uid, _builtin(client, admin, "VM operator"), "folder", inventory["web"]["id"])
    assert _names(client, user) == (2, ["web1", "web2"])
    assert _names(client, user, limit=1, offset=1) == (2, ["web2"])  # paging after filtering
    assert _names(client, user, name="db*") == (0, [])
    assert client.get(f"/api/v1/vms/{inventory['vms']['db1']}", headers=user).status_code == 403
    assert client.get(f"/api/v1/vms/{inventory['vms']['web1']}", headers=user).status_code == 200
    assert client.post(f"/api/v1/vms/{inventory['vms']['web1']}/power/on", headers=user).status_code == 202
    assert client.post(f"/api/v1/vms/{inventory['vms']['db1']}/power/on", headers=user).status_code == 403
    # VM operator may not migrate
    assert client.post(f"/api/v1/vms/{inventory['vms']['web1']}/migrate", headers=user, json={"host_id": inventory["host"]["id"]}).status_code == 403
    # the datacenter itself stays hidden: the grant is below it
    assert client.get("/api/v1/datacenters", headers=user).json()["total"] == 0
    # tasks and events: only those of visible objects (and the user's own)
    tasks = client.get("/api/v1/tasks", headers=user).json()
    assert tasks["total"] >= 1 and {t["object_id"] for t in tasks["items"]} <= {inventory["vms"]["web1"], inventory["vms"]["web2"]}


def test_more_specific_permission_overrides_and_no_access_wins_over_two_parents(client, inventory):
    admin = inventory["admin"]
    vms = inventory["vms"]
    uid, user = _user(client, admin, "mixed")
    _grant(client, admin, uid, _builtin(client, admin, "Read-only"), "datacenter", inventory["dc"]["id"])
    assert _names(client, user)[0] == 4
    # More specific: VM operator on the web folder overrides Read-only from the datacenter.
    _grant(client, admin, uid, _builtin(client, admin, "VM operator"), "folder", inventory["web"]["id"])
    me = client.get("/api/v1/privileges/effective", headers=user, params={"object_type": "vm", "object_id": vms["web1"]}).json()
    assert "VirtualMachine.PowerOn" in me["privileges"]
    # Two parents: db2 is in folder db (Read-only via the datacenter) and in pool gold.
    power_off = _role(client, admin, "poweroff", ["System.View", "VirtualMachine.PowerOff"])
    _grant(client, admin, uid, power_off, "pool", inventory["pool"]["id"])
    db2 = client.get("/api/v1/privileges/effective", headers=user, params={"object_type": "vm", "object_id": vms["db2"]}).json()["privileges"]
    assert db2 == ["System.View", "VirtualMachine.PowerOff"]  # union of both paths
    db1 = client.get("/api/v1/privileges/effective", headers=user, params={"object_type": "vm", "object_id": vms["db1"]}).json()["privileges"]
    assert db1 == ["System.View"]  # db1 is not in the pool
    # No access on the pool wins for the VMs in it, whatever the folder path grants.
    _grant(client, admin, uid, _builtin(client, admin, "No access"), "pool", inventory["pool"]["id"])
    assert _names(client, user) == (2, ["web1", "db1"])
    assert client.get(f"/api/v1/vms/{vms['web2']}", headers=user).status_code == 403
    # A non-propagating permission on the pool reaches only the pool itself.
    perms = client.get("/api/v1/permissions", headers=admin, params={"object_type": "pool", "object_id": inventory["pool"]["id"]}).json()
    assert [p["role"] for p in perms] == ["No access"]
    _grant(client, admin, uid, _builtin(client, admin, "No access"), "pool", inventory["pool"]["id"], propagate=False)
    assert _names(client, user)[0] == 4


def test_group_permissions_and_the_users_own_override(client, inventory):
    admin = inventory["admin"]
    uid, user = _user(client, admin, "member")
    group = client.post("/api/v1/groups", headers=admin, json={"name": "dbas", "members": ["member"]})
    assert group.status_code == 201 and group.json()["members"] == ["member"]
    _grant(client, admin, group.json()["id"], _builtin(client, admin, "VM operator"), "folder", inventory["db"]["id"], principal_type="group")
    assert _names(client, user) == (2, ["db1", "db2"])
    assert client.post(f"/api/v1/vms/{inventory['vms']['db1']}/power/on", headers=user).status_code == 202
    # the user's own permission on the same folder overrides the group's
    _grant(client, admin, uid, _builtin(client, admin, "Read-only"), "folder", inventory["db"]["id"])
    assert client.post(f"/api/v1/vms/{inventory['vms']['db2']}/power/on", headers=user).status_code == 403
    # out of the group: the group's permission no longer applies
    client.patch(f"/api/v1/groups/{group.json()['id']}", headers=admin, json={"members": []})
    assert _names(client, user)[0] == 2  # still Read-only of its own


def test_api_tokens_narrow_to_their_role_and_die_with_the_password(client, inventory):
    admin = inventory["admin"]
    read_only = _builtin(client, admin, "Read-only")
    created = client.post("/api/v1/session/tokens", headers=admin, json={"name": "monitoring", "role_id": read_only})
    assert created.status_code == 201, created.text
    token = {"Authorization": f"Bearer {created.json()['token']}"}
    assert created.json()["token"].startswith("vct_")
    assert client.get("/api/v1/vms", headers=token).json()["total"] == 4
    refused = client.post(f"/api/v1/vms/{inventory['vms']['web1']}/power/on", headers=token)
    assert refused.status_code == 403 and refused.json()["code"] == "FORBIDDEN"
    assert client.post("/api/v1/session/tokens", headers=token, json={"name": "x", "role_id": read_only}).status_code == 422
    listed = client.get("/api/v1/session/tokens", headers=admin).json()
    assert [t["name"] for t in listed] == ["monitoring"] and "token" not in listed[0]
    # a user's token never exceeds the user: a Read-only user's Administrator token stays read-only
    uid, user = _user(client, admin, "viewer")
    _grant(client, admin, uid, read_only)
    mine = client.post("/api/v1/session/tokens", headers=user, json={"name": "mine", "role_id": _builtin(client, admin, "Administrator")}).json()
    assert client.post(f"/api/v1/vms/{inventory['vms']['web1']}/power/on", headers={"Authorization": f"Bearer {mine['token']}"}).status_code == 403
    # revoke
    assert client.delete(f"/api/v1/session/tokens/{created.json()['id']}", headers=admin).status_code == 204
    assert client.get("/api/v1/vms", headers=token).status_code == 401
    # password change kills the user's tokens
    assert client.get("/api/v1/vms", headers={"Authorization": f"Bearer {mine['token']}"}).status_code == 200
    client.patch(f"/api/v1/users/{uid}", headers=admin, json={"password": "another-password"})
    assert client.get("/api/v1/vms", headers={"Authorization": f"Bearer {mine['token']}"}).status_code == 401


def test_no_escalation_by_delegation(client, inventory):
    admin = inventory["admin"]
    uid, user = _user(client, admin, "delegate")
    delegator = _role(client, admin, "delegator", ["System.View", "Users.Modify", "Permissions.Modify", "VirtualMachine.PowerOn"])
    _grant(client, admin, uid, delegator, "folder", inventory["web"]["id"])
    _grant(client, admin, uid, _role(client, admin, "usermod", ["Users.Modify"]))
    # Users.Modify does not make administrators
    r = client.post("/api/v1/users", headers=user, json={"username": "sneaky", "password": "sneaky-password", "is_admin": True})
    assert r.status_code == 403
    # may grant on its folder what it holds there, not more
    other_id, _ = _user(client, admin, "junior")
    ok = client.post(
        "/api/v1/permissions",
        headers=user,
        json={
            "principal_type": "user",
            "principal_id": other_id,
            "role_id": _role(client, admin, "poweron", ["System.View", "VirtualMachine.PowerOn"]),
            "object_type": "folder",
            "object_id": inventory["web"]["id"],
        },
    )
    assert ok.status_code == 201, ok.text
    too_much = client.post(
        "/api/v1/permissions",
        headers=user,
        json={"principal_type": "user", "principal_id": uid, "role_id": _builtin(client, admin, "Administrator"), "object_type": "folder", "object_id": inventory["web"]["id"]},
    )
    assert too_much.status_code == 403 and too_much.json()["code"] == "GRANT_EXCEEDS_OWN"
    elsewhere = client.post(
        "/api/v1/permissions",
        headers=user,
        json={"principal_type": "user", "principal_id": other_id, "role_id": _builtin(client, admin, "Read-only"), "object_type": "folder", "object_id": inventory["db"]["id"]},
    )
    assert elsewhere.status_code == 403


def test_roles_are_validated_and_builtins_are_fixed(client, inventory):
    admin = inventory["admin"]
    bad = client.post("/api/v1/roles", headers=admin, json={"name": "bad", "privileges": ["VirtualMachine.Fly"]})
    assert bad.status_code == 422 and bad.json()["code"] == "UNKNOWN_PRIVILEGE"
    admin_role = _builtin(client, admin, "Administrator")
    assert client.patch(f"/api/v1/roles/{admin_role}", headers=admin, json={"privileges": []}).json()["code"] == "ROLE_BUILTIN"
    assert client.delete(f"/api/v1/roles/{admin_role}", headers=admin).json()["code"] == "ROLE_BUILTIN"
    used = _role(client, admin, "used", ["System.View"])
    uid, _ = _user(client, admin, "someone")
    _grant(client, admin, uid, used)
    assert client.delete(f"/api/v1/roles/{used}", headers=admin).json()["code"] == "ROLE_IN_USE"
    catalog = {p["id"] for p in client.get("/api/v1/privileges", headers=admin).json()}
    assert {"VirtualMachine.PowerOn", "Host.Maintenance", "Cluster.DRS", "Datastore.AllocateSpace", "Permissions.Modify"} <= catalog


def test_refusals_and_permission_changes_are_in_the_audit_log_with_source(client, inventory):
    admin = inventory["admin"]
    uid, user = _user(client, admin, "auditme")
    assert client.post(f"/api/v1/hosts/{inventory['host']['id']}/maintenance", headers=user).status_code == 403
    refused = client.get("/api/v1/events", headers=admin, params={"kind": "authz.refused", "username": "auditme"}).json()["items"]
    assert refused and "Host.Maintenance" in refused[0]["message"] and refused[0]["source"] == "testclient"
    _grant(client, admin, uid, _builtin(client, admin, "Read-only"), "folder", inventory["web"]["id"])
    _grant(client, admin, uid, _builtin(client, admin, "VM operator"), "folder", inventory["web"]["id"])
    changes = client.get("/api/v1/events", headers=admin, params={"kind": "permission.set", "sort": "-id"}).json()["items"]
    assert changes[0]["data"]["before"]["role"] == "Read-only" and changes[0]["data"]["after"]["role"] == "VM operator"
    assert changes[0]["username"] == "admin" and changes[0]["source"] == "testclient"


# --- hostile input -----------------------------------------------------------------------


def test_login_guessing_across_user_names_from_one_address_is_rate_limited(settings):
    make_admin(settings)
    limited = settings.model_copy(update={"login_source_failures": 3})
    with TestClient(app_for(limited)) as client:
        for n in range(3):
            assert client.post("/api/v1/session", json={"username": f"guess{n}", "password": "nope-nope"}).status_code == 401
        refused = client.post("/api/v1/session", json={"username": "admin", "password": "secret-pass-phrase"})
        assert refused.status_code == 429 and refused.json()["code"] == "LOGIN_RATE_LIMITED"
    # the limit is per address and the window ends by itself: another address is not affected
    with TestClient(app_for(limited), client=("10.9.9.9", 5000)) as other:
        assert other.post("/api/v1/session", json={"username": "admin", "password": "secret-pass-phrase"}).status_code == 201


def test_oversized_json_and_nul_characters_are_refused_before_any_route(settings):
    make_admin(settings)
    small = settings.model_copy(update={"max_json_body": 4096})
    with TestClient(app_for(small)) as client:
        admin = login(client)
        big = client.post("/api/v1/datacenters", headers={**admin, "Content-Type": "application/json"}, content=b'{"name": "' + b"a" * 5000 + b'"}')
        assert big.status_code == 413 and big.json()["code"] == "BODY_TOO_LARGE"
        nul = client.post("/api/v1/datacenters", headers=admin, json={"name": "a\u0000b"})
        assert nul.status_code == 422 and nul.json()["code"] == "INVALID_CHARACTER"
        assert client.get("/api/v1/vms?name=a%00b", headers=admin).json()["code"] == "INVALID_CHARACTER"
        huge_id = client.get("/api/v1/vms/99999999999999", headers=admin)
        assert huge_id.status_code == 422 and huge_id.json()["code"] == "INVALID_ID"  # beyond INTEGER: refused by the id parser
        assert client.get("/api/v1/datacenters", headers=admin).json()["total"] == 0
