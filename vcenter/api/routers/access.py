"""Who may do what: privileges, roles, groups, permissions, the caller's effective privileges
and API tokens."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, status

from vcenter.api import v1
from vcenter.api.deps import CurrentUser, CurrentUserInfo, DbDep, public, requires
from vcenter.core.errors import Invalid
from vcenter.core.object_ids import ObjectIdPath, ObjectIdQuery, OptionalObjectIdQuery
from vcenter.domain.privileges import ANONYMOUS, PRIVILEGES
from vcenter.schemas import access as s
from vcenter.services.access import auth, authz, permissions, users
from vcenter.services.access.delegation import Actor

router = v1.router(prefix="/api/v1")

Viewer = Annotated[CurrentUserInfo, requires("System.View")]
RoleAdmin = Annotated[CurrentUserInfo, requires("Authorization.ModifyRoles")]
UserAdmin = Annotated[CurrentUserInfo, requires("Users.Modify")]


@router.get("/privileges", response_model=list[s.PrivilegeRead], tags=["access"], summary="The privilege catalog")
def list_privileges(user: Viewer) -> Any:
    return [{"id": k, "description": v} for k, v in PRIVILEGES.items() if k != ANONYMOUS]


@router.get(
    "/privileges/effective",
    response_model=s.EffectivePrivileges,
    tags=["access"],
    summary="The caller's own privileges on an object (root when none given), after inheritance and its token's narrowing",
    dependencies=[public("answers only about the caller itself")],
)
def effective(db: DbDep, user: CurrentUser, object_type: s.ObjectType = Query("root"), object_id: ObjectIdQuery = 0) -> Any:
    kind = None if object_type == "root" else object_type
    privileges = authz.privileges(db, users.get_user(db, user.id), kind, object_id if kind else None, token=user.token)
    return {"object_type": object_type, "object_id": object_id, "privileges": sorted(privileges)}


@router.get("/roles", response_model=list[s.RoleRead], tags=["access"], summary="List roles (built-in and custom)")
def list_roles(db: DbDep, user: Viewer) -> Any:
    return permissions.list_roles(db)


@router.post("/roles", response_model=s.RoleRead, status_code=status.HTTP_201_CREATED, tags=["access"], summary="Create a custom role")
def create_role(body: s.RoleCreate, db: DbDep, user: RoleAdmin) -> Any:
    return permissions.create_role(db, Actor.of(db, user.id, user.token), body.name, body.privileges, body.description)


@router.patch(
    "/roles/{role_id}",
    response_model=s.RoleRead,
    tags=["access"],
    summary="Change a custom role (built-in roles are fixed; never one the caller holds; the caller must hold what each holder holds, before and after)",
)
def update_role(role_id: ObjectIdPath, body: s.RoleUpdate, db: DbDep, user: RoleAdmin) -> Any:
    return permissions.update_role(db, Actor.of(db, user.id, user.token), role_id, body.model_dump(exclude_unset=True))


@router.delete("/roles/{role_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["access"], summary="Delete a custom role no permission or token uses")
def delete_role(role_id: ObjectIdPath, db: DbDep, user: RoleAdmin) -> None:
    permissions.delete_role(db, Actor.of(db, user.id, user.token), role_id)


@router.get("/groups", response_model=list[s.GroupRead], tags=["access"], summary="List groups with their members")
def list_groups(db: DbDep, user: UserAdmin) -> Any:
    return permissions.list_groups(db)


@router.post("/groups", response_model=s.GroupRead, status_code=status.HTTP_201_CREATED, tags=["access"], summary="Create a group")
def create_group(body: s.GroupCreate, db: DbDep, user: UserAdmin) -> Any:
    return permissions.create_group(db, Actor.of(db, user.id, user.token), body.name, body.members)


@router.patch(
    "/groups/{group_id}", response_model=s.GroupRead, tags=["access"], summary="Rename a group or replace its members (the caller must hold what the group and each member joining or leaving holds)"
)
def update_group(group_id: ObjectIdPath, body: s.GroupUpdate, db: DbDep, user: UserAdmin) -> Any:
    return permissions.update_group(db, Actor.of(db, user.id, user.token), group_id, body.model_dump(exclude_unset=True))


@router.delete("/groups/{group_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["access"], summary="Delete a group with its permissions and memberships")
def delete_group(group_id: ObjectIdPath, db: DbDep, user: UserAdmin) -> None:
    permissions.delete_group(db, Actor.of(db, user.id, user.token), group_id)


@router.get("/permissions", response_model=list[s.PermissionRead], tags=["access"], summary="Permissions set on an object (or on all objects the caller may change permissions of)")
def list_permissions(
    db: DbDep, user: Annotated[CurrentUserInfo, requires("Permissions.Modify", deferred=True)], object_type: s.ObjectType | None = Query(None), object_id: OptionalObjectIdQuery = None
) -> Any:
    if object_type is not None and object_id is not None:
        user.require(db, None if object_type == "root" else object_type, object_id if object_type != "root" else None)
        return permissions.list_permissions(db, object_type, object_id)
    user.require(db, None, None)
    return permissions.list_permissions(db, object_type, object_id)


@router.post("/permissions", response_model=s.PermissionRead, status_code=status.HTTP_201_CREATED, tags=["access"], summary="Give a user or group a role on an object (replaces its permission there)")
def set_permission(body: s.PermissionCreate, db: DbDep, user: Annotated[CurrentUserInfo, requires("Permissions.Modify", deferred=True)]) -> Any:
    kind, object_id = (None, None) if body.object_type == "root" else (body.object_type, body.object_id)
    user.require(db, kind, object_id)
    held = authz.privileges(db, users.get_user(db, user.id), kind, object_id, token=user.token)
    return permissions.set_permission(db, Actor.of(db, user.id, user.token), body.model_dump(), granter_privileges=held)


@router.delete("/permissions/{permission_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["access"], summary="Remove a permission")
def delete_permission(permission_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("Permissions.Modify", deferred=True)]) -> None:
    permission = permissions.get_permission(db, permission_id)
    user.require(db, None if permission.object_type == "root" else permission.object_type, permission.object_id if permission.object_type != "root" else None)
    permissions.delete_permission(db, Actor.of(db, user.id, user.token), permission_id)


@router.get("/session/tokens", response_model=list[s.TokenRead], tags=["session"], summary="The caller's API tokens", dependencies=[public("acts on the caller's own tokens")])
def list_tokens(db: DbDep, user: CurrentUser) -> Any:
    return auth.list_api_tokens(db, users.get_user(db, user.id))


@router.post(
    "/session/tokens",
    response_model=s.TokenCreated,
    status_code=status.HTTP_201_CREATED,
    tags=["session"],
    summary="Create an API token narrowed to a role; the token is shown once",
    dependencies=[public("acts on the caller's own tokens")],
)
def create_token(body: s.TokenCreate, db: DbDep, user: CurrentUser) -> Any:
    if authz.token_role(db, user.token) is not None:
        raise Invalid("an API token cannot create tokens; log in", code="TOKEN_CANNOT_CREATE_TOKEN")
    token, api_token = auth.create_api_token(db, users.get_user(db, user.id), body.name, body.role_id, body.lifetime_s)
    return {**s.TokenRead.model_validate(api_token).model_dump(), "token": token}


@router.delete(
    "/session/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["session"], summary="Revoke one of the caller's API tokens", dependencies=[public("acts on the caller's own tokens")]
)
@v1.conflicts(False)
def revoke_token(token_id: ObjectIdPath, db: DbDep, user: CurrentUser) -> None:
    auth.revoke_api_token(db, users.get_user(db, user.id), token_id)
