"""Object ids are read one way only (issue 15, findings 1 and 7).

- Finding 1: the privilege check read an id only when it was all digits (else it checked the
  root) while the route parsed ``+42`` as 42, so a user with VM operator on the root and No
  access on a VM powered it on through ``/vms/+42/power/on``. Now both read the path with
  vcenter.core.object_ids.parse_object_id: every non-canonical spelling is 422 INVALID_ID.
- The walk: every route of the API and of /ui, every id parameter in its path, its query and
  its JSON body, each non-canonical spelling, as a user with No access on the object named:
  never a 2xx (a 422 INVALID_ID for path and query; a 422 naming the field for bodies).
- Finding 7 (integers): ids, offsets, filters and body integers beyond what the columns hold
  (INTEGER, BIGINT) are 422, never 500, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
import types
import typing
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from tests.apihelpers import app_for, finish_as_agent, login, make_admin, register_host
from tests.api.test_permissions import http_routes
from vcenter.dashboard.web import COOKIE, csrf_for
from vcenter.domain.privileges import ANONYMOUS, PRIVILEGES


PASSWORD = "a-long-test-passphrase-9"


# --- routes ----------------------------------------------------------------------------------


def all_routes(app) -> list[Any]:
    """Every HTTP route (API and /ui) with its full path, methods and dependant."""
    return http_routes(app, ("/api/", "/ui"))


def privilege_checks(route: Any) -> list[Any]:
    found, stack = [], [route.dependant]
    while stack:
        dependant = stack.pop()
        if getattr(dependant.call, "privilege", None):
            found.append(dependant.call)
        stack.extend(dependant.dependencies)
    return found


def query_params(dependant: Any) -> list[Any]:
    out = list(dependant.query_params)
    for sub in dependant.dependencies:
        out += query_params(sub)
    return out


def is_id_name(name: str) -> bool:
    return name.endswith("_id") and name != "vlan_id"


def path_id_params(route: Any) -> list[str]:
    return [n for n in re.findall(r"\{(\w+)\}", route.path) if is_id_name(n)]


def is_streaming(route: Any) -> bool:
    return route.path == "/ui/live"


# Filters of the list routes (read from request.query_params, so not declared parameters).
LIST_ID_FILTERS = {
    "/api/v1/vms": ["host_id", "cluster_id", "datacenter_id", "folder_id", "pool_id"],
    "/api/v1/tasks": ["object_id", "host_id"],
    "/api/v1/events": ["object_id", "task_id"],
    "/api/v1/folders": ["datacenter_id", "parent_id"],
    "/api/v1/clusters": ["datacenter_id"],
    "/api/v1/hosts": ["datacenter_id", "cluster_id"],
    "/api/v1/datastores": ["datacenter_id"],
    "/api/v1/portgroups": ["datacenter_id", "switch_id", "vlan_id"],
    "/api/v1/switches": ["datacenter_id"],
    "/api/v1/pools": ["cluster_id", "parent_id"],
}


# --- spellings -------------------------------------------------------------------------------


def _digits(n: int, zero: int) -> str:
    return "".join(chr(zero + int(d)) for d in str(n))


def non_canonical_path(n: int) -> list[str]:
    """Spellings of ``n`` in a URL path that int(), float() or a lax parser reads as ``n``
    (raw and percent-encoded whitespace, signs, zeros, separators, other digits)."""
    s = str(n)
    return [
        f"+{s}",
        f"0{s}",
        f"00{s}",
        f"{s[:-1]}_{s[-1]}" if len(s) > 1 else f"0_{s}",
        f"{s}.0",
        f"{s}.",
        f"{s}e0",
        _digits(n, 0x660),
        _digits(n, 0xFF10),
        f" {s}",
        f"%20{s}",
        f"{s}%20",
        f"%09{s}",
        f"{s}%0A",
        f"%C2%A0{s}",
        f"-{s}",
    ]


def walk_spellings(n: int) -> list[str]:
    """One spelling of each class for the route walks (the full list is tried on finding 1's
    route): sign, leading zero, ``_``, Unicode digits, decimal point, whitespace raw and
    percent-encoded (a raw space reaches the server as %20)."""
    s = str(n)
    return [f"+{s}", f"0{s}", f"{s[:-1]}_{s[-1]}" if len(s) > 1 else f"0_{s}", _digits(n, 0x660), _digits(n, 0xFF10), f"{s}.0", f" {s}", f"{s}%20", f"%09{s}", f"%C2%A0{s}"]


def non_canonical_query(n: int) -> list[str]:
    """Values for httpx ``params`` (percent-encoded by httpx, so the server reads them as is)."""
    s = str(n)
    return [
        f"+{s}",
        f"0{s}",
        f"{s[:-1]}_{s[-1]}" if len(s) > 1 else f"0_{s}",
        f"{s}.0",
        f"{s}e0",
        _digits(n, 0x660),
        _digits(n, 0xFF10),
        f" {s}",
        f"{s} ",
        f"\t{s}",
        f"{s}\n",
        f"\u00a0{s}",
        f"-{s}",
        "",
    ]


def non_canonical_json(n: int) -> list[Any]:
    """JSON values a lax int field reads as ``n`` (or as 1: true), and a negative one."""
    return [str(n), f"+{n}", f"0{n}", f" {n}", float(n), _digits(n, 0x660), True, False, -max(n, 1)]


HUGE_TEXT = [str(2**31), str(2**63), str(2**70), "9" * 40]
HUGE_JSON = [2**63, -(2**63) - 1, 2**70]


# --- bodies ----------------------------------------------------------------------------------


def _unwrap(annotation: Any) -> list[Any]:
    """The concrete types an annotation admits (Optional/Union/Annotated removed)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [t for a in typing.get_args(annotation) for t in _unwrap(a) if t is not type(None)]
    return [annotation]


