"""Request and response models of snapshots, clones, backup jobs, restore points, restores."""

from __future__ import annotations

from datetime import datetime
from ipaddress import IPv4Interface
from typing import Any, Literal

from pydantic import Field

from vcenter.core.object_ids import Int32, ObjectIdField
from vcenter.schemas.base import RequestModel, ResponseModel
from vcenter.schemas.inventory import Name


class SnapshotCreate(RequestModel):
    name: Name
    description: str = Field("", max_length=1024)


class SnapshotTree(ResponseModel):
    vm_id: int
    current_id: int | None
    count: int
    tree: list[dict[str, Any]] = Field(description="roots, each {id, name, description, parent_id, memory, power_state, current, created_at, children: [...]}")


class CloneCreate(RequestModel):
    name: Name
    linked: bool = Field(False, description="an overlay on a frozen base (constant time; the source must be powered off)")
    host_id: ObjectIdField | None = Field(None, description="None: placement chooses in the source's cluster")
    datastore_id: ObjectIdField | None = Field(None, description="where the clone's disks go (full clones); default: the source disks' datastores")
    folder_id: ObjectIdField | None = None
    ip: IPv4Interface | None = Field(None, description="the clone's guest address (lab guests); an address is never copied")


class BackupJobCreate(RequestModel):
    name: Name
    datastore_id: ObjectIdField
    directory: str = Field(min_length=1, max_length=1024, description="a folder inside the datastore (no '..', not absolute)")
    interval_s: float | None = Field(None, gt=0, le=366 * 86400, description="run every this many seconds (beat); None: on demand only")
    keep: int = Field(7, ge=1, le=1000, description="restore points kept (with the ancestors they need)")
    incremental: bool = True
    full_every: int = Field(7, ge=1, le=1000, description="every n-th backup of a chain is full")
    enabled: bool = True


class BackupJobUpdate(RequestModel):
    interval_s: float | None = Field(None, gt=0, le=366 * 86400)
    keep: int | None = Field(None, ge=1, le=1000)
    incremental: bool | None = None
    full_every: int | None = Field(None, ge=1, le=1000)
    enabled: bool | None = None
    version: Int32 | None = None


class BackupJobRead(ResponseModel):
    id: int
    vm_id: int
    name: str
    datastore_id: int
    directory: str
    interval_s: float | None
    keep: int
    incremental: bool
    full_every: int
    enabled: bool
    last_run_at: datetime | None
    version: int


class BackupPointRead(ResponseModel):
    id: int
    job_id: int
    vm_id: int
    kind: str
    parent_id: int | None
    state: str
    checkpoint: str | None
    files: list[dict[str, Any]]
    size_bytes: int
    task_id: int | None
    created_at: datetime
    completed_at: datetime | None


class RestoreRequest(RequestModel):
    mode: Literal["new", "replace"] = "new"
    name: Name | None = Field(None, description="mode new: the new VM's name")
    host_id: ObjectIdField | None = None
    datastore_id: ObjectIdField | None = None
    ip: IPv4Interface | None = None
