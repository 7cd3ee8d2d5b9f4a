"""VMotion and Storage VMotion: checks, the migration saga and the per-host migration slots.

The saga of one VMotion (a Task of kind ``vm.migrate``, steps in ``Task.step``):
  queued -> waiting-for-slot (the per-host limit of concurrent migrations is reached; the task
  waits, it does not fail) -> migrating (the command is with the SOURCE host's agent, which
  reports libvirt's job stats as progress) -> success (the inventory changes host only now,
  after libvirt completed) | error | cancelled (libvirt's job aborted: the VM runs on the
  source).
A lost agent or worker is resolved from what the hosts report: the target reporting the
domain while the source does not is a completed move (services.orchestration.reports re-attaches it and
the reaper ends the task as success); otherwise the idempotent command is re-sent.

Maintenance mode, whose evacuation is made of these migrations, is
vcenter.services.compute.maintenance_mode's.

Check codes: VM_HAS_SNAPSHOTS, HOST_NOT_CONNECTED, HOST_IN_MAINTENANCE, HOST_IN_STANDBY, CPU_INCOMPATIBLE,
DATASTORE_NOT_MOUNTED, PORTGROUP_ABSENT, INSUFFICIENT_MEMORY, INSUFFICIENT_CPU,
RULE_VIOLATION, POOL_ADMISSION_REFUSED, SAME_HOST, VM_NOT_RUNNING.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vcenter.core.clock import utcnow
from vcenter.core.errors import Conflict, Invalid, InvalidState
from vcenter.core.settings import Settings, get_settings
from vcenter.db.models import Cluster, Datastore, Host, Task, VirtualMachine, VmSnapshotRow
from vcenter.db.snapshots import cluster_snapshot
from vcenter.domain import placement
from vcenter.domain.snapshot import ClusterSnapshot, VmSnapshot
from vcenter.domain.states import PowerState, TaskState
from vcenter.messaging.contracts import MigrateArgs, MigrationOptions, RelocateArgs
from vcenter.services.ha import ha
from vcenter.services.compute import relocation
from vcenter.services.inventory import inventory
from vcenter.services.inventory.vm_data import disk_target
from vcenter.services.tasks.events import record_event
from vcenter.services.tasks.tasks import ensure_idle, send_command, start_task

FILTER_CODES = {
    "ConnectionFilter": "HOST_NOT_CONNECTED",
    "MaintenanceFilter": "HOST_IN_MAINTENANCE",
    "StandbyFilter": "HOST_IN_STANDBY",
    "FailoverHostFilter": "HA_ADMISSION_REFUSED",  # a dedicated HA failover host
    "CpuCompatibilityFilter": "CPU_INCOMPATIBLE",
    "DatastoreFilter": "DATASTORE_NOT_MOUNTED",
    "PortGroupFilter": "PORTGROUP_ABSENT",
    "MemoryFilter": "INSUFFICIENT_MEMORY",
    "CpuFilter": "INSUFFICIENT_CPU",
    "RuleFilter": "RULE_VIOLATION",
}
DEFAULT_SETTINGS = {"max_downtime_ms": 300, "bandwidth_mibps": None, "auto_converge": True, "postcopy": False, "max_per_host": 2, "tls": True}


class MigrationRefused(Conflict):
    code = "MIGRATION_REFUSED"


def migration_settings(cluster: Cluster | None) -> dict[str, Any]:
    return {**DEFAULT_SETTINGS, **((cluster.settings or {}).get("migration") or {} if cluster else {})}


def _moving(snapshot, vm: VirtualMachine) -> VmSnapshot:
    current = next(v for v in snapshot.vms if v.id == str(vm.id))
    return current


def _check_vm_and_target(vm: VirtualMachine, target: Host) -> dict[str, Any] | None:
    """The VM runs, and the target is another host of its cluster."""
    if vm.power_state != PowerState.POWERED_ON.value:
        return {"code": "VM_NOT_RUNNING", "ok": False, "message": f"VM {vm.name} is {vm.power_state}: VMotion moves running VMs"}
    if target.id == vm.host_id:
        return {"code": "SAME_HOST", "ok": False, "message": f"VM {vm.name} already runs on {target.name}"}
    if vm.cluster_id is None or target.cluster_id != vm.cluster_id:
        return {"code": "OTHER_CLUSTER", "ok": False, "message": f"host {target.name} is not in the VM's cluster"}
    return None


def _check_no_snapshots(session: Session, vm: VirtualMachine) -> dict[str, Any] | None:
    snapshots = session.scalar(select(func.count()).select_from(VmSnapshotRow).where(VmSnapshotRow.vm_id == vm.id))
    if snapshots:
        # Measured on libvirt 9.0: "cannot migrate domain with 1 snapshots".
        return {"code": "VM_HAS_SNAPSHOTS", "ok": False, "message": f"VM {vm.name} has {snapshots} snapshot(s): libvirt cannot migrate a domain with snapshots (delete them first)"}
    return None


def _check_placement(snapshot: ClusterSnapshot, vm: VirtualMachine, target: Host) -> list[dict[str, Any]]:
    """Placement's filters on the target, one check per filter (and the pool's admission)."""
    result = placement.place(snapshot, _moving(snapshot, vm), only=[str(target.id)])
    found: dict[str, list[str]] = {}
    for rejection in result.rejected:
        if rejection.host_id != str(target.id):
            continue
        for name, reason in zip(rejection.filters, rejection.reasons):
            found.setdefault(FILTER_CODES.get(name, name.upper()), []).append(reason)
    out = []
    for name, code in FILTER_CODES.items():
        reasons = found.pop(code, [])
        out.append({"code": code, "ok": not reasons, "message": "; ".join(reasons) if reasons else "ok"})
    if result.refused:
        out.append({"code": "POOL_ADMISSION_REFUSED", "ok": False, "message": result.refused})
    for code, reasons in found.items():
        out.append({"code": code, "ok": False, "message": "; ".join(reasons)})
    return out


def checks(session: Session, vm: VirtualMachine, target: Host, snapshot: ClusterSnapshot | None = None) -> list[dict[str, Any]]:
    """Every check of a VMotion of ``vm`` to ``target``, each with a stable code, a human
    message and whether it passed. Same data for the check route and the refusal. The first
    failing early check is the only one; ``snapshot``: the cluster as the caller already read
    it in this request (read here when the placement checks need it and none is given)."""
    early = _check_vm_and_target(vm, target) or _check_no_snapshots(session, vm)
    if early is not None:
        return [early]
    return _check_placement(snapshot if snapshot is not None else cluster_snapshot(session, vm.cluster_id), vm, target)


def check_report(session: Session, vm_id: int, target_id: int) -> dict[str, Any]:
    vm: VirtualMachine = inventory.get(session, "vm", vm_id)
    results = checks(session, vm, inventory.get(session, "host", target_id))
    return {"vm": vm.id, "host": target_id, "ok": all(c["ok"] for c in results), "checks": results}


def _choose_target(snapshot: ClusterSnapshot, vm: VirtualMachine) -> tuple[int, dict[str, Any]]:
    result = placement.place(snapshot, _moving(snapshot, vm))
    if result.host is None:
        raise MigrationRefused(f"no host can take VM {vm.name}", code="PLACEMENT_FAILED", details=result.to_dict())
    return int(result.host), result.to_dict()


def options_for(session: Session, vm: VirtualMachine, target: Host, settings: dict[str, Any]) -> MigrationOptions:
    kinds = {session.get(Datastore, d.datastore_id).kind for d in vm.disks}
    return MigrationOptions(
        dest_uri=target.libvirt_uri,
        dest_address=target.address or None,
        max_downtime_ms=settings.get("max_downtime_ms"),
        bandwidth_mibps=settings.get("bandwidth_mibps"),
        auto_converge=bool(settings.get("auto_converge")),
        postcopy=bool(settings.get("postcopy")),
        tls=bool(settings.get("tls")),
        # Only lab directories shared between hosts need VIR_MIGRATE_UNSAFE (docs/lab.md).
        unsafe="lab-dir" in kinds,
    )


def migrate(session: Session, user: str, vm_id: int, target_id: int | None, config: Settings, parent_task_id: int | None = None) -> Task:
    vm: VirtualMachine = inventory.get(session, "vm", vm_id)
    ensure_idle(session, "vm", vm.id)
    if vm.status != "ready":
        raise InvalidState(f"VM {vm.name} is {vm.status}", code="VM_NOT_READY")
    if vm.power_state != PowerState.POWERED_ON.value:
        raise InvalidState(f"VM {vm.name} is {vm.power_state}: VMotion moves running VMs", code="VM_NOT_RUNNING")
    # The cluster is read once for the request: the choice of a target and the checks share it.
    decision, snapshot = None, None
    if target_id is None:
        snapshot = cluster_snapshot(session, vm.cluster_id)
        target_id, decision = _choose_target(snapshot, vm)
    target: Host = inventory.get(session, "host", target_id)
    if snapshot is None:  # the checks and HA admission share it
        snapshot = cluster_snapshot(session, vm.cluster_id)
    results = checks(session, vm, target, snapshot)
    failed = [c for c in results if not c["ok"]]
    if failed:
        raise MigrationRefused(f"VM {vm.name} cannot move to host {target_id}: {failed[0]['message']}", code=failed[0]["code"], details={"checks": results})
    ha.admit_migration(session, vm, target_id, user, snapshot)
    source: Host = session.get(Host, vm.host_id)
    cluster = session.get(Cluster, vm.cluster_id)
    options = options_for(session, vm, target, migration_settings(cluster))
    task = start_task(
        session,
        kind="vm.migrate",
        object_type="vm",
        object_id=vm.id,
        username=user,
        host_id=source.id,
        params={
            "source": source.id,
            "target": target.id,
            "placement": decision,
            "parent": parent_task_id,
            "checks": results,
            "pending_command": MigrateArgs(uuid=vm.libvirt_uuid, options=options).args(),
        },
    )
    record_event(
        session,
        "vm.migrate.requested",
        f"VMotion of VM {vm.name} from {source.name} to {target.name} requested",
        username=user,
        object_type="vm",
        object_id=vm.id,
        object_name=vm.name,
        task_id=task.id,
    )
    dispatch_waiting(session, cluster)
    return task


SLOT_KINDS = ("vm.migrate", "vm.relocate")  # a vm.relocate takes slots when it changes host (params.target)


def changes_host(task: Task) -> bool:
    """Whether a task of ``SLOT_KINDS`` moves its VM to another host: every VMotion, and a
    relocation with a target host (``params.target``)."""
    return task.kind == "vm.migrate" or task.params.get("target") is not None


def _slot_hosts(task: Task) -> set[int]:
    """The hosts whose migration slots a task takes: source and target (and the copier of a
    powered-off relocation); none for a relocation on the VM's own host."""
    if not changes_host(task):
        return set()
    return {h for h in (task.params.get("source"), task.params.get("target"), task.params.get("copier")) if h is not None}


