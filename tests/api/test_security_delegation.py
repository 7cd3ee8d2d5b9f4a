"""Delegation never escalates, actors are ids, passwords follow a policy (issue 15, findings 2,
3, 4, 9 and 11's passwords).

- Each finding as the hostile user tried it, refused now.
- A matrix over every route that changes a user, a group, a role or a permission (found in
  app.routes, so a new route without a case fails here): actors holding less than, the same as
  and more than the target; less is a 403 with a stable code and the database unchanged.
- A deleted user's or group's permissions, memberships and tokens go with it; ids are never
  reused (both databases).
- System actor names cannot be taken; events and tasks are one's own by user id.
- Passwords: minimum length (a setting), common ones refused, on the API and the CLI.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.apihelpers import app_for, login, make_admin
from tests.api.test_permissions import api_routes
from vcenter.db.models import ApiToken, Event, Group, GroupMember, LoginSession, Permission, Role, Task, User
from vcenter.db.session import session_scope
from vcenter.domain.privileges import ANONYMOUS, PRIVILEGES


STRONG = "tangerine-kayak-orbit"
OTHER_STRONG = "marble-lantern-fjord"
ALL = sorted(p for p in PRIVILEGES if p != ANONYMOUS)
MANAGE = {"System.View", "Users.Modify", "Permissions.Modify", "Authorization.ModifyRoles"}
TARGET = MANAGE | {"VirtualMachine.PowerOn"}
LEVELS = {"less": MANAGE, "same": TARGET, "more": TARGET | {"VirtualMachine.PowerOff"}}


@pytest.fixture
def client(settings):
    make_admin(settings)
    with TestClient(app_for(settings)) as c:
        yield c


def _user(client, admin, name: str, password: str = STRONG) -> tuple[int, dict[str, str]]:
    r = client.post("/api/v1/users", headers=admin, json={"username": name, "password": password})
    assert r.status_code == 201, r.text
    return r.json()["id"], login(client, name, password)


def _role(client, admin, name: str, privileges) -> int:
    r = client.post("/api/v1/roles", headers=admin, json={"name": name, "privileges": sorted(privileges)})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _grant(client, admin, principal_id: int, role_id: int, principal_type: str = "user", object_type: str = "root", object_id: int = 0) -> dict:
    r = client.post("/api/v1/permissions", headers=admin, json={"principal_type": principal_type, "principal_id": principal_id, "role_id": role_id, "object_type": object_type, "object_id": object_id})
    assert r.status_code == 201, r.text
    return r.json()


def _builtin(client, admin, name: str) -> int:
    return next(r["id"] for r in client.get("/api/v1/roles", headers=admin).json() if r["name"] == name)


def _group(client, admin, name: str, members: list[str] = ()) -> int:
    r = client.post("/api/v1/groups", headers=admin, json={"name": name, "members": list(members)})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _can_login(client, username: str, password: str) -> bool:
    return client.post("/api/v1/session", json={"username": username, "password": password}).status_code == 201


def _db(client):
    return session_scope(client.app.state.runtime.settings.database_url)


def _snapshot(client) -> dict[str, Any]:
    """Every row that says who holds what (password hashes included)."""
    with _db(client) as session:
        return {
            "users": sorted(session.execute(select(User.id, User.username, User.password_hash, User.is_admin, User.disabled)).all()),
            "groups": sorted(session.execute(select(Group.id, Group.name)).all()),
            "members": sorted(session.execute(select(GroupMember.group_id, GroupMember.user_id)).all()),
            "roles": sorted((r.id, r.name, tuple(sorted(r.privileges or [])), r.description) for r in session.scalars(select(Role))),
            "permissions": sorted(
                session.execute(select(Permission.id, Permission.principal_type, Permission.principal_id, Permission.role_id, Permission.object_type, Permission.object_id, Permission.propagate)).all()
            ),
        }


# --- the findings, as reported ------------------------------------------------------------


def test_finding_2_users_modify_alone_does_not_make_an_administrator(client):
    admin = login(client)
    uid, usermod = _user(client, admin, "usermod")
    _grant(client, admin, uid, _role(client, admin, "usermod-role", ["Users.Modify"]))
    admin_id = next(u["id"] for u in client.get("/api/v1/users", headers=admin).json() if u["username"] == "admin")
    # an administrator's password
    hijack = client.patch(f"/api/v1/users/{admin_id}", headers=usermod, json={"password": "hijacked-password-1"})
    assert hijack.status_code == 403 and hijack.json()["code"] == "ADMINISTRATORS_ONLY", hijack.text
    assert _can_login(client, "admin", "secret-pass-phrase") and not _can_login(client, "admin", "hijacked-password-1")
    # nor disabling or deleting it
    assert client.patch(f"/api/v1/users/{admin_id}", headers=usermod, json={"disabled": True}).json()["code"] == "ADMINISTRATORS_ONLY"
    assert client.delete(f"/api/v1/users/{admin_id}", headers=usermod).json()["code"] == "ADMINISTRATORS_ONLY"
    # a group holding Administrator on the root
    admins = _group(client, admin, "admins")
    _grant(client, admin, admins, _builtin(client, admin, "Administrator"), principal_type="group")
    before = _snapshot(client)
    join = client.patch(f"/api/v1/groups/{admins}", headers=usermod, json={"members": ["usermod"]})
    assert join.status_code == 403 and join.json()["code"] == "ADMINISTRATORS_ONLY", join.text
    assert _snapshot(client) == before
    assert client.get("/api/v1/privileges/effective", headers=usermod).json()["privileges"] == ["Users.Modify"]
    # the refusal is in the audit log
    refused = client.get("/api/v1/events", headers=admin, params={"kind": "authz.refused", "username": "usermod"}).json()["items"]
    assert any(e["reason"] == "ADMINISTRATORS_ONLY" for e in refused)


def test_finding_3_a_role_manager_does_not_widen_a_role_it_holds(client):
    admin = login(client)
    uid, manager = _user(client, admin, "rolemgr")
    own = _role(client, admin, "role-manager", ["System.View", "Authorization.ModifyRoles"])
    _grant(client, admin, uid, own)
    widen = client.patch(f"/api/v1/roles/{own}", headers=manager, json={"privileges": ALL})
    assert widen.status_code == 403 and widen.json()["code"] == "ROLE_HELD_BY_ACTOR", widen.text
    # not even a harmless-looking change of it, nor through a group holding it
    assert client.patch(f"/api/v1/roles/{own}", headers=manager, json={"privileges": ["System.View", "Authorization.ModifyRoles", "Users.Modify"]}).status_code == 403
    _, via_group = _user(client, admin, "rolemgr2")
    shared = _role(client, admin, "role-manager-2", ["System.View", "Authorization.ModifyRoles"])
    group = _group(client, admin, "role-managers", ["rolemgr2"])
    _grant(client, admin, group, shared, principal_type="group")
    before = _snapshot(client)
    assert client.patch(f"/api/v1/roles/{shared}", headers=via_group, json={"privileges": ALL}).json()["code"] == "ROLE_HELD_BY_ACTOR"
    assert _snapshot(client) == before
    assert sorted(client.get("/api/v1/privileges/effective", headers=manager).json()["privileges"]) == ["Authorization.ModifyRoles", "System.View"]
    # a role with every privilege is the administrators' to make, even unheld
    assert client.post("/api/v1/roles", headers=manager, json={"name": "everything", "privileges": ALL}).json()["code"] == "ADMINISTRATORS_ONLY"


def test_finding_4_a_deleted_users_permissions_tokens_and_memberships_go_with_it(client):
    admin = login(client)
    a_id, a = _user(client, admin, "user-a")
    _grant(client, admin, a_id, _builtin(client, admin, "Administrator"))
    group = _group(client, admin, "ops", ["user-a"])
    _grant(client, admin, group, _builtin(client, admin, "Read-only"), principal_type="group")
    token = client.post("/api/v1/session/tokens", headers=a, json={"name": "script", "role_id": _builtin(client, admin, "Read-only")})
    assert token.status_code == 201
    assert client.delete(f"/api/v1/users/{a_id}", headers=admin).status_code == 204
    with _db(client) as session:
        assert session.scalars(select(Permission).where(Permission.principal_type == "user", Permission.principal_id == a_id)).all() == []
        assert session.scalars(select(GroupMember).where(GroupMember.user_id == a_id)).all() == []
        assert session.scalars(select(ApiToken).where(ApiToken.user_id == a_id)).all() == []
        assert session.scalars(select(LoginSession).where(LoginSession.user_id == a_id)).all() == []
    b_id, b = _user(client, admin, "user-b")
    assert b_id > a_id  # never reused (SQLite AUTOINCREMENT, PostgreSQL sequences)
    assert client.get("/api/v1/privileges/effective", headers=b).json()["privileges"] == []
    assert [p for p in client.get("/api/v1/permissions", headers=admin).json() if p["principal_type"] == "user"] == []
    # a group's permissions and memberships go with the group, and its id is not reused either
    _group(client, admin, "spare", ["user-b"])
    spare = next(g["id"] for g in client.get("/api/v1/groups", headers=admin).json() if g["name"] == "spare")
    assert client.delete(f"/api/v1/groups/{group}", headers=admin).status_code == 204
    assert client.delete(f"/api/v1/groups/{spare}", headers=admin).status_code == 204
    with _db(client) as session:
        assert session.scalars(select(Permission).where(Permission.principal_type == "group")).all() == []
        assert session.scalars(select(GroupMember)).all() == []
    assert _group(client, admin, "later") > spare
    role = _role(client, admin, "short-lived", ["System.View"])
    assert client.delete(f"/api/v1/roles/{role}", headers=admin).status_code == 204
    assert _role(client, admin, "after-it", ["System.View"]) > role


def test_finding_9_system_actor_names_cannot_be_taken_and_events_are_ones_own_by_id(client):
    admin = login(client)
    for name in ("system", "System", "drs", "dpm", "ha", "scheduler", "cli"):
        r = client.post("/api/v1/users", headers=admin, json={"username": name, "password": STRONG})
        assert r.status_code == 422 and r.json()["code"] == "RESERVED_USERNAME", (name, r.text)
    # System events exist (no object: shown to nobody but administrators and auditors of it).
    from vcenter.services.tasks.events import record_event

    with _db(client) as session:
        record_event(session, "ha.frozen", "HA frozen: test", reason="HA_FROZEN")
        # a user named like an actor, as a database from before could hold
        session.add(User(username="system", password_hash=PasswordHasher().hash(STRONG)))
    impostor = login(client, "system", STRONG)
    seen = client.get("/api/v1/events", headers=impostor, params={"limit": 500}).json()["items"]
    assert [e["kind"] for e in seen] == ["session.login"], seen  # its own login only, not the system's events
    _, nobody = _user(client, admin, "nobody")
    assert [e for e in client.get("/api/v1/events", headers=nobody, params={"limit": 500}).json()["items"] if e["username"] != "nobody"] == []
    # One's own events by id: a later user of the same name does not see the first one's.
    alice_id, alice = _user(client, admin, "alice")
    assert client.post("/api/v1/session/tokens", headers=alice, json={"name": "mine", "role_id": _builtin(client, admin, "Read-only")}).status_code == 201
    with _db(client) as session:
        created = session.scalars(select(Event).where(Event.kind == "token.created")).one()
        assert created.user_id == alice_id and created.username == "alice"
        # an API change carries its actor's id
        admin_id = session.scalar(select(User.id).where(User.username == "admin"))
        assert session.scalars(select(Event.user_id).where(Event.kind == "user.created", Event.object_name == "alice")).one() == admin_id
    assert "token.created" in {e["kind"] for e in client.get("/api/v1/events", headers=alice).json()["items"]}
    assert client.delete(f"/api/v1/users/{alice_id}", headers=admin).status_code == 204
    _, alice2 = _user(client, admin, "alice")
    assert "token.created" not in {e["kind"] for e in client.get("/api/v1/events", headers=alice2, params={"limit": 500}).json()["items"]}


def test_finding_9_own_tasks_are_decided_by_id(client):
    admin = login(client)
    bob_id, bob = _user(client, admin, "bob")
    with _db(client) as session:
        theirs = Task(kind="vm.powerOn", object_type="vm", object_id=4242, username="bob", user_id=bob_id + 1000)
        mine = Task(kind="vm.powerOn", object_type="vm", object_id=4243, username="bob", user_id=bob_id)
        session.add_all([theirs, mine])
        session.flush()
        theirs_id, mine_id = theirs.id, mine.id
    # same name, another id: not bob's (a user of that name before, or a system actor)
    assert client.get(f"/api/v1/tasks/{theirs_id}", headers=bob).status_code == 403
    assert client.post(f"/api/v1/tasks/{theirs_id}/cancel", headers=bob).status_code == 403
    mine_read = client.get(f"/api/v1/tasks/{mine_id}", headers=bob)
    assert mine_read.status_code == 200 and mine_read.json()["user_id"] == bob_id
    listed = {t["id"] for t in client.get("/api/v1/tasks", headers=bob).json()["items"]}
    assert listed == {mine_id}
    assert client.post(f"/api/v1/tasks/{mine_id}/cancel", headers=bob).status_code == 202


def test_tasks_and_events_take_the_actors_id(settings):
    from vcenter.services.tasks.events import bind_actor, current_actor, record_event
    from vcenter.services.tasks.tasks import start_task

    make_admin(settings)
    with session_scope(settings.database_url) as session:
        admin_id = session.scalar(select(User.id).where(User.username == "admin"))
        token = current_actor.set(None)
        try:
            bind_actor(admin_id, "admin")
            by_actor = start_task(session, kind="x", object_type="vm", object_id=1, username="admin")
            current_actor.set(None)
            by_name = start_task(session, kind="x", object_type="vm", object_id=2, username="admin")
            by_system = start_task(session, kind="x", object_type="vm", object_id=3, username="drs")
            about_task = record_event(session, "task.note", "n", username="admin", task_id=by_system.id)
            by_ha = record_event(session, "ha.note", "n", username="ha")
        finally:
            current_actor.reset(token)
        assert (by_actor.user_id, by_name.user_id, by_system.user_id) == (admin_id, admin_id, None)
        assert about_task.user_id == admin_id and by_ha.user_id is None


# --- the matrix: every route changing a user, group, role or permission --------------------


@dataclass
class Case:
    """One request against a fresh target; ``expect`` per actor level: the status, and for a
    refusal its code. ``check`` (optional) proves the effect of an admitted request."""

    prepare: Callable[..., tuple[str, Any]]
    expect: dict[str, tuple[int, str | None]]
    check: Callable[..., None] | None = None


def _target_user(client, admin, n: int, target_role: int) -> tuple[int, str]:
    name = f"target{n}"
    uid, _ = _user(client, admin, name)
    _grant(client, admin, uid, target_role)
    return uid, name


REFUSED = (403, "DELEGATION_EXCEEDS_OWN")
ADMINS_ONLY = (403, "ADMINISTRATORS_ONLY")


def _cases() -> dict[tuple[str, str], list[Case]]:
    ok = lambda status: {"less": (status, None), "same": (status, None), "more": (status, None)}  # noqa: E731
    graded = lambda status: {"less": REFUSED, "same": (status, None), "more": (status, None)}  # noqa: E731
    admins_only = {"less": ADMINS_ONLY, "same": ADMINS_ONLY, "more": ADMINS_ONLY, "administrator": (None, None)}

    def user_patch(client, admin, n, w, actor):
        uid, name = _target_user(client, admin, n, w["target_role"])
        return f"/api/v1/users/{uid}", {"password": OTHER_STRONG}

    def user_patch_admin(client, admin, n, w, actor):
        uid, _ = _user(client, admin, f"admin{n}")
        assert client.patch(f"/api/v1/users/{uid}", headers=admin, json={"is_admin": True}).status_code == 200
        return f"/api/v1/users/{uid}", {"disabled": True}

    def user_delete(client, admin, n, w, actor):
        uid, _ = _target_user(client, admin, n, w["target_role"])
        return f"/api/v1/users/{uid}", None

    def group_create(client, admin, n, w, actor):
        _, name = _target_user(client, admin, n, w["target_role"])
        return "/api/v1/groups", {"name": f"g{n}", "members": [name]}

    def group_with_target_role(client, admin, n, w):
        gid = _group(client, admin, f"g{n}")
        _grant(client, admin, gid, w["target_role"], principal_type="group")
        return gid

    def group_join(client, admin, n, w, actor):
        return f"/api/v1/groups/{group_with_target_role(client, admin, n, w)}", {"members": [actor]}

    def group_rename(client, admin, n, w, actor):
        return f"/api/v1/groups/{group_with_target_role(client, admin, n, w)}", {"name": f"renamed{n}"}

    def group_delete(client, admin, n, w, actor):
        return f"/api/v1/groups/{group_with_target_role(client, admin, n, w)}", None

    def role_create(client, admin, n, w, actor):
        return "/api/v1/roles", {"name": f"r{n}", "privileges": sorted(TARGET)}

    def role_create_all(client, admin, n, w, actor):
        return "/api/v1/roles", {"name": f"r{n}", "privileges": ALL}

    def held_role(client, admin, n, w):
        role = _role(client, admin, f"r{n}", TARGET)
        uid, _ = _user(client, admin, f"holder{n}")
        _grant(client, admin, uid, role)
        return role

    def role_widen(client, admin, n, w, actor):
        return f"/api/v1/roles/{held_role(client, admin, n, w)}", {"privileges": sorted(TARGET | {"VirtualMachine.PowerOff"})}

    def role_describe(client, admin, n, w, actor):
        return f"/api/v1/roles/{held_role(client, admin, n, w)}", {"description": "changed"}

    def role_delete(client, admin, n, w, actor):
        return f"/api/v1/roles/{_role(client, admin, f'r{n}', TARGET)}", None

    def role_delete_all(client, admin, n, w, actor):
        return f"/api/v1/roles/{_role(client, admin, f'r{n}', ALL)}", None

    def permission_narrow(client, admin, n, w, actor):
        uid, _ = _target_user(client, admin, n, w["target_role"])
        return "/api/v1/permissions", {"principal_type": "user", "principal_id": uid, "role_id": w["read_only"], "object_type": "datacenter", "object_id": w["dc"]}

    def permission_widen(client, admin, n, w, actor):
        uid, _ = _user(client, admin, f"fresh{n}")
        return "/api/v1/permissions", {"principal_type": "user", "principal_id": uid, "role_id": w["target_role"], "object_type": "datacenter", "object_id": w["dc"]}

    def permission_delete(client, admin, n, w, actor):
        uid, _ = _target_user(client, admin, n, w["target_role"])
        perm = next(p for p in client.get("/api/v1/permissions", headers=admin).json() if p["principal_type"] == "user" and p["principal_id"] == uid)
        return f"/api/v1/permissions/{perm['id']}", None

    def password_changed(client, path, body):
        name = next(u["username"] for u in client.get("/api/v1/users", headers=login(client)).json() if path.endswith(f"/{u['id']}"))
        assert _can_login(client, name, OTHER_STRONG)

    return {
        ("POST", "/api/v1/users"): [
            Case(lambda c, a, n, w, actor: ("/api/v1/users", {"username": f"plain{n}", "password": STRONG}), ok(201)),
            Case(lambda c, a, n, w, actor: ("/api/v1/users", {"username": f"boss{n}", "password": STRONG, "is_admin": True}), {**admins_only, "administrator": (201, None)}),
        ],
        ("PATCH", "/api/v1/users/{user_id}"): [Case(user_patch, graded(200), password_changed), Case(user_patch_admin, {**admins_only, "administrator": (200, None)})],
        ("DELETE", "/api/v1/users/{user_id}"): [Case(user_delete, graded(204))],
        ("POST", "/api/v1/groups"): [Case(group_create, graded(201))],
        ("PATCH", "/api/v1/groups/{group_id}"): [Case(group_join, graded(200)), Case(group_rename, graded(200))],
        ("DELETE", "/api/v1/groups/{group_id}"): [Case(group_delete, graded(204))],
        ("POST", "/api/v1/roles"): [Case(role_create, ok(201)), Case(role_create_all, {**admins_only, "administrator": (201, None)})],
        # widening a held role: "same" does not hold what the holder would gain
        ("PATCH", "/api/v1/roles/{role_id}"): [Case(role_widen, {"less": REFUSED, "same": REFUSED, "more": (200, None)}), Case(role_describe, graded(200))],
        ("DELETE", "/api/v1/roles/{role_id}"): [Case(role_delete, ok(204)), Case(role_delete_all, {**admins_only, "administrator": (204, None)})],
        # "less" lacks VirtualMachine.PowerOn where it would give it: the older check answers
        ("POST", "/api/v1/permissions"): [Case(permission_narrow, graded(201)), Case(permission_widen, {"less": (403, "GRANT_EXCEEDS_OWN"), "same": (201, None), "more": (201, None)})],
        ("DELETE", "/api/v1/permissions/{permission_id}"): [Case(permission_delete, graded(204))],
    }


def test_every_route_changing_users_groups_roles_or_permissions_refuses_an_actor_holding_less(client):
    admin = login(client)
    cases = _cases()
    changing = {
        (method, route.path)
        for route in api_routes(client.app)
        for method in route.methods
        # /api/v1's routes: the vSphere-compatible ones (/api/session, /api/vcenter/...) change none of these
        if method not in ("GET", "HEAD") and route.path.startswith("/api/v1/") and route.path.split("/")[3] in ("users", "groups", "roles", "permissions")
    }
    assert changing == set(cases), f"routes without a delegation case: {sorted(changing - set(cases))}"
    dc = client.post("/api/v1/datacenters", headers=admin, json={"name": "dc1"}).json()["id"]
    world = {"target_role": _role(client, admin, "target-role", TARGET), "read_only": _builtin(client, admin, "Read-only"), "dc": dc}
    actors = {"administrator": ("admin", admin)}
    for level, privileges in LEVELS.items():
        uid, headers = _user(client, admin, f"actor-{level}")
        _grant(client, admin, uid, _role(client, admin, f"actor-role-{level}", privileges))
        actors[level] = (f"actor-{level}", headers)
    counter = itertools.count()
    checked = 0
    for (method, path), route_cases in sorted(cases.items()):
        for case in route_cases:
            for level, (status, code) in case.expect.items():
                if status is None:
                    continue
                name, headers = actors[level]
                url, body = case.prepare(client, admin, next(counter), world, name)
                before = _snapshot(client)
                r = client.request(method, url, headers=headers, json=body)
                assert r.status_code == status, (method, path, level, body, r.text)
                if status == 403:
                    assert r.json()["code"] == code, (method, path, level, r.text)
                    assert _snapshot(client) == before, (method, path, level, "changed although refused")
                elif case.check is not None:
                    case.check(client, url, body)
                checked += 1
    assert checked >= 50


def test_an_api_token_narrows_an_administrator_for_delegation_too(client):
    admin = login(client)
    ops = _role(client, admin, "ops-role", MANAGE)
    token = client.post("/api/v1/session/tokens", headers=admin, json={"name": "automation", "role_id": ops}).json()["token"]
    narrowed = {"Authorization": f"Bearer {token}"}
    admin_id = next(u["id"] for u in client.get("/api/v1/users", headers=admin).json() if u["username"] == "admin")
    # the token holds the management privileges only: no longer an administrator's hand
    assert client.patch(f"/api/v1/users/{admin_id}", headers=narrowed, json={"password": OTHER_STRONG}).json()["code"] == "ADMINISTRATORS_ONLY"
    assert client.patch(f"/api/v1/roles/{ops}", headers=narrowed, json={"privileges": ALL}).json()["code"] == "ROLE_HELD_BY_ACTOR"


def test_a_narrower_permission_below_does_not_hide_a_missing_privilege(client):
    """Object by object: an actor with a role on the root but "No access" on a datacenter does
    not cover a target holding the same role everywhere."""
    admin = login(client)
    dc = client.post("/api/v1/datacenters", headers=admin, json={"name": "dc-x"}).json()["id"]
    same = _role(client, admin, "same-role", TARGET)
    uid, actor = _user(client, admin, "fenced")
    _grant(client, admin, uid, same)
    _grant(client, admin, uid, _builtin(client, admin, "No access"), object_type="datacenter", object_id=dc)
    tid, _ = _user(client, admin, "everywhere")
    _grant(client, admin, tid, same)
    refused = client.patch(f"/api/v1/users/{tid}", headers=actor, json={"password": OTHER_STRONG})
    assert refused.status_code == 403 and refused.json()["code"] == "DELEGATION_EXCEEDS_OWN"
    missing = refused.json()["details"]["missing"]
    assert missing[0]["object_type"] == "datacenter" and missing[0]["object_id"] == dc and "VirtualMachine.PowerOn" in missing[0]["privileges"]
    # and a target fenced the same way is covered
    fid, _ = _user(client, admin, "fenced-too")
    _grant(client, admin, fid, same)
    _grant(client, admin, fid, _builtin(client, admin, "No access"), object_type="datacenter", object_id=dc)
    assert client.patch(f"/api/v1/users/{fid}", headers=actor, json={"password": OTHER_STRONG}).status_code == 200
    # Checked after the change too: a user whose own "No access" on the datacenter hides what a
    # group gives it there; removing that "No access" would widen it beyond the actor.
    uid, widener = _user(client, admin, "widener")
    _grant(client, admin, uid, same)
    hidden = _user(client, admin, "hidden")[0]
    big = _group(client, admin, "big-on-dc", ["hidden"])
    _grant(client, admin, big, _role(client, admin, "big", TARGET | {"VirtualMachine.PowerOff"}), principal_type="group", object_type="datacenter", object_id=dc)
    fence = _grant(client, admin, hidden, _builtin(client, admin, "No access"), object_type="datacenter", object_id=dc)
    assert client.patch(f"/api/v1/users/{hidden}", headers=widener, json={"password": OTHER_STRONG}).status_code == 200  # covered as it is
    before = _snapshot(client)
    removed = client.delete(f"/api/v1/permissions/{fence['id']}", headers=widener)
    assert removed.status_code == 403 and removed.json()["code"] == "DELEGATION_EXCEEDS_OWN", removed.text
    assert removed.json()["details"]["missing"][0]["privileges"] == ["VirtualMachine.PowerOff"]
    assert _snapshot(client) == before


# --- passwords ----------------------------------------------------------------------------

WEAK = [
    ("12345678", "too_short"),
    ("short-pass1", "too_short"),
    ("password1234", "common"),
    ("Password2024!", "common"),
    ("qwerty123456", "common"),
    ("abcabcabcabc", "repeated"),
    ("aaaaaaaaaaaa", "repeated"),
    ("newcomer-one", "user_name"),
]


def test_weak_passwords_are_refused_on_create_and_change(client):
    admin = login(client)
    for password, reason in WEAK:
        r = client.post("/api/v1/users", headers=admin, json={"username": "newcomer-one", "password": password})
        assert r.status_code == 422 and r.json()["code"] == "WEAK_PASSWORD" and r.json()["details"]["reason"] == reason, (password, r.text)
    uid, _ = _user(client, admin, "newcomer-one")
    for password, reason in WEAK:
        r = client.patch(f"/api/v1/users/{uid}", headers=admin, json={"password": password})
        assert r.status_code == 422 and r.json()["code"] == "WEAK_PASSWORD" and r.json()["details"]["reason"] == reason, (password, r.text)
    assert _can_login(client, "newcomer-one", STRONG)


def test_the_minimum_length_is_a_setting_and_common_passwords_stay_refused(settings):
    make_admin(settings)
    with TestClient(app_for(settings.model_copy(update={"password_min_length": 8}))) as client:
        admin = login(client)
        assert client.post("/api/v1/users", headers=admin, json={"username": "u1", "password": "12345678"}).json()["details"]["reason"] == "common"
        assert client.post("/api/v1/users", headers=admin, json={"username": "u1", "password": "kx7-vqe2"}).status_code == 201
    with TestClient(app_for(settings.model_copy(update={"password_min_length": 24}))) as client:
        admin = login(client)
        r = client.post("/api/v1/users", headers=admin, json={"username": "u2", "password": STRONG})
        assert r.status_code == 422 and r.json()["details"] == {"field": "password", "reason": "too_short", "min_length": 24}


def test_the_cli_applies_the_password_policy_and_the_reserved_names(settings, monkeypatch):
    from typer.testing import CliRunner

    from vcenter.cli import app
    from vcenter.core.settings import reset_settings_cache

    monkeypatch.setenv("VCENTER_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("VCENTER_KEY_DIR", settings.key_dir)
    monkeypatch.setenv("VCENTER_LOG_LEVEL", "WARNING")
    reset_settings_cache()
    try:
        runner = CliRunner()
        weak = runner.invoke(app, ["admin", "create", "root2", "--password", "12345678"])
        assert weak.exit_code == 2 and "WEAK_PASSWORD" in weak.output, weak.output
        reserved = runner.invoke(app, ["admin", "create", "scheduler", "--password", STRONG])
        assert reserved.exit_code == 2 and "RESERVED_USERNAME" in reserved.output, reserved.output
        good = runner.invoke(app, ["admin", "create", "root2", "--password", STRONG])
        assert good.exit_code == 0, good.output
        reset = runner.invoke(app, ["admin", "create", "root2", "--password", "password", "--exist-ok"])
        assert reset.exit_code == 2 and "WEAK_PASSWORD" in reset.output
    finally:
        reset_settings_cache()
    with session_scope(settings.database_url) as session:
        assert session.scalars(select(User.username).order_by(User.id)).all() == ["root2"]
