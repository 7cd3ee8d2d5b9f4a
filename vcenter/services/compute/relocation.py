"""A powered-off VM's relocation to another host (cold migration), with or without moving its
disks: a saga of host commands in one Task of kind ``vm.relocate`` (``params.offline``).

Who copies: a *copier*, a connected host that mounts both the source and the target datastore
of every moved disk: the target itself (it reads the old files from a datastore it shares
with the source), else the source (it writes into a datastore it shares with the target), else
any other host of the datacenter that mounts both. No such host: refused up front
(409 ``RELOCATE_NO_HOST_MOUNTS_BOTH``), naming the datastores.

Phases (``params.phase``; ``Task.step`` shows the agents' own words):
  queued / waiting-for-slot (the per-host migration slots of services.compute.migration, counted on
  the source, the target and the copier)
  -> copying (the copier converts every moved file to its new path, progress, cancel; on
     failure or cancel it removes the new files itself) — skipped when no disk moves
  -> defining (the target defines the domain on the new paths; a missing file is an error,
     never an empty disk)
  -> finishing (the source undefines its domain, then removes the old files) -> success: the
     inventory now names the target host and datastores.
Failures: copying fails -> ended (nothing changed); defining fails -> discarding (the copier
removes the new files) -> ended; finishing fails before the undefine -> discarding on the
target (undefine there, remove the new files) -> ended. In every failure the VM stays defined
on the source with its old files. A cancel is honoured while copying and between phases.
This module starts the saga and builds each phase's command; each phase's result advances it
in vcenter.services.operations.relocate.
Codes: RELOCATE_NO_HOST_MOUNTS_BOTH, HOST_NOT_CONNECTED, HOST_IN_MAINTENANCE, HOST_IN_STANDBY,
OTHER_CLUSTER, VM_HAS_SNAPSHOTS, DATASTORE_NOT_MOUNTED.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vcenter.core.errors import Conflict
from vcenter.db.models import Datastore, Host, Task, VirtualMachine, VmSnapshotRow
from vcenter.domain.states import ConnectionState
from vcenter.messaging.contracts import OfflineCopyArgs, OfflineDefineArgs, OfflineFinishArgs, VmSpec
from vcenter.services.tasks.events import record_event
from vcenter.services.tasks.tasks import start_task
from vcenter.services.inventory.vm_spec import vm_spec

PHASE_PROGRESS = {"copying": 5, "defining": 85, "finishing": 92, "discarding": 95}


def _mount(ds: Datastore, host_id: int) -> str | None:
    return next((m.path for m in ds.mounts if m.host_id == host_id), None)


def _usable(host: Host, role: str) -> None:
    if host.connection_state != ConnectionState.CONNECTED.value:
        raise Conflict(f"{role} host {host.name} is {host.connection_state}", code="HOST_NOT_CONNECTED")


def choose_copier(session: Session, source: Host, target: Host, pairs: list[tuple[Datastore, Datastore]]) -> Host | None:
    """The host that copies: one mounting both datastores of every pair (target first, then
    source, then any connected host of the datacenter by id); None when no host does."""
    others = session.scalars(
        select(Host).where(Host.datacenter_id == target.datacenter_id, Host.id.not_in((source.id, target.id)), Host.connection_state == ConnectionState.CONNECTED.value).order_by(Host.id)
    ).all()
    for host in (target, source, *others):
        if all(_mount(a, host.id) and _mount(b, host.id) for a, b in pairs):
            return host
    return None


def relocate_offline(session: Session, user: str, vm: VirtualMachine, target: Host, plan: list[dict[str, Any]]) -> Task:
    """Start the saga (``plan``: services.compute.migration.disk_moves against the target). The task is
    queued for migration slots: the caller dispatches the waiting migrations (services.compute.migration
    sends it when its hosts have free slots)."""
    source: Host = session.get(Host, vm.host_id)
    _usable(target, "target")
    _usable(source, "source")
    if target.maintenance:
        raise Conflict(f"host {target.name} is in maintenance", code="HOST_IN_MAINTENANCE")
    if target.standby:
        raise Conflict(f"host {target.name} is in standby", code="HOST_IN_STANDBY")
    if vm.cluster_id is not None and target.cluster_id != vm.cluster_id:
        raise Conflict(f"host {target.name} is not in the VM's cluster", code="OTHER_CLUSTER")
    snapshots = session.scalar(select(func.count()).select_from(VmSnapshotRow).where(VmSnapshotRow.vm_id == vm.id))
    if snapshots:
        # The copies are flattened images and the snapshot metadata lives in the source's libvirt.
        raise Conflict(f"VM {vm.name} has {snapshots} snapshot(s): delete them before moving it to another host", code="VM_HAS_SNAPSHOTS")
    moved = {p["index"] for p in plan}
    for disk in vm.disks:
        if disk.index in moved:
            continue
        ds = session.get(Datastore, disk.datastore_id)
        if not _mount(ds, target.id):
            raise Conflict(f"disk {disk.index} is on datastore {ds.name}, not mounted on host {target.name} (move it too)", code="DATASTORE_NOT_MOUNTED")
    disks = {d.index: d for d in vm.disks}
    pairs = [(session.get(Datastore, disks[p["index"]].datastore_id), session.get(Datastore, p["datastore_id"])) for p in plan]
    copier = choose_copier(session, source, target, pairs) if plan else target
    if copier is None:
        names = ", ".join(f"{a.name} -> {b.name}" for a, b in pairs)
        raise Conflict(
            f"no connected host mounts both the source and the target datastore of every moved disk ({names}): "
            "the files cannot be copied (mount one of them on a host that has the other, or power the VM on to move it live)",
            code="RELOCATE_NO_HOST_MOUNTS_BOTH",
            details={"pairs": [[a.name, b.name] for a, b in pairs]},
        )
    copies = []
    for (old, new), p in zip(pairs, plan):
        copies.append({"from": f"{_mount(old, copier.id)}/{disks[p['index']].file}", "to": f"{_mount(new, copier.id)}/{disks[p['index']].file}", "format": p["format"]})
    first = "copying" if plan else "defining"
    task = start_task(
        session,
        kind="vm.relocate",
        object_type="vm",
        object_id=vm.id,
        username=user,
        host_id=copier.id if plan else target.id,
        params={
            "moves": plan,
            "source": source.id,
            "target": target.id,
            "copier": copier.id,
            "offline": True,
            "copies": copies,
            "phase": first,
            "pending_name": "vm.relocate",
            "pending_step": first,
            "pending_command": phase_command(session, vm, {"moves": plan, "copies": copies, "target": target.id}, first),
        },
    )
    record_event(
        session,
        "vm.relocate.requested",
        f"relocation of powered-off VM {vm.name} from {source.name} to {target.name} with {len(plan)} disk(s) requested (copied by {copier.name})",
        username=user,
        object_type="vm",
        object_id=vm.id,
        object_name=vm.name,
        task_id=task.id,
    )
    return task


def _target_spec(session: Session, vm: VirtualMachine, target_id: int, moves: list[dict[str, Any]]) -> VmSpec:
    """The domain's definition on the target: its moved disks on their new datastores."""
    spec = vm_spec(session, vm, target_id)
    by_index = {p["index"]: p for p in moves}
    disks = []
    for d in spec.disks:
        p = by_index.get(d.index)
        if p is not None:
            ds = session.get(Datastore, p["datastore_id"])
            d = d.model_copy(update={"datastore_id": ds.id, "datastore_path": _mount(ds, target_id)})
        disks.append(d)
    return spec.model_copy(update={"disks": disks})


def phase_command(session: Session, vm: VirtualMachine, task_params: dict[str, Any], phase: str) -> dict[str, Any]:
    """The ``vm.relocate`` arguments of a phase (copying, defining, finishing)."""
    if phase == "copying":
        return OfflineCopyArgs(uuid=vm.libvirt_uuid, copies=task_params["copies"]).args()
    if phase == "defining":
        return OfflineDefineArgs(spec=_target_spec(session, vm, task_params["target"], task_params["moves"])).args()
    if phase == "finishing":
        return OfflineFinishArgs(uuid=vm.libvirt_uuid, remove=[p["from"] for p in task_params["moves"]]).args()
    raise ValueError(phase)