def _busy_hosts(session: Session) -> dict[int, int]:
    """Running migrations per host (as source, target or copier): the database semaphore.
    Relocations to another host (live with their disks, or powered off) count like VMotions."""
    counts: dict[int, int] = {}
    for task in session.scalars(select(Task).where(Task.kind.in_(SLOT_KINDS), Task.state == TaskState.RUNNING.value)):
        for host_id in _slot_hosts(task):
            counts[host_id] = counts.get(host_id, 0) + 1
    return counts


def dispatch_waiting(session: Session, cluster: Cluster | None = None) -> int:
    """Send the commands of queued migrations while their hosts have free slots; the rest
    wait in queue (step waiting-for-slot)."""
    busy = _busy_hosts(session)
    sent = 0
    waiting = session.scalars(select(Task).where(Task.kind.in_(SLOT_KINDS), Task.state == TaskState.QUEUED.value, Task.command_id.is_(None)).order_by(Task.id))
    for task in waiting:
        if "pending_command" not in task.params:
            continue
        vm = session.get(VirtualMachine, task.object_id)
        limit = migration_settings(session.get(Cluster, vm.cluster_id) if vm else None)["max_per_host"]
        hosts = _slot_hosts(task)
        if any(busy.get(h, 0) >= limit for h in hosts):
            task.step = "waiting-for-slot"
            continue
        # Counted as running from now (with a lease): the agent's first report confirms it.
        task.state = TaskState.RUNNING.value
        task.step = task.params.get("pending_step", "migrating")
        task.started_at = utcnow()
        task.lease_expires_at = utcnow() + timedelta(seconds=get_settings().task_lease)
        send_command(session, task, task.params.get("pending_name", "vm.migrate"), task.params["pending_command"])
        for h in hosts:
            busy[h] = busy.get(h, 0) + 1
        sent += 1
    return sent


