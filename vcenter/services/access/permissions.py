"""Roles, groups and permissions: the use cases behind /api/v1/{roles,groups,permissions}.

Built-in roles (Administrator, Read-only, No access, VM operator) cannot change or go; a role
in use by a permission or an API token cannot be deleted (409 naming the count). Permissions
are set on inventory objects (``root`` 0 for the whole inventory); one per principal and object.

Delegation never escalates (vcenter.services.access.delegation): every change here is made by an
``Actor`` that must hold everything each principal the change touches holds, before and after
the change (a group's members, a role's holders, a permission's user or group and its
members); nobody but an administrator edits a role it holds, or touches an
administrator-equivalent group or role. Deleting a group deletes its permissions and its
memberships in the same transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from vcenter.core.errors import Conflict, Forbidden, Invalid, NotFound
from vcenter.db.models import ApiToken, Group, GroupMember, Permission, Role, User
from vcenter.domain.delegation import role_is_administrator_equivalent
from vcenter.domain.privileges import unknown_privileges
from vcenter.services.access import authz
from vcenter.services.access.delegation import Actor, role_holders
from vcenter.services.tasks.events import record_event
from vcenter.services.inventory.inventory import KINDS

OBJECT_KINDS = ("root", "datacenter", "folder", "cluster", "host", "datastore", "portgroup", "pool", "vm")


def role_read(role: Role) -> dict[str, Any]:
    return {"id": role.id, "name": role.name, "builtin": role.builtin, "description": role.description, "privileges": sorted(authz.role_privileges(role))}


def list_roles(session: Session) -> list[dict[str, Any]]:
    authz.ensure_builtin_roles(session)
    return [role_read(r) for r in session.scalars(select(Role).order_by(Role.id))]


def _role(session: Session, role_id: int) -> Role:
    role = session.get(Role, role_id)
    if role is None:
        raise NotFound(f"role {role_id} not found", code="ROLE_NOT_FOUND")
    return role


def _validate_privileges(privileges: list[str]) -> list[str]:
    unknown = unknown_privileges(privileges)
    if unknown:
        raise Invalid(f"unknown privileges: {', '.join(unknown)}", code="UNKNOWN_PRIVILEGE", details={"field": "privileges", "unknown": unknown})
    return sorted(set(privileges))


def create_role(session: Session, actor: Actor, name: str, privileges: list[str], description: str = "") -> dict[str, Any]:
    authz.ensure_builtin_roles(session)
    if session.scalar(select(Role).where(Role.name == name)) is not None:
        raise Conflict(f"role {name} exists", code="ROLE_EXISTS")
    privileges = _validate_privileges(privileges)
    if role_is_administrator_equivalent(privileges):
        actor.require_administrator(f"role {name}: it would hold every privilege")
    role = Role(name=name, privileges=privileges, description=description, builtin=False)
    session.add(role)
    session.flush()
    record_event(
        session,
        "role.created",
        f"role {name} created: {', '.join(role.privileges) or 'no privileges'}",
        username=actor.name,
        user_id=actor.user.id,
        object_type="role",
        object_id=role.id,
        object_name=name,
    )
    return role_read(role)


def _require_covers_holders(session: Session, actor: Actor, role_id: int) -> None:
    users, group_ids = role_holders(session, role_id)
    for group_id in group_ids:
        group = session.get(Group, group_id)
        actor.require_covers_group(group_id, group.name if group else str(group_id))
    for user in users:
        actor.require_covers_user(user)


def update_role(session: Session, actor: Actor, role_id: int, changes: dict[str, Any]) -> dict[str, Any]:
    """Change a custom role. Its holders' privileges change with it: the actor must hold what
    each holder holds before and after; never a role the actor holds itself."""
    role = _role(session, role_id)
    if role.builtin:
        raise Conflict(f"role {role.name} is built in", code="ROLE_BUILTIN")
    actor.require_not_holding(role)
    new_privileges = _validate_privileges(changes["privileges"]) if changes.get("privileges") is not None else None
    if role_is_administrator_equivalent(role.privileges or []) or (new_privileges is not None and role_is_administrator_equivalent(new_privileges)):
        actor.require_administrator(f"role {role.name}: it holds or would hold every privilege")
    _require_covers_holders(session, actor, role.id)
    before = sorted(role.privileges)
    if changes.get("name") is not None and changes["name"] != role.name:
        if session.scalar(select(Role).where(Role.name == changes["name"])) is not None:
            raise Conflict(f"role {changes['name']} exists", code="ROLE_EXISTS")
        role.name = changes["name"]
    if new_privileges is not None:
        role.privileges = new_privileges
    if changes.get("description") is not None:
        role.description = changes["description"]
    session.flush()
    if new_privileges is not None:
        _require_covers_holders(session, actor, role.id)
    record_event(
        session,
        "role.updated",
        f"role {role.name} updated",
        username=actor.name,
        user_id=actor.user.id,
        object_type="role",
        object_id=role.id,
        object_name=role.name,
        data={"before": before, "after": sorted(role.privileges)},
    )
    return role_read(role)


def delete_role(session: Session, actor: Actor, role_id: int) -> None:
    role = _role(session, role_id)
    if role.builtin:
        raise Conflict(f"role {role.name} is built in", code="ROLE_BUILTIN")
    actor.require_not_holding(role)
    if role_is_administrator_equivalent(role.privileges or []):
        actor.require_administrator(f"role {role.name}: it holds every privilege")
    uses = (session.scalar(select(func.count()).select_from(Permission).where(Permission.role_id == role.id)) or 0) + (
        session.scalar(select(func.count()).select_from(ApiToken).where(ApiToken.role_id == role.id, ApiToken.revoked.is_(False))) or 0
    )
    if uses:
        raise Conflict(f"role {role.name} is used by {uses} permissions or tokens", code="ROLE_IN_USE", details={"uses": uses})
    # Revoked tokens still name the role (a RESTRICT key): they are dead, they go with it.
    session.execute(delete(ApiToken).where(ApiToken.role_id == role.id, ApiToken.revoked.is_(True)))
    session.delete(role)
    record_event(session, "role.deleted", f"role {role.name} deleted", username=actor.name, user_id=actor.user.id, object_type="role", object_id=role_id, object_name=role.name)


# --- groups ------------------------------------------------------------------------------


def group_read(session: Session, group: Group) -> dict[str, Any]:
    members = session.scalars(select(User.username).join(GroupMember, GroupMember.user_id == User.id).where(GroupMember.group_id == group.id).order_by(User.username))
    return {"id": group.id, "name": group.name, "members": list(members)}


def list_groups(session: Session) -> list[dict[str, Any]]:
    return [group_read(session, g) for g in session.scalars(select(Group).order_by(Group.id))]


def _group(session: Session, group_id: int) -> Group:
    group = session.get(Group, group_id)
    if group is None:
        raise NotFound(f"group {group_id} not found", code="GROUP_NOT_FOUND")
    return group


def _users_by_name(session: Session, usernames: list[str]) -> list[User]:
    if not usernames:
        return []
    users = list(session.scalars(select(User).where(User.username.in_(usernames))))
    missing = sorted(set(usernames) - {u.username for u in users})
    if missing:
        raise Invalid(f"no such users: {', '.join(missing)}", code="INVALID_REFERENCE", details={"field": "members", "missing": missing})
    return users


def _member_ids(session: Session, group_id: int) -> set[int]:
    return set(session.scalars(select(GroupMember.user_id).where(GroupMember.group_id == group_id)))


def _require_covers_users(session: Session, actor: Actor, user_ids: set[int]) -> None:
    for user in session.scalars(select(User).where(User.id.in_(sorted(user_ids) or [-1])).order_by(User.id)):
        actor.require_covers_user(user)


def create_group(session: Session, actor: Actor, name: str, members: list[str]) -> dict[str, Any]:
    if session.scalar(select(Group).where(Group.name == name)) is not None:
        raise Conflict(f"group {name} exists", code="GROUP_EXISTS")
    users = _users_by_name(session, members)
    # A new group holds nothing, but joining one is a change of its members all the same.
    _require_covers_users(session, actor, {u.id for u in users})
    group = Group(name=name)
    session.add(group)
    session.flush()
    for user in users:
        session.add(GroupMember(group_id=group.id, user_id=user.id))
    session.flush()
    record_event(session, "group.created", f"group {name} created with {len(members)} members", username=actor.name, user_id=actor.user.id, object_type="group", object_id=group.id, object_name=name)
    return group_read(session, group)


def update_group(session: Session, actor: Actor, group_id: int, changes: dict[str, Any]) -> dict[str, Any]:
    """Rename a group or replace its members. The actor must hold what the group holds, and
    what each user joining or leaving holds before and after."""
    group = _group(session, group_id)
    actor.require_covers_group(group.id, group.name)
    before = group_read(session, group)["members"]
    if changes.get("name") is not None and changes["name"] != group.name:
        if session.scalar(select(Group).where(Group.name == changes["name"])) is not None:
            raise Conflict(f"group {changes['name']} exists", code="GROUP_EXISTS")
        group.name = changes["name"]
    if changes.get("members") is not None:
        users = _users_by_name(session, changes["members"])
        current, wanted = _member_ids(session, group.id), {u.id for u in users}
        moved = current ^ wanted
        _require_covers_users(session, actor, moved)
        session.execute(delete(GroupMember).where(GroupMember.group_id == group.id, GroupMember.user_id.in_(sorted(current - wanted) or [-1])))
        for user_id in sorted(wanted - current):
            session.add(GroupMember(group_id=group.id, user_id=user_id))
        session.flush()
        _require_covers_users(session, actor, moved)
    after = group_read(session, group)
    record_event(
        session,
        "group.updated",
        f"group {group.name} updated",
        username=actor.name,
        user_id=actor.user.id,
        object_type="group",
        object_id=group.id,
        object_name=group.name,
        data={"before": before, "after": after["members"]},
    )
    return after


def delete_group(session: Session, actor: Actor, group_id: int) -> None:
    """Delete a group with its permissions and memberships, in this transaction."""
    group = _group(session, group_id)
    actor.require_covers_group(group.id, group.name)
    members = _member_ids(session, group.id)
    _require_covers_users(session, actor, members)
    session.execute(delete(Permission).where(Permission.principal_type == "group", Permission.principal_id == group.id))
    session.execute(delete(GroupMember).where(GroupMember.group_id == group.id))
    session.delete(group)
    session.flush()
    # Losing a group's "No access" widens a member: what they hold now counts too.
    _require_covers_users(session, actor, members)
    record_event(
        session, "group.deleted", f"group {group.name} deleted with its permissions", username=actor.name, user_id=actor.user.id, object_type="group", object_id=group_id, object_name=group.name
    )


# --- permissions -------------------------------------------------------------------------


def permission_read(session: Session, permission: Permission) -> dict[str, Any]:
    role = session.get(Role, permission.role_id)
    principal_model = User if permission.principal_type == "user" else Group
    principal = session.get(principal_model, permission.principal_id)
    return {
        "id": permission.id,
        "principal_type": permission.principal_type,
        "principal_id": permission.principal_id,
        "principal": getattr(principal, "username", None) or getattr(principal, "name", None),
        "role_id": permission.role_id,
        "role": role.name if role else None,
        "object_type": permission.object_type,
        "object_id": permission.object_id,
        "propagate": permission.propagate,
    }


def list_permissions(session: Session, object_type: str | None, object_id: int | None) -> list[dict[str, Any]]:
    query = select(Permission).order_by(Permission.id)
    if object_type is not None:
        query = query.where(Permission.object_type == object_type)
    if object_id is not None:
        query = query.where(Permission.object_id == object_id)
    return [permission_read(session, p) for p in session.scalars(query)]


def _check_object(session: Session, object_type: str, object_id: int) -> None:
    if object_type not in OBJECT_KINDS:
        raise Invalid(f"object_type must be one of {', '.join(OBJECT_KINDS)}", code="INVALID_OBJECT_TYPE", details={"field": "object_type"})
    if object_type == "root":
        if object_id != 0:
            raise Invalid("the root's object_id is 0", code="INVALID_REFERENCE", details={"field": "object_id"})
        return
    if session.get(KINDS[object_type], object_id) is None:
        raise Invalid(f"{object_type} {object_id} does not exist", code="INVALID_REFERENCE", details={"field": "object_id"})


def _require_covers_principal(session: Session, actor: Actor, principal_type: str, principal_id: int) -> None:
    """The principal of a permission and, for a group, each of its members."""
    if principal_type == "group":
        group = session.get(Group, principal_id)
        if group is None:
            return  # a permission left by a group deleted before deletions took them along
        actor.require_covers_group(group.id, group.name)
        _require_covers_users(session, actor, _member_ids(session, group.id))
        return
    user = session.get(User, principal_id)
    if user is not None:
        actor.require_covers_user(user)


def set_permission(session: Session, actor: Actor, data: dict[str, Any], granter_privileges: frozenset[str] | None = None) -> dict[str, Any]:
    """Create or replace the principal's permission on the object. ``granter_privileges``:
    what the granter holds there; a role with more is refused (no escalation by delegation).
    The actor must also hold everything the principal holds before and after."""
    _check_object(session, data["object_type"], data["object_id"])
    principal_type = data["principal_type"]
    model = User if principal_type == "user" else Group
    if session.get(model, data["principal_id"]) is None:
        raise Invalid(f"{principal_type} {data['principal_id']} does not exist", code="INVALID_REFERENCE", details={"field": "principal_id"})
    authz.ensure_builtin_roles(session)
    role = _role_ref(session, data["role_id"])
    if granter_privileges is not None:
        beyond = sorted(authz.role_privileges(role) - granter_privileges)
        if beyond:
            raise Forbidden(f"role {role.name} holds privileges the granter lacks here: {', '.join(beyond)}", code="GRANT_EXCEEDS_OWN", details={"privileges": beyond})
    _require_covers_principal(session, actor, principal_type, data["principal_id"])
    permission = session.scalar(
        select(Permission).where(
            Permission.principal_type == principal_type, Permission.principal_id == data["principal_id"], Permission.object_type == data["object_type"], Permission.object_id == data["object_id"]
        )
    )
    before = permission_read(session, permission) if permission is not None else None
    if permission is None:
        permission = Permission(principal_type=principal_type, principal_id=data["principal_id"], object_type=data["object_type"], object_id=data["object_id"], role_id=role.id)
        session.add(permission)
    permission.role_id = role.id
    permission.propagate = data.get("propagate", True)
    session.flush()
    _require_covers_principal(session, actor, principal_type, data["principal_id"])
    after = permission_read(session, permission)
    record_event(
        session,
        "permission.set",
        f"{after['principal_type']} {after['principal']} gets role {role.name} on {data['object_type']} {data['object_id']}{' (propagating)' if permission.propagate else ''}",
        username=actor.name,
        user_id=actor.user.id,
        object_type=data["object_type"] if data["object_type"] != "root" else None,
        object_id=data["object_id"] or None,
        data={"before": before, "after": after},
    )
    return after


def _role_ref(session: Session, role_id: int) -> Role:
    role = session.get(Role, role_id)
    if role is None:
        raise Invalid(f"role {role_id} does not exist", code="INVALID_REFERENCE", details={"field": "role_id"})
    return role


def get_permission(session: Session, permission_id: int) -> Permission:
    permission = session.get(Permission, permission_id)
    if permission is None:
        raise NotFound(f"permission {permission_id} not found", code="PERMISSION_NOT_FOUND")
    return permission


def delete_permission(session: Session, actor: Actor, permission_id: int) -> None:
    """Remove a permission; the actor must hold what its principal holds before and after
    (removing a "No access" widens the principal)."""
    permission = get_permission(session, permission_id)
    before = permission_read(session, permission)
    principal = (permission.principal_type, permission.principal_id)
    _require_covers_principal(session, actor, *principal)
    session.delete(permission)
    session.flush()
    _require_covers_principal(session, actor, *principal)
    record_event(
        session,
        "permission.removed",
        f"{before['principal_type']} {before['principal']} loses role {before['role']} on {before['object_type']} {before['object_id']}",
        username=actor.name,
        user_id=actor.user.id,
        object_type=before["object_type"] if before["object_type"] != "root" else None,
        object_id=before["object_id"] or None,
        data={"before": before},
    )
