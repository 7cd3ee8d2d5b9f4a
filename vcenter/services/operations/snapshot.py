"""Snapshots and promote of a VM (started by services.protection.snapshots and
services.library.clones): what the inventory records when the agent reports.

Snapshots (``vm.snapshot.create|revert|delete``): rows in ``vm_snapshots`` appear, move their
``current`` mark or go only on the agent's success, with the parent libvirt named. Promote
(``vm.promote``): a linked clone's disks become standalone. Clones are operations.clone.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vcenter.db.models import Task, VirtualMachine, VmSnapshotRow
from vcenter.domain.states import PowerState, TaskState
from vcenter.messaging.results import PromoteResult, Result, SnapshotCreated, SnapshotResult, SnapshotReverted, SnapshotsDeleted
from vcenter.services.tasks.events import record_event
from vcenter.services.operations.base import AgentResult, Operation
from vcenter.services.tasks.tasks import finish_task


def _snapshot_rows(session: Session, vm: VirtualMachine) -> dict[str, VmSnapshotRow]:
    return {r.name: r for r in session.scalars(select(VmSnapshotRow).where(VmSnapshotRow.vm_id == vm.id))}


class _OnVm(Operation):
    """A one-command operation on a VM that may have left the inventory meanwhile; the domain's
    power state comes with the result, read through its result model."""

    result_model: type[Result]

    def on_result(self, session: Session, task: Task, report: AgentResult) -> None:
        vm = session.get(VirtualMachine, task.object_id)
        if vm is None:
            finish_task(session, task, TaskState.ERROR, error_code="VM_GONE", error_message="the VM left the inventory")
            return
        if report.domain is not None and report.domain.uuid == vm.libvirt_uuid:
            vm.power_state = report.domain.power_state
        if not report.ok:
            finish_task(session, task, TaskState.ERROR, error_code=report.error_code or "AGENT_ERROR", error_message=report.error_message, object_name=vm.name)
            return
        self.applied(session, task, vm, report.typed(self.result_model))
        finish_task(session, task, TaskState.SUCCESS, result=report.result, object_name=vm.name)

    def applied(self, session: Session, task: Task, vm: VirtualMachine, result: Any) -> None:
        raise NotImplementedError


class _Snapshot(_OnVm):
    """A snapshot operation: libvirt may drop the VM's backup checkpoints with it."""

    def applied(self, session: Session, task: Task, vm: VirtualMachine, result: SnapshotResult) -> None:
        self.snapshots_changed(session, task, vm, result)
        if result.checkpoints_dropped:
            record_event(
                session,
                "vm.backup.chain_reset",
                f"VM {vm.name}: checkpoints {result.checkpoints_dropped} dropped by the snapshot operation; the next backup is full",
                username=task.username,
                object_type="vm",
                object_id=vm.id,
                object_name=vm.name,
                task_id=task.id,
            )

    def snapshots_changed(self, session: Session, task: Task, vm: VirtualMachine, result: Any) -> None:
        raise NotImplementedError


class SnapshotCreate(_Snapshot):
    kinds = ("vm.snapshot.create",)
    result_model = SnapshotCreated

    def snapshots_changed(self, session: Session, task: Task, vm: VirtualMachine, result: SnapshotCreated) -> None:
        rows = _snapshot_rows(session, vm)
        row = rows.get(result.name)
        if row is None:
            parent = rows.get(result.parent or "")
            row = VmSnapshotRow(
                vm_id=vm.id,
                name=result.name,
                description=result.description,
                parent_id=parent.id if parent else None,
                memory=result.memory,
                power_state=PowerState.POWERED_ON.value if result.state == "running" else PowerState.POWERED_OFF.value,
                task_id=task.id,
            )
            session.add(row)
            session.flush()
        for other in rows.values():
            other.current = False
        row.current = True
        record_event(
            session,
            "vm.snapshot.created",
            f"snapshot {row.name!r} of VM {vm.name} taken" + (" with memory" if row.memory else " (disks)"),
            username=task.username,
            object_type="vm",
            object_id=vm.id,
            object_name=vm.name,
            task_id=task.id,
        )


class SnapshotRevert(_Snapshot):
    kinds = ("vm.snapshot.revert",)
    result_model = SnapshotReverted

    def snapshots_changed(self, session: Session, task: Task, vm: VirtualMachine, result: SnapshotReverted) -> None:
        for r in _snapshot_rows(session, vm).values():
            r.current = r.name == task.params["name"]
        record_event(
            session,
            "vm.snapshot.reverted",
            f"VM {vm.name} reverted to snapshot {task.params['name']!r}",
            username=task.username,
            object_type="vm",
            object_id=vm.id,
            object_name=vm.name,
            task_id=task.id,
        )


class SnapshotDelete(_Snapshot):
    kinds = ("vm.snapshot.delete",)
    result_model = SnapshotsDeleted

    def snapshots_changed(self, session: Session, task: Task, vm: VirtualMachine, result: SnapshotsDeleted) -> None:
        rows = _snapshot_rows(session, vm)
        deleted = [rows[n] for n in result.deleted if n in rows]
        if not deleted and task.params["name"] in rows:  # already gone on the host
            deleted = [rows[task.params["name"]]]
        gone = {r.id for r in deleted}
        for r in deleted:
            for child in rows.values():
                if child.parent_id == r.id and child.id not in gone:
                    child.parent_id = r.parent_id  # libvirt re-parents the same way
        for r in deleted:
            session.delete(r)
        record_event(
            session,
            "vm.snapshot.deleted",
            f"snapshot(s) {', '.join(r.name for r in deleted)} of VM {vm.name} deleted",
            username=task.username,
            object_type="vm",
            object_id=vm.id,
            object_name=vm.name,
            task_id=task.id,
        )


class Promote(_OnVm):
    kinds = ("vm.promote",)
    result_model = PromoteResult

    def applied(self, session: Session, task: Task, vm: VirtualMachine, result: PromoteResult) -> None:
        for disk in vm.disks:
            disk.backing_file = None
        record_event(
            session, "vm.promoted", f"VM {vm.name}: linked disks {result.flattened} made standalone", username=task.username, object_type="vm", object_id=vm.id, object_name=vm.name, task_id=task.id
        )