# --- Storage VMotion -----------------------------------------------------------------------
def relocate_checks(session: Session, vm: VirtualMachine, target: Host, moved: set[int]) -> list[dict[str, Any]]:
    """The VMotion checks of a relocation to another host: placement's filters on the target,
    except that the datastore check covers only the disks that stay where they are (the moved
    ones go to datastores checked as mounted on the target by ``relocate``)."""
    results = checks(session, vm, target)
    out = []
    for check in results:
        if check["code"] != "DATASTORE_NOT_MOUNTED":
            out.append(check)
            continue
        missing = []
        for disk in vm.disks:
            if disk.index in moved:
                continue
            ds = session.get(Datastore, disk.datastore_id)
            if not any(m.host_id == target.id for m in ds.mounts):
                missing.append(f"disk {disk.index} is on datastore {ds.name}, not mounted on the target (move it too)")
        out.append({"code": "DATASTORE_NOT_MOUNTED", "ok": not missing, "message": "; ".join(missing) if missing else "ok"})
    return out


def relocate(session: Session, user: str, vm_id: int, moves: list[dict[str, int]], host_id: int | None = None) -> Task:
    """Move disks of a VM to other datastores: on its host, a running VM's disks are copied
    while it runs and pivoted (libvirt block copy) and a powered-off VM's files are converted
    by the agent; with ``host_id`` another host, the running VM live-migrates there with the
    moved disks copied to the target's datastores (libvirt NON_SHARED_DISK with a destination
    XML naming the new paths). Old files are removed only after every disk moved."""
    vm: VirtualMachine = inventory.get(session, "vm", vm_id)
    ensure_idle(session, "vm", vm.id)
    if vm.status != "ready":
        raise InvalidState(f"VM {vm.name} is {vm.status}", code="VM_NOT_READY")
    if vm.power_state == PowerState.SUSPENDED.value:
        raise InvalidState(f"VM {vm.name} is suspended: resume or power it off first", code="VM_SUSPENDED")
    if host_id is not None and host_id != vm.host_id:
        return _relocate_to_host(session, user, vm, moves, host_id)
    plan = disk_moves(session, vm, moves, vm.host_id)
    running = vm.power_state == PowerState.POWERED_ON.value
    return start_task(
        session,
        kind="vm.relocate",
        object_type="vm",
        object_id=vm.id,
        username=user,
        host_id=vm.host_id,
        params={"moves": plan},
        command="vm.relocate",
        command_args=RelocateArgs(uuid=vm.libvirt_uuid, moves=plan, running=running).args(),
    )