def _is_model(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel)


def body_model(route: Any) -> type[BaseModel] | None:
    params = route.dependant.body_params
    if len(params) != 1:
        return None
    models = [t for t in _unwrap(params[0].field_info.annotation) if _is_model(t)]
    return models[0] if models else None


def int_leaves(model: type[BaseModel], prefix: tuple = ()) -> list[tuple[tuple, bool, bool]]:
    """(path, is_list, is_id) of every integer field of ``model``, nested models included; a
    path step 0 is the first item of a list."""
    out = []
    for name, field in model.model_fields.items():
        for t in _unwrap(field.annotation):
            origin = typing.get_origin(t)
            if origin in (list, tuple, set):
                inner = [i for a in typing.get_args(t) for i in _unwrap(a)]
                for i in inner:
                    if _is_model(i):
                        out += int_leaves(i, prefix + (name, 0))
                    elif i is int:
                        out.append((prefix + (name,), True, name.endswith("_ids") or name == "failover_hosts"))
            elif _is_model(t):
                out += int_leaves(t, prefix + (name,))
            elif t is int:
                out.append((prefix + (name,), False, is_id_name(name)))
    return list(dict.fromkeys(out))


def body_with(path: tuple, value: Any) -> Any:
    """A JSON body holding ``value`` at ``path`` (0 steps make lists)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    inner = body_with(rest, value)
    return [inner] if head == 0 else {head: inner}


def field_of(path: tuple, is_list: bool) -> str:
    return ".".join(str(p) for p in path + ((0,) if is_list else ()))


def refused_at(response: Any, field: str) -> bool:
    if response.status_code != 422:
        return False
    details = response.json().get("details") or []
    return any(isinstance(d, dict) and str(d.get("field", "")).startswith(field) for d in details)


# --- the world -------------------------------------------------------------------------------


def _user(client, admin, name: str) -> tuple[int, dict[str, str]]:
    r = client.post("/api/v1/users", headers=admin, json={"username": name, "password": PASSWORD})
    assert r.status_code == 201, r.text
    return r.json()["id"], login(client, name, PASSWORD)


def _role_id(client, admin, name: str) -> int:
    return next(r["id"] for r in client.get("/api/v1/roles", headers=admin).json() if r["name"] == name)


def _grant(client, admin, principal_id: int, role_id: int, object_type: str = "root", object_id: int = 0) -> None:
    r = client.post(
        "/api/v1/permissions", headers=admin, json={"principal_type": "user", "principal_id": principal_id, "role_id": role_id, "object_type": object_type, "object_id": object_id, "propagate": True}
    )
    assert r.status_code == 201, r.text


def _vm(client, admin, agent, settings, name: str, host_id: int, folder_id: int) -> int:
    task = client.post("/api/v1/vms", headers=admin, json={"name": name, "host_id": host_id, "memory_mib": 64, "folder_id": folder_id})
    assert task.status_code == 202, task.text
    return finish_as_agent(client, settings, agent, task.json())["id"]


@pytest.fixture
def world(settings):
    """Objects of every kind twice: ``ok`` ones the user ``mallory`` may do anything with (a
    role holding every privilege, on the root) and ``secret`` ones where she has No access."""
    make_admin(settings)
    with TestClient(app_for(settings)) as client:
        admin = login(client)
        dc = client.post("/api/v1/datacenters", headers=admin, json={"name": "dc1"}).json()
        dc_secret = client.post("/api/v1/datacenters", headers=admin, json={"name": "dc2"}).json()
        cl = client.post("/api/v1/clusters", headers=admin, json={"name": "cl1", "datacenter_id": dc["id"]}).json()
        cl_secret = client.post("/api/v1/clusters", headers=admin, json={"name": "cl2", "datacenter_id": dc["id"]}).json()
        host, agent = register_host(client, admin, dc["id"], "h1", cluster_id=cl["id"])
        host_secret, _ = register_host(client, admin, dc["id"], "h2")
        facts = {"hostname": "h1", "cpu_model": "Skylake", "cpu_cores": 4, "cpu_mhz": 2000, "memory_mib": 8192, "hypervisor": "qemu"}
        assert client.post(f"/api/v1/agent/hosts/{host['id']}/state", json={"facts": facts, "domains": []}, headers=agent).status_code == 200
        folder = client.post("/api/v1/folders", headers=admin, json={"name": "ok", "datacenter_id": dc["id"]}).json()
        folder_secret = client.post("/api/v1/folders", headers=admin, json={"name": "secret", "datacenter_id": dc["id"]}).json()
        pool = client.post("/api/v1/pools", headers=admin, json={"name": "ok", "cluster_id": cl["id"]}).json()
        pool_secret = client.post("/api/v1/pools", headers=admin, json={"name": "secret", "cluster_id": cl["id"]}).json()
        ds = client.post("/api/v1/datastores", headers=admin, json={"name": "ds1", "datacenter_id": dc["id"], "url": "/srv/ds1", "host_ids": [host["id"]]}).json()
        ds_secret = client.post("/api/v1/datastores", headers=admin, json={"name": "ds2", "datacenter_id": dc["id"], "url": "/srv/ds2"}).json()
        pg = client.post("/api/v1/portgroups", headers=admin, json={"name": "pg1", "datacenter_id": dc["id"]}).json()
        pg_secret = client.post("/api/v1/portgroups", headers=admin, json={"name": "pg2", "datacenter_id": dc["id"]}).json()
        vm = _vm(client, admin, agent, settings, "ok", host["id"], folder["id"])
        vm_secret = _vm(client, admin, agent, settings, "secret", host["id"], folder["id"])

        everything = client.post("/api/v1/roles", headers=admin, json={"name": "everything", "privileges": sorted(set(PRIVILEGES) - {ANONYMOUS})})
        assert everything.status_code == 201, everything.text
        mallory_id, mallory = _user(client, admin, "mallory")
        _grant(client, admin, mallory_id, everything.json()["id"])
        no_access = _role_id(client, admin, "No access")
        secret = {
            "datacenter": dc_secret["id"],
            "cluster": cl_secret["id"],
            "host": host_secret["id"],
            "folder": folder_secret["id"],
            "pool": pool_secret["id"],
            "datastore": ds_secret["id"],
            "portgroup": pg_secret["id"],
            "vm": vm_secret,
        }
        for kind, object_id in secret.items():
            _grant(client, admin, mallory_id, no_access, kind, object_id)
        ok = {"datacenter": dc["id"], "cluster": cl["id"], "host": host["id"], "folder": folder["id"], "pool": pool["id"], "datastore": ds["id"], "portgroup": pg["id"], "vm": vm}
        yield types.SimpleNamespace(client=client, settings=settings, admin=admin, agent=agent, mallory=mallory, mallory_id=mallory_id, secret=secret, ok=ok, no_access=no_access)


COLLECTION_KINDS = {"datacenters": "datacenter", "folders": "folder", "clusters": "cluster", "hosts": "host", "datastores": "datastore", "portgroups": "portgroup", "pools": "pool", "vms": "vm"}
OTHER_PARAMS = {"object_type": "host", "kind": "datacenter", "direction": "enter", "operation": "acknowledge", "vm_uuid": "x"}


def kind_of(route: Any, name: str) -> str | None:
    """The inventory kind an id path parameter names (None: not an inventory object)."""
    if name == "object_id":
        parts = route.path.split("/")
        if route.path.startswith("/ui/tree/"):
            return "datacenter"
        if route.path.startswith("/api/v1/metrics/"):
            return parts[4] if parts[4] in COLLECTION_KINDS.values() else None
        return COLLECTION_KINDS.get(parts[3])
    return {
        "vm_id": "vm",
        "host_id": "host",
        "cluster_id": "cluster",
        "datacenter_id": "datacenter",
        "datastore_id": "datastore",
        "portgroup_id": "portgroup",
        "folder_id": "folder",
        "pool_id": "pool",
    }.get(name)


def fill(route: Any, ids: dict[str, Any], w: Any) -> str:
    """The route's path with ``ids[name]`` where given, else an object mallory may use."""

    def value(match: re.Match) -> str:
        name = match.group(1)
        if name in ids:
            return str(ids[name])
        if name in OTHER_PARAMS:
            return OTHER_PARAMS[name]
        kind = kind_of(route, name)
        return str(w.ok[kind]) if kind else "1"

    return re.sub(r"\{(\w+)\}", value, route.path)


