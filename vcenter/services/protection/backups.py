"""Backups of VMs without stopping them, restores, and scheduled jobs with retention.

A backup job (``backup_jobs``) names a directory on a datastore mounted on the VM's host, an
interval (scheduled by beat, or on demand only), how many restore points to keep and whether
incrementals are made. Running a job is a Task ``vm.backup`` on the VM: one command
(``vm.backup``) on the VM's host copies every disk at one point in time through libvirt's backup
API (the guest keeps running) and, only once it succeeded, deletes the files of the points
retention drops (decided before, as if this one succeeded: vcenter.domain.backups.to_delete).
Progress is libvirt's job; cancel aborts it.

A restore point's files are ``<directory>/<vm name>-b<point id>-disk<index>.qcow2``;
an incremental file's backing file is its parent's (a relative name).

Restore (Task ``vm.restore``): ``replace`` writes the chain over the powered-off VM's disks (its
snapshots are gone with the old images); ``new`` makes a new VM (new name, UUID and MAC
addresses) on a host that mounts both the backup's datastore and the destination datastore
(given, or chosen by placement), restores its disks there and defines it, in one command. The
source may still run, so the new VM never keeps its guest identity: the source's cloud-init
seed disk is not restored, and the new VM always gets a customisation of its own (new instance
id, a new server-issued machine-id, its own name as hostname; the source's customisation spec
carried over) whose NoCloud seed the agent writes before defining it, as for clones.

The agents' results and the rollbacks are the operations' (vcenter.services.operations.backup).

Codes: BACKUP_DATASTORE_NOT_MOUNTED, BACKUP_CHAIN_INCOMPLETE, BACKUP_NOT_FOUND,
BACKUP_JOB_NOT_FOUND, VM_POWERED_ON, PATH_* (the directory leaves its datastore).
"""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vcenter.core.clock import utcnow
from vcenter.core.errors import Conflict, Invalid, InvalidState, NotFound
from vcenter.core.ids import new_mac, new_uuid
from vcenter.core.settings import Settings
from vcenter.db.models import BackupJob, BackupPoint, Host, ObjectClaim, Task, VirtualDisk, VirtualMachine, VirtualNic, VmCustomization
from vcenter.domain import backups as plan
from vcenter.domain.states import PowerState
from vcenter.messaging.commands import BackupArgs, RestoreArgs
from vcenter.services.inventory import inventory
from vcenter.services.compute import placement
from vcenter.services.tasks.events import record_event
from vcenter.services.inventory.vm_data import disk_target, mount_path, ready_vm
from vcenter.services.tasks.tasks import start_task
from vcenter.services.library.templates import SEED_SUFFIX, dns_label
from vcenter.services.inventory.vm_spec import vm_spec

JOB_FIELDS = ("name", "datastore_id", "directory", "interval_s", "keep", "incremental", "full_every", "enabled")


def _views(session: Session, job_id: int) -> list[plan.PointView]:
    rows = session.scalars(select(BackupPoint).where(BackupPoint.job_id == job_id).order_by(BackupPoint.id))
    return [plan.PointView(r.id, r.kind, r.parent_id, r.state, r.checkpoint) for r in rows]


def _job(session: Session, vm: VirtualMachine, job_id: int) -> BackupJob:
    job = session.get(BackupJob, job_id)
    if job is None or job.vm_id != vm.id:
        raise NotFound(f"VM {vm.name} has no backup job {job_id}", code="BACKUP_JOB_NOT_FOUND")
    return job


