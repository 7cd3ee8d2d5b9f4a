"""Snapshots of VMs: validation and Tasks. What the inventory records when the agent reports
is the operations' (vcenter.services.operations.snapshot).

Snapshots (Tasks ``vm.snapshot.create|revert|delete``, commands of the same names on the VM's
host): libvirt internal qcow2 snapshots; a running VM's includes its memory. Rows in
``vm_snapshots`` appear only when the agent reported success, with the parent libvirt named.
Clones and promote are the library's (vcenter.services.library.clones).

Codes: SNAPSHOT_NAME_TAKEN, SNAPSHOT_NOT_FOUND, SNAPSHOT_UNSUPPORTED (a disk not qcow2),
VM_SUSPENDED, VM_NOT_READY.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vcenter.core.errors import Conflict, NotFound
from vcenter.db.models import Task, VirtualMachine, VmSnapshotRow
from vcenter.domain.backups import snapshot_tree
from vcenter.domain.states import PowerState
from vcenter.messaging.commands import SnapshotCreateArgs, SnapshotDeleteArgs, SnapshotRevertArgs
from vcenter.services.inventory import inventory
from vcenter.services.inventory.vm_data import ready_vm
from vcenter.services.tasks.events import record_event
from vcenter.services.tasks.tasks import start_task


def _row(r: VmSnapshotRow) -> dict[str, Any]:
    return {
        "id": r.id,
        "vm_id": r.vm_id,
        "name": r.name,
        "description": r.description,
        "parent_id": r.parent_id,
        "memory": r.memory,
        "power_state": r.power_state,
        "current": r.current,
        "created_at": r.created_at,
        "task_id": r.task_id,
    }


# --- snapshots -----------------------------------------------------------------------------
def list_snapshots(session: Session, vm_id: int) -> dict[str, Any]:
    vm = inventory.get(session, "vm", vm_id)
    rows = list(session.scalars(select(VmSnapshotRow).where(VmSnapshotRow.vm_id == vm.id).order_by(VmSnapshotRow.id)))
    current = next((r.id for r in rows if r.current), None)
    return {"vm_id": vm.id, "current_id": current, "count": len(rows), "tree": snapshot_tree([_row(r) for r in rows])}


def _snapshot(session: Session, vm: VirtualMachine, snapshot_id: int) -> VmSnapshotRow:
    row = session.get(VmSnapshotRow, snapshot_id)
    if row is None or row.vm_id != vm.id:
        raise NotFound(f"VM {vm.name} has no snapshot {snapshot_id}", code="SNAPSHOT_NOT_FOUND")
    return row


def create_snapshot(session: Session, user: str, vm_id: int, name: str, description: str = "") -> Task:
    vm = ready_vm(session, vm_id)
    if session.scalar(select(VmSnapshotRow.id).where(VmSnapshotRow.vm_id == vm.id, VmSnapshotRow.name == name)) is not None:
        raise Conflict(f"VM {vm.name} already has a snapshot named {name!r}", code="SNAPSHOT_NAME_TAKEN", details={"field": "name"})
    raw = [d.index for d in vm.disks if d.format != "qcow2"]
    if raw:
        raise Conflict(f"VM {vm.name}: disks {raw} are not qcow2; libvirt snapshots need qcow2", code="SNAPSHOT_UNSUPPORTED")
    task = start_task(
        session,
        kind="vm.snapshot.create",
        object_type="vm",
        object_id=vm.id,
        username=user,
        host_id=vm.host_id,
        params={"name": name, "memory": vm.power_state == PowerState.POWERED_ON.value},
        command="vm.snapshot.create",
        command_args=SnapshotCreateArgs(uuid=vm.libvirt_uuid, name=name, description=description).args(),
    )
    record_event(session, "vm.snapshot.requested", f"snapshot {name!r} of VM {vm.name} requested", username=user, object_type="vm", object_id=vm.id, object_name=vm.name, task_id=task.id)
    return task


def revert_snapshot(session: Session, user: str, vm_id: int, snapshot_id: int) -> Task:
    vm = ready_vm(session, vm_id)
    row = _snapshot(session, vm, snapshot_id)
    return start_task(
        session,
        kind="vm.snapshot.revert",
        object_type="vm",
        object_id=vm.id,
        username=user,
        host_id=vm.host_id,
        params={"snapshot_id": row.id, "name": row.name},
        command="vm.snapshot.revert",
        command_args=SnapshotRevertArgs(uuid=vm.libvirt_uuid, name=row.name).args(),
    )


def delete_snapshot(session: Session, user: str, vm_id: int, snapshot_id: int, children: bool = False) -> Task:
    vm = ready_vm(session, vm_id)
    row = _snapshot(session, vm, snapshot_id)
    return start_task(
        session,
        kind="vm.snapshot.delete",
        object_type="vm",
        object_id=vm.id,
        username=user,
        host_id=vm.host_id,
        params={"snapshot_id": row.id, "name": row.name, "children": children},
        command="vm.snapshot.delete",
        command_args=SnapshotDeleteArgs(uuid=vm.libvirt_uuid, name=row.name, children=children).args(),
    )
