"""Snapshots, clones, backups and restores of a VM: every change is a Task (202)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, status

from vcenter.api import v1
from vcenter.api.deps import CurrentUserInfo, DbDep, requires
from vcenter.core.object_ids import ObjectIdPath
from vcenter.schemas import inventory as s
from vcenter.schemas import vmdata as d
from vcenter.services.library import clones
from vcenter.services.protection import backups, snapshots

router = v1.router(prefix="/api/v1/vms", tags=["snapshots, clones, backups"])

Snap = Annotated[CurrentUserInfo, requires("VirtualMachine.Snapshot", on="vm", param="vm_id")]
Clone = Annotated[CurrentUserInfo, requires("VirtualMachine.Clone", on="vm", param="vm_id")]
Backup = Annotated[CurrentUserInfo, requires("VirtualMachine.Backup", on="vm", param="vm_id")]
View = Annotated[CurrentUserInfo, requires("System.View", on="vm", param="vm_id")]
ACCEPTED = status.HTTP_202_ACCEPTED


@router.get("/{vm_id}/snapshots", response_model=d.SnapshotTree, summary="The VM's snapshots as a tree")
def list_snapshots(vm_id: ObjectIdPath, db: DbDep, user: View) -> Any:
    return snapshots.list_snapshots(db, vm_id)


@router.post("/{vm_id}/snapshots", response_model=s.TaskRead, status_code=ACCEPTED, summary="Take a snapshot (with memory when the VM runs, so reverting resumes it)")
def create_snapshot(vm_id: ObjectIdPath, body: d.SnapshotCreate, db: DbDep, user: Snap) -> Any:
    return snapshots.create_snapshot(db, user.username, vm_id, body.name, body.description)


@router.post("/{vm_id}/snapshots/{snapshot_id}/revert", response_model=s.TaskRead, status_code=ACCEPTED, summary="Revert to a snapshot")
def revert_snapshot(vm_id: ObjectIdPath, snapshot_id: ObjectIdPath, db: DbDep, user: Snap) -> Any:
    return snapshots.revert_snapshot(db, user.username, vm_id, snapshot_id)


@router.delete("/{vm_id}/snapshots/{snapshot_id}", response_model=s.TaskRead, status_code=ACCEPTED, summary="Delete a snapshot (its children move to its parent), or its subtree with children=true")
def delete_snapshot(vm_id: ObjectIdPath, snapshot_id: ObjectIdPath, db: DbDep, user: Snap, children: bool = Query(False)) -> Any:
    return snapshots.delete_snapshot(db, user.username, vm_id, snapshot_id, children)


@router.post("/{vm_id}/clone", response_model=s.TaskRead, status_code=ACCEPTED, summary="Clone the VM, running or not (full), or powered off (linked); result.clone_vm_id")
def clone_vm(vm_id: ObjectIdPath, body: d.CloneCreate, db: DbDep, user: Clone) -> Any:
    return clones.clone(db, user.username, vm_id, body.model_dump())


@router.post("/{vm_id}/promote", response_model=s.TaskRead, status_code=ACCEPTED, summary="Make a linked clone's disks standalone")
def promote_vm(vm_id: ObjectIdPath, db: DbDep, user: Clone) -> Any:
    return clones.promote(db, user.username, vm_id)


@router.get("/{vm_id}/backup-jobs", response_model=list[d.BackupJobRead], summary="The VM's backup jobs")
def list_jobs(vm_id: ObjectIdPath, db: DbDep, user: View) -> Any:
    return backups.list_jobs(db, vm_id)


@router.post("/{vm_id}/backup-jobs", response_model=d.BackupJobRead, status_code=status.HTTP_201_CREATED, summary="A backup job: a folder on a datastore, an interval (or on demand), retention")
def create_job(vm_id: ObjectIdPath, body: d.BackupJobCreate, db: DbDep, user: Backup) -> Any:
    return backups.create_job(db, user.username, vm_id, body.model_dump())


@router.patch("/{vm_id}/backup-jobs/{job_id}", response_model=d.BackupJobRead, summary="Change a job's schedule or retention")
def update_job(vm_id: ObjectIdPath, job_id: ObjectIdPath, body: d.BackupJobUpdate, db: DbDep, user: Backup) -> Any:
    return backups.update_job(db, user.username, vm_id, job_id, body.model_dump(exclude_unset=True))


@router.post("/{vm_id}/backup-jobs/{job_id}/run", response_model=s.TaskRead, status_code=ACCEPTED, summary="Back up now (full or incremental as the chain says); the guest keeps running")
def run_job(vm_id: ObjectIdPath, job_id: ObjectIdPath, db: DbDep, user: Backup) -> Any:
    return backups.run_job(db, user.username, vm_id, job_id)


@router.get("/{vm_id}/backups", response_model=list[d.BackupPointRead], summary="The VM's restore points")
def list_points(vm_id: ObjectIdPath, db: DbDep, user: View) -> Any:
    return backups.list_points(db, vm_id)


@router.post("/{vm_id}/backups/{point_id}/restore", response_model=s.TaskRead, status_code=ACCEPTED, summary="Restore a point into a new VM (mode new) or over the powered-off VM (mode replace)")
def restore(vm_id: ObjectIdPath, point_id: ObjectIdPath, body: d.RestoreRequest, db: DbDep, user: Backup) -> Any:
    return backups.restore(db, user.username, vm_id, point_id, body.model_dump())