def create_job(session: Session, user: str, vm_id: int, data: dict[str, Any]) -> BackupJob:
    vm: VirtualMachine = inventory.get(session, "vm", vm_id)
    ds = inventory.ref(session, "datastore", data["datastore_id"], "datastore_id")
    try:
        directory = plan.backup_directory(data["directory"])
    except plan.PathRefused as exc:
        raise Invalid(f"directory: {exc.message}", code=exc.code, details={"field": "directory"}) from None
    if vm.host_id is not None and mount_path(session, ds.id, vm.host_id) is None:
        raise Conflict(f"datastore {ds.name} is not mounted on the host of VM {vm.name}", code="BACKUP_DATASTORE_NOT_MOUNTED", details={"field": "datastore_id"})
    job = BackupJob(vm_id=vm.id, **{**{k: data[k] for k in JOB_FIELDS if k in data and data[k] is not None}, "directory": directory})
    session.add(job)
    inventory.flush_unique(session, f"backup job {job.name!r} of VM {vm.name}")
    record_event(
        session,
        "vm.backup.job_created",
        f"backup job {job.name!r} of VM {vm.name} to {ds.name}:{directory}" + (f" every {job.interval_s:g}s, keeping {job.keep}" if job.interval_s else " (on demand)"),
        username=user,
        object_type="vm",
        object_id=vm.id,
        object_name=vm.name,
    )
    return job


def list_jobs(session: Session, vm_id: int) -> list[BackupJob]:
    vm = inventory.get(session, "vm", vm_id)
    return list(session.scalars(select(BackupJob).where(BackupJob.vm_id == vm.id).order_by(BackupJob.id)))


def update_job(session: Session, user: str, vm_id: int, job_id: int, changes: dict[str, Any]) -> BackupJob:
    vm = inventory.get(session, "vm", vm_id)
    job = _job(session, vm, job_id)
    inventory.check_version(job, changes.pop("version", None))
    inventory.refuse_nulls(job, changes)
    for k in ("interval_s", "keep", "incremental", "full_every", "enabled"):
        if k in changes:
            setattr(job, k, changes[k])
    return job


def list_points(session: Session, vm_id: int) -> list[BackupPoint]:
    vm = inventory.get(session, "vm", vm_id)
    return list(session.scalars(select(BackupPoint).where(BackupPoint.vm_id == vm.id).order_by(BackupPoint.id)))


def _file_name(vm: VirtualMachine, point_id: int, index: int) -> str:
    return f"{vm.name}-b{point_id}-disk{index}.qcow2"


def run_job(session: Session, user: str, vm_id: int, job_id: int) -> Task:
    vm = ready_vm(session, vm_id)
    job = _job(session, vm, job_id)
    base = mount_path(session, job.datastore_id, vm.host_id)
    if base is None:
        raise Conflict(f"the backup datastore of job {job.name!r} is not mounted on the host of VM {vm.name}", code="BACKUP_DATASTORE_NOT_MOUNTED")
    points = _views(session, job.id)
    decision = plan.next_backup(points, job.incremental, job.full_every)
    point = BackupPoint(job_id=job.id, vm_id=vm.id, kind=decision.kind, parent_id=decision.parent_id, state="running")
    session.add(point)
    session.flush()
    parent = session.get(BackupPoint, decision.parent_id) if decision.parent_id else None
    parent_files = {f["index"]: f["file"] for f in (parent.files if parent else [])}
    point.files = [{"index": d.index, "target": disk_target(d.index), "file": f"{job.directory}/{_file_name(vm, point.id, d.index)}"} for d in vm.disks]
    point.checkpoint = f"vc-backup-{point.id}"
    # Retention as if this point succeeds; the agent deletes only after it did.
    doomed = plan.to_delete(points + [plan.PointView(point.id, decision.kind, decision.parent_id, "ok", point.checkpoint)], job.keep)
    doomed_files = [f"{base}/{f['file']}" for p in doomed for f in session.get(BackupPoint, p).files]
    disks = [{"target": f["target"], "path": f"{base}/{f['file']}", "parent_path": f"{base}/{parent_files[f['index']]}" if f["index"] in parent_files else None} for f in point.files]
    job.last_run_at = utcnow()
    task = start_task(
        session,
        kind="vm.backup",
        object_type="vm",
        object_id=vm.id,
        username=user,
        host_id=vm.host_id,
        params={"job_id": job.id, "point_id": point.id, "decision": decision.reason, "retention_deletes": doomed},
        command="vm.backup",
        command_args=BackupArgs(uuid=vm.libvirt_uuid, disks=disks, incremental_from=decision.since_checkpoint, checkpoint=point.checkpoint, delete_after=doomed_files).args(),
    )
    point.task_id = task.id
    record_event(
        session,
        "vm.backup.requested",
        f"{decision.kind} backup of VM {vm.name} by job {job.name!r}: {decision.reason}",
        username=user,
        object_type="vm",
        object_id=vm.id,
        object_name=vm.name,
        task_id=task.id,
    )
    return task