def _agent_route(route: Any) -> bool:
    return route.path.startswith("/api/v1/agent/hosts/")


def caller(w: Any, route: Any, as_admin: bool = False) -> dict[str, str]:
    if _agent_route(route):
        return w.agent
    return w.admin if as_admin else w.mallory


def ui_session(w: Any, username: str, password: str) -> dict[str, str]:
    """Cookie and CSRF header of a dashboard session (the session token is the cookie)."""
    r = w.client.post("/api/v1/session", json={"username": username, "password": password})
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    return {"Cookie": f"{COOKIE}={token}", "X-CSRF-Token": csrf_for(token)}


def send(w: Any, route: Any, path: str, headers: dict[str, str], **kw: Any) -> Any:
    method = next(iter(route.methods))
    client = w.client
    client.cookies.clear()
    if route.path.startswith("/ui") and method == "POST" and "json" not in kw:
        kw.setdefault("data", {})
    return client.request(method, path, headers=headers, follow_redirects=False, **kw)


# --- finding 1: the reproduction ---------------------------------------------------------------


def _power_state(w: Any, vm_id: int) -> str:
    return w.client.get(f"/api/v1/vms/{vm_id}", headers=w.admin).json()["power_state"]


def _tasks_on(w: Any, vm_id: int) -> int:
    return w.client.get("/api/v1/tasks", headers=w.admin, params={"object_type": "vm", "object_id": vm_id, "kind": "vm.power_on"}).json()["total"]