def _relocate_to_host(session: Session, user: str, vm: VirtualMachine, moves: list[dict[str, int]], target_id: int) -> Task:
    target: Host = inventory.ref(session, "host", target_id, "host_id")
    plan = disk_moves(session, vm, moves, target.id)
    if vm.power_state != PowerState.POWERED_ON.value:
        # Cold migration: copy, define on the target, undefine here.
        task = relocation.relocate_offline(session, user, vm, target, plan)
        dispatch_waiting(session)
        return task
    results = relocate_checks(session, vm, target, {p["index"] for p in plan})
    failed = [c for c in results if not c["ok"]]
    if failed:
        raise MigrationRefused(f"VM {vm.name} cannot move to host {target.name}: {failed[0]['message']}", code=failed[0]["code"], details={"checks": results})
    source_host: Host = session.get(Host, vm.host_id)
    options = options_for(session, vm, target, migration_settings(session.get(Cluster, vm.cluster_id)))
    options = options.model_copy(update={"copy_storage": True, "copy_disks": [p["target"] for p in plan], "dest_disk_paths": {p["target"]: p["to"] for p in plan}})
    # Queued like a VMotion: sent when the source and the target have a free migration slot.
    task = start_task(
        session,
        kind="vm.relocate",
        object_type="vm",
        object_id=vm.id,
        username=user,
        host_id=source_host.id,
        params={
            "moves": plan,
            "source": source_host.id,
            "target": target.id,
            "checks": results,
            "pending_name": "vm.relocate",
            "pending_step": "migrating",
            "pending_command": RelocateArgs(uuid=vm.libvirt_uuid, moves=plan, running=True, migrate=options).args(),
        },
    )
    record_event(
        session,
        "vm.relocate.requested",
        f"relocation of VM {vm.name} from {source_host.name} to {target.name} with {len(plan)} disk(s) requested",
        username=user,
        object_type="vm",
        object_id=vm.id,
        object_name=vm.name,
        task_id=task.id,
    )
    dispatch_waiting(session)
    return task