def restore(session: Session, user: str, vm_id: int, point_id: int, data: dict[str, Any]) -> Task:
    vm = ready_vm(session, vm_id)
    point = session.get(BackupPoint, point_id)
    if point is None or point.vm_id != vm.id:
        raise NotFound(f"VM {vm.name} has no restore point {point_id}", code="BACKUP_NOT_FOUND")
    if not plan.chain_complete(_views(session, point.job_id), point.id):
        raise Conflict(f"restore point {point.id} lacks part of its chain", code="BACKUP_CHAIN_INCOMPLETE")
    job = session.get(BackupJob, point.job_id)
    files = {f["index"]: f["file"] for f in point.files}
    if data.get("mode", "new") == "replace":
        if vm.power_state != PowerState.POWERED_OFF.value:
            raise InvalidState(f"VM {vm.name} is {vm.power_state}: power it off to restore over it", code="VM_POWERED_ON")
        base = mount_path(session, job.datastore_id, vm.host_id)
        if base is None:
            raise Conflict("the backup's datastore is not mounted on the VM's host", code="BACKUP_DATASTORE_NOT_MOUNTED")
        disks = [{"source": f"{base}/{files[d.index]}", "path": f"{mount_path(session, d.datastore_id, vm.host_id)}/{d.file}", "format": d.format} for d in vm.disks if d.index in files]
        return start_task(
            session,
            kind="vm.restore",
            object_type="vm",
            object_id=vm.id,
            username=user,
            host_id=vm.host_id,
            params={"point_id": point.id, "mode": "replace"},
            command="vm.restore",
            command_args=RestoreArgs(disks=disks, replace_uuid=vm.libvirt_uuid).args(),
        )
    if not data.get("name"):
        raise Invalid("name: a restore to a new VM needs its name", code="INVALID", details={"field": "name"})
    target_ds = inventory.ref(session, "datastore", data.get("datastore_id"), "datastore_id")
    stores = [target_ds.id if target_ds else d.datastore_id for d in vm.disks]
    chosen = None
    if data.get("host_id") is not None:
        host: Host = inventory.ref(session, "host", data["host_id"], "host_id")
    elif vm.cluster_id is not None:
        request = {
            "name": data["name"],
            "vcpus": vm.vcpus,
            "memory_mib": vm.memory_mib,
            "disks": [{"datastore_id": i} for i in {*stores, job.datastore_id}],
            "nics": [{"portgroup_id": n.portgroup_id} for n in vm.nics],
        }
        host_id, chosen = placement.choose_host(session, vm.cluster_id, request)
        host = session.get(Host, host_id)
    else:
        host = session.get(Host, vm.host_id)
    for ds_id in {*stores, job.datastore_id}:
        if mount_path(session, ds_id, host.id) is None:
            raise Conflict(f"datastore {ds_id} is not mounted on host {host.name}", code="DATASTORE_NOT_MOUNTED")
    boot = {k: v for k, v in (vm.boot or {}).items() if k != "ip"}
    if data.get("ip"):
        boot["ip"] = str(data["ip"])
    new = VirtualMachine(
        name=data["name"],
        datacenter_id=vm.datacenter_id,
        cluster_id=host.cluster_id,
        host_id=host.id,
        folder_id=vm.folder_id,
        vcpus=vm.vcpus,
        memory_mib=vm.memory_mib,
        guest_os=vm.guest_os,
        power_state=PowerState.POWERED_OFF.value,
        status="creating",
        libvirt_uuid=new_uuid(),
        boot=boot,
        cpu=vm.cpu,
    )
    # The source's seed disk (its guest identity) is not restored: the new VM gets its own.
    seed_indexes = {d.index for d in vm.disks if _is_seed(d)}
    for disk, ds_id in zip(vm.disks, stores):
        if disk.index in seed_indexes:
            continue
        new.disks.append(VirtualDisk(index=disk.index, datastore_id=ds_id, file=f"{new.name}-{new.libvirt_uuid[:8]}-disk{disk.index}.qcow2", capacity_mib=disk.capacity_mib, format="qcow2"))
    seed_index = min(seed_indexes) if seed_indexes else max([d.index for d in vm.disks], default=-1) + 1
    seed_ds = stores[0] if stores else job.datastore_id
    seed_disk = VirtualDisk(index=seed_index, datastore_id=seed_ds, file=f"{new.name}-{new.libvirt_uuid[:8]}{SEED_SUFFIX}", capacity_mib=1, format="raw")
    new.disks.append(seed_disk)
    for nic in vm.nics:
        new.nics.append(VirtualNic(index=nic.index, portgroup_id=nic.portgroup_id, mac=new_mac(), model=nic.model))
    session.add(new)
    inventory.flush_unique(session, f"VM {new.name!r}")
    # A fresh guest identity, as for clones: new cloud-init instance id, a machine-id the server
    # issues, the new name as hostname (the source's customisation spec carried over, if any).
    custom = session.get(VmCustomization, vm.id)
    session.add(
        VmCustomization(
            vm_id=new.id,
            instance_id=f"i-{uuidlib.uuid4().hex}",
            machine_id=uuidlib.uuid4().hex,
            hostname=dns_label(new.name),
            spec=dict((custom.spec if custom else None) or {}, hostname=dns_label(new.name)),
        )
    )
    base = mount_path(session, job.datastore_id, host.id)
    disks = [
        {"source": f"{base}/{files[d.index]}", "path": f"{mount_path(session, d.datastore_id, host.id)}/{d.file}", "format": "qcow2"} for d in new.disks if d.index in files and d is not seed_disk
    ]
    seed = {"path": f"{mount_path(session, seed_ds, host.id)}/{seed_disk.file}"}
    task = start_task(
        session,
        kind="vm.restore",
        object_type="vm",
        object_id=vm.id,
        username=user,
        host_id=host.id,
        params={"point_id": point.id, "mode": "new", "new_vm_id": new.id, **({"placement": chosen} if chosen else {})},
        command="vm.restore",
        command_args=RestoreArgs(disks=disks, spec=vm_spec(session, new, host.id), seed=seed).args(),
    )
    record_event(
        session,
        "vm.restore.requested",
        f"restore of VM {vm.name} from point {point.id} into new VM {new.name} on {host.name}",
        username=user,
        object_type="vm",
        object_id=vm.id,
        object_name=vm.name,
        task_id=task.id,
    )
    return task


def _is_seed(disk: VirtualDisk) -> bool:
    return disk.format == "raw" and disk.file.endswith(SEED_SUFFIX)


def run_due(session: Session, settings: Settings) -> list[int]:
    """Beat: start every scheduled job whose interval passed, on an idle, ready VM."""
    now = utcnow()
    started = []
    for job in session.scalars(select(BackupJob).where(BackupJob.enabled.is_(True), BackupJob.interval_s.is_not(None)).order_by(BackupJob.id)):
        if not plan.is_due(job.interval_s, job.enabled, job.last_run_at, now):
            continue
        vm = session.get(VirtualMachine, job.vm_id)
        if vm is None or vm.status != "ready" or session.get(ObjectClaim, ("vm", vm.id)) is not None:
            continue  # busy: the next pass tries again
        try:
            with session.begin_nested():
                started.append(run_job(session, "scheduler", vm.id, job.id).id)
        except (Conflict, InvalidState) as exc:
            job.last_run_at = now
            record_event(
                session, "vm.backup.skipped", f"scheduled backup {job.name!r} of VM {vm.name} skipped: {exc}", object_type="vm", object_id=vm.id, object_name=vm.name, reason=getattr(exc, "code", None)
            )
    return started