def test_vm_operator_with_no_access_on_a_vm_cannot_power_it_on_by_another_spelling(world):
    w = world
    admin, client = w.admin, w.client
    victim = w.secret["vm"]
    operator_id, operator = _user(client, admin, "operator")
    _grant(client, admin, operator_id, _role_id(client, admin, "VM operator"))
    _grant(client, admin, operator_id, w.no_access, "vm", victim)
    assert client.post(f"/api/v1/vms/{victim}/power/on", headers=operator).status_code == 403
    before = _tasks_on(w, victim)
    for spelling in non_canonical_path(victim):
        r = client.post(f"/api/v1/vms/{spelling}/power/on", headers=operator)
        assert r.status_code == 422 and r.json()["code"] == "INVALID_ID", (spelling, r.status_code, r.text)
        r = client.get(f"/api/v1/vms/{spelling}", headers=operator)
        assert r.status_code == 422 and r.json()["code"] == "INVALID_ID", (spelling, r.status_code, r.text)
    # the dashboard: the same check, the same parser
    ui = ui_session(w, "operator", PASSWORD)
    assert client.post(f"/ui/vm/{victim}/power/on", headers=ui, data={}).status_code == 403
    for spelling in non_canonical_path(victim):
        r = client.post(f"/ui/vm/{spelling}/power/on", headers=ui, data={})
        assert r.status_code == 422 and r.json()["code"] == "INVALID_ID", (spelling, r.status_code, r.text)
        assert client.get(f"/ui/vm/{spelling}", headers=ui).status_code == 422
    assert _power_state(w, victim) == "poweredOff" and _tasks_on(w, victim) == before
    # the operator still powers on a VM it may: the canonical id works
    assert client.post(f"/api/v1/vms/{w.ok['vm']}/power/on", headers=operator).status_code == 202