def disk_moves(session: Session, vm: VirtualMachine, moves: list[dict[str, int]], host_id: int) -> list[dict[str, Any]]:
    """Validate the requested disk moves to datastores mounted on ``host_id`` (the VM's host,
    or the target of a move across hosts) and plan them: disk, device, old and new paths."""
    disks = {d.index: d for d in vm.disks}
    host: Host = session.get(Host, host_id)
    plan: list[dict[str, Any]] = []
    for i, move in enumerate(moves):
        disk = disks.get(move["index"])
        if disk is None:
            raise Invalid(f"disks[{i}].index: VM {vm.name} has no disk {move['index']}", code="DISK_NOT_FOUND", details={"field": f"disks[{i}].index"})
        if any(p["index"] == disk.index for p in plan):
            raise Invalid(f"disks[{i}].index: disk {disk.index} is listed twice", code="DUPLICATE_DISK", details={"field": f"disks[{i}].index"})
        ds: Datastore = inventory.ref(session, "datastore", move["datastore_id"], f"disks[{i}].datastore_id")
        mount = next((m for m in ds.mounts if m.host_id == host_id), None)
        if mount is None:
            raise Conflict(f"datastore {ds.name} is not mounted on host {host.name}", code="DATASTORE_NOT_MOUNTED", details={"field": f"disks[{i}].datastore_id"})
        if ds.id == disk.datastore_id:
            raise Invalid(f"disks[{i}].datastore_id: disk {disk.index} is already on {ds.name} (list only the disks that move)", code="SAME_DATASTORE", details={"field": f"disks[{i}].datastore_id"})
        if ds.free_bytes and ds.free_bytes < disk.capacity_mib * 1024 * 1024:
            raise Conflict(f"datastore {ds.name} has {ds.free_bytes // 2**20} MiB free, disk {disk.index} needs {disk.capacity_mib} MiB", code="DATASTORE_FULL")
        source = session.get(Datastore, disk.datastore_id)
        old_mount = next((m for m in source.mounts if m.host_id == vm.host_id), None)
        plan.append(
            {
                "index": disk.index,
                "target": disk_target(disk.index),
                "format": disk.format,
                "from": f"{(old_mount.path if old_mount else source.url)}/{disk.file}",
                "to": f"{mount.path}/{disk.file}",
                "datastore_id": ds.id,
            }
        )
    return plan


def disk_target_name(index: int) -> str:
    return "vd" + chr(ord("a") + index)
