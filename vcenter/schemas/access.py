"""Request and response models of roles, groups, permissions, privileges and API tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StringConstraints

from vcenter.core.object_ids import ObjectIdField
from vcenter.schemas.base import ExampleModel, RequestModel
from vcenter.schemas.inventory import Name

RoleName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")]


class PrivilegeRead(ExampleModel):
    id: str
    description: str


class RoleCreate(RequestModel):
    name: RoleName
    privileges: list[str] = Field(default_factory=list, max_length=200)
    description: str = Field("", max_length=255)


class RoleUpdate(RequestModel):
    name: RoleName | None = None
    privileges: list[str] | None = Field(None, max_length=200)
    description: str | None = Field(None, max_length=255)


class RoleRead(ExampleModel):
    id: int
    name: str
    builtin: bool
    description: str
    privileges: list[str]


class GroupCreate(RequestModel):
    name: Name
    members: list[str] = Field(default_factory=list, max_length=1000, description="user names")


class GroupUpdate(RequestModel):
    name: Name | None = None
    members: list[str] | None = Field(None, max_length=1000)


class GroupRead(ExampleModel):
    id: int
    name: str
    members: list[str]


ObjectType = Literal["root", "datacenter", "folder", "cluster", "host", "datastore", "portgroup", "pool", "vm"]


class PermissionCreate(RequestModel):
    principal_type: Literal["user", "group"]
    principal_id: ObjectIdField = Field(..., ge=1)
    role_id: ObjectIdField = Field(..., ge=1)
    object_type: ObjectType
    object_id: ObjectIdField = Field(..., ge=0, description="0 with object_type root")
    propagate: bool = True


class PermissionRead(ExampleModel):
    id: int
    principal_type: str
    principal_id: int
    principal: str | None
    role_id: int
    role: str | None
    object_type: str
    object_id: int
    propagate: bool


class EffectivePrivileges(ExampleModel):
    object_type: str
    object_id: int
    privileges: list[str]


class TokenCreate(RequestModel):
    name: Name
    role_id: ObjectIdField = Field(..., ge=1, description="the token holds at most this role's privileges (and never more than its user)")
    lifetime_s: float | None = Field(None, gt=0, le=10 * 365 * 86400, description="seconds until it expires; none: until revoked")


class TokenRead(ExampleModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    role_id: int
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked: bool


class TokenCreated(TokenRead):
    token: str = Field(description="shown once")