def test_a_bad_id_on_a_dashboard_page_is_a_422_not_a_500(world):
    w = world
    ui = ui_session(w, "mallory", PASSWORD)
    for path in ("/ui/vm/42.0", "/ui/vm/+1", "/ui/host/9223372036854775808", "/ui/tree/datacenter/1.0", f"/ui/data/metrics/vm/0{w.ok['vm']}"):
        r = w.client.get(path, headers=ui)
        assert r.status_code == 422 and r.json()["code"] == "INVALID_ID", (path, r.status_code, r.text)


# --- the walk: every route, every id parameter, every spelling ------------------------------------


def test_no_route_reads_a_non_canonical_path_id(world):
    """Path ids of every route (API and /ui), each spelling of the id of an object mallory has
    No access on: 422 INVALID_ID; the canonical id of that object: 403 where the route checks
    its privilege on it."""
    w = world
    ui = ui_session(w, "mallory", PASSWORD)
    walked = refused_on_object = 0
    for route in all_routes(w.client.app):
        if is_streaming(route):
            continue
        headers = ui if route.path.startswith("/ui") else caller(w, route)
        checks = privilege_checks(route)
        checked_params = {getattr(c, "param", None) for c in checks if getattr(c, "object_kind", None) and not getattr(c, "deferred", False) and not getattr(c, "anywhere", False)}
        for name in path_id_params(route):
            if _agent_route(route) and name == "host_id":
                target = w.ok["host"]  # an agent's own host: the credential is the check
            else:
                kind = kind_of(route, name)
                target = w.secret[kind] if kind in w.secret else 1
            if name in checked_params and kind_of(route, name) in w.secret:
                denied = send(w, route, fill(route, {name: target}, w), headers)
                assert denied.status_code == 403, (route.path, name, denied.status_code, denied.text)
                refused_on_object += 1
            for spelling in walk_spellings(target):
                r = send(w, route, fill(route, {name: spelling}, w), headers)
                assert r.status_code == 422 and r.json().get("code") == "INVALID_ID", (sorted(route.methods), route.path, name, spelling, r.status_code, r.text[:300])
                walked += 1
    assert refused_on_object > 60 and walked > 1000


