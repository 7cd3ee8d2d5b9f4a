"""Roles, groups and permissions: the use cases behind /api/v1/{roles,groups,permissions}.

Built-in roles (Administrator, Read-only, No access, VM operator) cannot change or go; a role
in use by a permission or an API token cannot be deleted (409 naming the count). Permissions
are set on inventory objects (``root`` 0 for the whole inventory); one per principal and object.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vcenter.core.errors import Conflict, Forbidden, Invalid, NotFound
from vcenter.db.models import ApiToken, Group, GroupMember, Permission, Role, User
from vcenter.domain.privileges import unknown_privileges
from vcenter.services import authz
from vcenter.services.events import record_event

OBJECT_KINDS = ("root", "datacenter", "folder", "cluster", "host", "datastore", "portgroup", "pool", "vm")


def role_read(role: Role) -> dict[str, Any]:
    return {"id": role.id, "name": role.name, "builtin": role.builtin, "description": role.description,
            "privileges": sorted(authz.role_privileges(role))}


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


def create_role(session: Session, by: str, name: str, privileges: list[str], description: str = "") -> dict[str, Any]:
    authz.ensure_builtin_roles(session)
    if session.scalar(select(Role).where(Role.name == name)) is not None:
        raise Conflict(f"role {name} exists", code="ROLE_EXISTS")
    role = Role(name=name, privileges=_validate_privileges(privileges), description=description, builtin=False)
    session.add(role)
    session.flush()
    record_event(session, "role.created", f"role {name} created: {', '.join(role.privileges) or 'no privileges'}", username=by, object_type="role", object_id=role.id, object_name=name)
    return role_read(role)


def update_role(session: Session, by: str, role_id: int, changes: dict[str, Any]) -> dict[str, Any]:
    role = _role(session, role_id)
    if role.builtin:
        raise Conflict(f"role {role.name} is built in", code="ROLE_BUILTIN")
    before = sorted(role.privileges)
    if changes.get("name") is not None and changes["name"] != role.name:
        if session.scalar(select(Role).where(Role.name == changes["name"])) is not None:
            raise Conflict(f"role {changes['name']} exists", code="ROLE_EXISTS")
        role.name = changes["name"]
    if changes.get("privileges") is not None:
        role.privileges = _validate_privileges(changes["privileges"])
    if changes.get("description") is not None:
        role.description = changes["description"]
    record_event(session, "role.updated", f"role {role.name} updated", username=by, object_type="role", object_id=role.id, object_name=role.name,
                 data={"before": before, "after": sorted(role.privileges)})
    return role_read(role)


def delete_role(session: Session, by: str, role_id: int) -> None:
    role = _role(session, role_id)
    if role.builtin:
        raise Conflict(f"role {role.name} is built in", code="ROLE_BUILTIN")
    uses = (session.scalar(select(func.count()).select_from(Permission).where(Permission.role_id == role.id)) or 0) + \
        (session.scalar(select(func.count()).select_from(ApiToken).where(ApiToken.role_id == role.id, ApiToken.revoked.is_(False))) or 0)
    if uses:
        raise Conflict(f"role {role.name} is used by {uses} permissions or tokens", code="ROLE_IN_USE", details={"uses": uses})
    session.delete(role)
    record_event(session, "role.deleted", f"role {role.name} deleted", username=by, object_type="role", object_id=role_id, object_name=role.name)


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


def create_group(session: Session, by: str, name: str, members: list[str]) -> dict[str, Any]:
    if session.scalar(select(Group).where(Group.name == name)) is not None:
        raise Conflict(f"group {name} exists", code="GROUP_EXISTS")
    group = Group(name=name)
    session.add(group)
    session.flush()
    for user in _users_by_name(session, members):
        session.add(GroupMember(group_id=group.id, user_id=user.id))
    session.flush()
    record_event(session, "group.created", f"group {name} created with {len(members)} members", username=by, object_type="group", object_id=group.id, object_name=name)
    return group_read(session, group)


def update_group(session: Session, by: str, group_id: int, changes: dict[str, Any]) -> dict[str, Any]:
    group = _group(session, group_id)
    before = group_read(session, group)["members"]
    if changes.get("name") is not None and changes["name"] != group.name:
        if session.scalar(select(Group).where(Group.name == changes["name"])) is not None:
            raise Conflict(f"group {changes['name']} exists", code="GROUP_EXISTS")
        group.name = changes["name"]
    if changes.get("members") is not None:
        users = _users_by_name(session, changes["members"])
        for member in session.scalars(select(GroupMember).where(GroupMember.group_id == group.id)):
            session.delete(member)
        session.flush()
        for user in users:
            session.add(GroupMember(group_id=group.id, user_id=user.id))
        session.flush()
    after = group_read(session, group)
    record_event(session, "group.updated", f"group {group.name} updated", username=by, object_type="group", object_id=group.id, object_name=group.name,
                 data={"before": before, "after": after["members"]})
    return after


def delete_group(session: Session, by: str, group_id: int) -> None:
    group = _group(session, group_id)
    for permission in session.scalars(select(Permission).where(Permission.principal_type == "group", Permission.principal_id == group.id)):
        session.delete(permission)
    session.delete(group)
    record_event(session, "group.deleted", f"group {group.name} deleted with its permissions", username=by, object_type="group", object_id=group_id, object_name=group.name)


# --- permissions -------------------------------------------------------------------------

def permission_read(session: Session, permission: Permission) -> dict[str, Any]:
    role = session.get(Role, permission.role_id)
    principal_model = User if permission.principal_type == "user" else Group
    principal = session.get(principal_model, permission.principal_id)
    return {"id": permission.id, "principal_type": permission.principal_type, "principal_id": permission.principal_id,
            "principal": getattr(principal, "username", None) or getattr(principal, "name", None),
            "role_id": permission.role_id, "role": role.name if role else None,
            "object_type": permission.object_type, "object_id": permission.object_id, "propagate": permission.propagate}


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
    from vcenter.services.inventory import KINDS

    if session.get(KINDS[object_type], object_id) is None:
        raise Invalid(f"{object_type} {object_id} does not exist", code="INVALID_REFERENCE", details={"field": "object_id"})


def set_permission(session: Session, by: str, data: dict[str, Any], granter_privileges: frozenset[str] | None = None) -> dict[str, Any]:
    """Create or replace the principal's permission on the object. ``granter_privileges``:
    what the granter holds there; a role with more is refused (no escalation by delegation)."""
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
    permission = session.scalar(select(Permission).where(
        Permission.principal_type == principal_type, Permission.principal_id == data["principal_id"],
        Permission.object_type == data["object_type"], Permission.object_id == data["object_id"]))
    before = permission_read(session, permission) if permission is not None else None
    if permission is None:
        permission = Permission(principal_type=principal_type, principal_id=data["principal_id"], object_type=data["object_type"], object_id=data["object_id"], role_id=role.id)
        session.add(permission)
    permission.role_id = role.id
    permission.propagate = data.get("propagate", True)
    session.flush()
    after = permission_read(session, permission)
    record_event(session, "permission.set", f"{after['principal_type']} {after['principal']} gets role {role.name} on {data['object_type']} {data['object_id']}{' (propagating)' if permission.propagate else ''}",
                 username=by, object_type=data["object_type"] if data["object_type"] != "root" else None, object_id=data["object_id"] or None,
                 data={"before": before, "after": after})
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


def delete_permission(session: Session, by: str, permission_id: int) -> None:
    permission = get_permission(session, permission_id)
    before = permission_read(session, permission)
    session.delete(permission)
    record_event(session, "permission.removed", f"{before['principal_type']} {before['principal']} loses role {before['role']} on {before['object_type']} {before['object_id']}",
                 username=by, object_type=before["object_type"] if before["object_type"] != "root" else None, object_id=before["object_id"] or None, data={"before": before})