def test_no_route_reads_a_non_canonical_query_id(world):
    """Declared id query parameters and the id filters of lists: 422 INVALID_ID."""
    w = world
    ui = ui_session(w, "mallory", PASSWORD)
    walked = 0
    extra = {"/api/v1/privileges/effective": {"object_type": "vm"}, "/api/v1/permissions": {"object_type": "vm"}, "/api/v1/alarms/triggered": {"object_type": "vm"}}
    for route in all_routes(w.client.app):
        if is_streaming(route):
            continue
        headers = ui if route.path.startswith("/ui") else caller(w, route)
        names = [p.name for p in query_params(route.dependant) if is_id_name(p.name) or p.name == "host"]
        if "GET" in route.methods:
            names += LIST_ID_FILTERS.get(route.path, [])
        for name in names:
            kind = "host" if name == "host" else kind_of(route, name) or ("vm" if name == "object_id" else None)
            target = w.secret.get(kind, 1) if kind else 1
            others = {p.name: w.ok["host"] for p in query_params(route.dependant) if p.name == "host" and p.name != name}
            for spelling in non_canonical_query(target):
                r = send(w, route, fill(route, {}, w), headers, params={**extra.get(route.path, {}), **others, name: spelling})
                assert r.status_code == 422 and r.json().get("code") == "INVALID_ID", (route.path, name, repr(spelling), r.status_code, r.text[:300])
                walked += 1
    assert walked > 300


def test_no_route_reads_a_non_canonical_body_id(world):
    """Every id field of every JSON request body (nested ones too), as a string, a float, a
    boolean: refused at that field (422), on routes mallory may otherwise use."""
    w = world
    walked = 0
    for route in all_routes(w.client.app):
        model = body_model(route)
        if model is None or route.path.startswith("/ui"):
            continue
        path = fill(route, {}, w)
        for leaf, is_list, is_id in int_leaves(model):
            if not is_id:
                continue
            kind = kind_of(route, leaf[-1]) or "vm"
            target = w.secret.get(kind, 1)
            for value in non_canonical_json(target):
                body = body_with(leaf, [value] if is_list else value)
                r = send(w, route, path, caller(w, route), json=body)
                field = field_of(leaf, is_list)
                assert refused_at(r, field), (sorted(route.methods), route.path, field, value, r.status_code, r.text[:300])
                walked += 1
    assert walked > 300


def test_dashboard_forms_read_ids_with_the_same_parser(world):
    w = world
    ui = ui_session(w, "mallory", PASSWORD)
    vm, cl = w.ok["vm"], w.ok["cluster"]
    forms = [
        (f"/ui/vm/{vm}/migrate", "host_id", {}),
        (f"/ui/vm/{vm}/clone", "datastore_id", {"name": "c1"}),
        (f"/ui/cluster/{cl}/drs/whatif", "host_id", {"kind": "host-fails"}),
        (f"/ui/cluster/{cl}/drs/whatif", "vm_id", {"kind": "vm-demand"}),
        (f"/ui/vm/{vm}/relocate", "disk_0", {}),
    ]
    for path, field, data in forms:
        target = w.secret["vm" if field == "vm_id" else "datastore" if field in ("datastore_id", "disk_0") else "host"]
        for spelling in non_canonical_query(target):
            r = w.client.post(path, headers=ui, data={**data, field: spelling})
            if spelling == "" and field != "vm_id":
                continue  # an empty optional field means "not given"
            assert r.status_code == 422 and "INVALID_ID" in r.text, (path, field, repr(spelling), r.status_code, r.text[:300])
    for spelling in ("+0", "00", "\u0660", "1_0"):
        r = w.client.post(f"/ui/vm/{vm}/relocate", headers=ui, data={f"disk_{spelling}": str(w.ok["datastore"])})
        assert r.status_code == 422 and "INVALID_ID" in r.text, (spelling, r.status_code, r.text[:300])


def test_every_object_privilege_names_a_path_parameter_of_its_route(settings):
    """requires(on=...) / ui_requires(on=...) read the object's id from the path: a route
    declaring one without that parameter would fail (never fall back to the root)."""
    routes = all_routes(app_for(settings))
    assert any(r.path.startswith("/ui/") for r in routes) and len(routes) > 150
    for route in routes:
        for check in privilege_checks(route):
            if getattr(check, "object_kind", None) and not getattr(check, "deferred", False) and not getattr(check, "anywhere", False):
                assert f"{{{check.param}}}" in route.path, (route.path, check.privilege, check.param)


# --- finding 7: integers beyond the columns ------------------------------------------------------


def test_the_reported_huge_integers_are_422(world):
    w = world
    client, admin = w.client, w.admin
    cases = [
        client.get("/api/v1/vms/9223372036854775808", headers=admin),
        client.get("/api/v1/vms/2147483648", headers=admin),
        client.get("/api/v1/vms", headers=admin, params={"offset": 2**70}),
        client.get("/api/v1/vms", headers=admin, params={"offset": 2**31}),
        client.get("/api/v1/vms", headers=admin, params={"host_id": 2**70}),
        client.get("/api/v1/tasks", headers=admin, params={"object_id": 2**63}),
        client.get("/api/v1/events", headers=admin, params={"task_id": 2**63}),
        client.get("/api/v1/portgroups", headers=admin, params={"vlan_id": 2**63}),
        client.post("/api/v1/vms", headers=admin, json={"name": "big", "host_id": 2**63}),
        client.post("/api/v1/vms", headers=admin, json={"name": "big", "host_id": w.ok["host"], "cpu_reservation_mhz": 2**31}),
        client.post("/api/v1/pools", headers=admin, json={"name": "big", "cluster_id": w.ok["cluster"], "memory_limit_mib": 2**40}),
        client.patch(f"/api/v1/vms/{w.ok['vm']}", headers=admin, json={"version": 2**63}),
        client.post(f"/api/v1/agent/hosts/{w.ok['host']}/state", headers=w.agent, json={"facts": {"hostname": "h1", "cpu_cores": 4, "cpu_mhz": 2000, "memory_mib": 2**40}, "domains": []}),
        client.post(
            f"/api/v1/agent/hosts/{w.ok['host']}/state",
            headers=w.agent,
            json={"facts": {"hostname": "h1"}, "domains": [], "datastores": [{"id": w.ok["datastore"], "capacity_bytes": 2**64, "free_bytes": 0}]},
        ),
    ]
    for r in cases:
        assert r.status_code == 422, (r.request.method, str(r.request.url), r.status_code, r.text[:300])
    # within the columns: a datastore of 2**62 bytes is fine
    r = client.post(
        f"/api/v1/agent/hosts/{w.ok['host']}/state",
        headers=w.agent,
        json={"facts": {"hostname": "h1", "cpu_cores": 4, "cpu_mhz": 2000, "memory_mib": 8192}, "domains": [], "datastores": [{"id": w.ok["datastore"], "capacity_bytes": 2**62, "free_bytes": 2**61}]},
    )
    assert r.status_code == 200, r.text
    assert client.get(f"/api/v1/datastores/{w.ok['datastore']}", headers=admin).json()["capacity_bytes"] == 2**62


def test_huge_integers_anywhere_are_422_not_500(world):
    """As the administrator (no 403 in the way): every id in a path, every integer query
    parameter, every list's id filters, every integer of every JSON body."""
    w = world
    ui = ui_session(w, "mallory", PASSWORD)
    checked = 0
    for route in all_routes(w.client.app):
        if is_streaming(route):
            continue
        headers = ui if route.path.startswith("/ui") else caller(w, route, as_admin=True)
        for name in path_id_params(route):
            for value in HUGE_TEXT:
                r = send(w, route, fill(route, {name: value}, w), headers)
                assert r.status_code == 422, (sorted(route.methods), route.path, name, value, r.status_code, r.text[:300])
                checked += 1
        ints = [p.name for p in query_params(route.dependant) if int in _unwrap(p.field_info.annotation)]
        if "GET" in route.methods:
            ints += LIST_ID_FILTERS.get(route.path, [])
        for name in ints:
            for value in HUGE_TEXT + [str(-(2**63) - 1)]:
                r = send(w, route, fill(route, {}, w), headers, params={name: value})
                assert r.status_code == 422, (route.path, name, value, r.status_code, r.text[:300])
                checked += 1
        model = body_model(route)
        if model is None or route.path.startswith("/ui"):
            continue
        for leaf, is_list, _ in int_leaves(model):
            for value in HUGE_JSON:
                r = send(w, route, fill(route, {}, w), headers, json=body_with(leaf, [value] if is_list else value))
                assert refused_at(r, field_of(leaf, is_list)), (sorted(route.methods), route.path, leaf, value, r.status_code, r.text[:300])
                checked += 1
    assert checked > 1000


# --- the vSphere-compatible API: vm-42, domain-c7, ... read by the same parser -------------------------

# A vSphere route's id path parameter -> the kind of ours it names (folders: group-v<2F+1>).
VSPHERE_PARAMS = {"datacenter": "datacenter", "cluster": "cluster", "host": "host", "datastore": "datastore", "network": "portgroup", "resource_pool": "pool", "vm": "vm", "folder": "folder"}
VSPHERE_FILTERS = {"datacenters": "datacenter", "clusters": "cluster", "hosts": "host", "datastores": "datastore", "networks": "portgroup", "resource_pools": "pool", "vms": "vm", "folders": "folder"}


def vsphere_id(kind: str, text: str) -> str:
    """``text`` (a number's spelling) behind the vSphere prefix of ``kind``."""
    from vcenter.api.vsphere import ids

    return f"group-v{text}" if kind == "folder" else f"{ids.PREFIX[kind]}{text}"


def vsphere_number(kind: str, object_id: int) -> int:
    return 2 * object_id + 1 if kind == "folder" else object_id


def test_no_vsphere_route_reads_a_non_canonical_id(world):
    """Every vSphere route's id in its path, and every id filter of its lists: each
    non-canonical spelling of the id of an object mallory has No access on is 400
    INVALID_ARGUMENT (our INVALID_ID); the canonical id is 403 UNAUTHORIZED."""
    from tests.vsphere_world import basic
    from vcenter.api.vsphere.filters import ALLOWED

    w = world
    client = TestClient(w.client.app, base_url="https://testserver")
    session = client.post("/api/session", headers=basic(("mallory", PASSWORD))).json()
    headers = {"vmware-api-session-id": session}
    walked = refused = 0
    for route in [r for r in http_routes(w.client.app, ("/api/vcenter",)) if "{rest" not in r.path]:
        devices = {"disk": "2000", "nic": "4000"}  # device keys of a VM: not object ids
        for name in [n for n in re.findall(r"\{(\w+)\}", route.path) if n not in devices]:
            kind = VSPHERE_PARAMS[name]
            number = vsphere_number(kind, w.secret[kind])
            path = route.path.replace("{disk}", devices["disk"]).replace("{nic}", devices["nic"])
            denied = client.get(path.replace(f"{{{name}}}", vsphere_id(kind, str(number))), headers=headers)
            assert denied.status_code == 403 and denied.json()["error_type"] == "UNAUTHORIZED", (route.path, denied.status_code, denied.text)
            refused += 1
            for spelling in walk_spellings(number):
                r = client.get(path.replace(f"{{{name}}}", vsphere_id(kind, spelling)), headers=headers)
                assert r.status_code == 400 and r.json()["messages"][0]["id"] == "virtcenter.INVALID_ID", (route.path, spelling, r.status_code, r.text[:300])
                walked += 1
        if "{" not in route.path:
            takes = ALLOWED[route.path.rsplit("/", 1)[1].replace("-", "_")]
            for name, kind in VSPHERE_FILTERS.items():
                if name not in takes:  # not a filter of this list: ignored, as vCenter does
                    continue
                for spelling in non_canonical_query(vsphere_number(kind, w.secret[kind])):
                    r = client.get(route.path, headers=headers, params={name: vsphere_id(kind, spelling)})
                    assert r.status_code == 400 and r.json()["messages"][0]["id"] == "virtcenter.INVALID_ID", (route.path, name, repr(spelling), r.status_code, r.text[:300])
                    walked += 1
    assert refused == 17 and walked > 400, (refused, walked)
