"""Backups and restores of a VM (started by services.protection.backups): what the inventory records when
the agent reports.

Backup (``vm.backup``): the point (row made running at the start) becomes ok with its files'
sizes and checkpoint, and the points its retention drops go; on failure or cancel it is failed.
Restore (``vm.restore``): over the VM's own disks (its snapshots and linked bases go), or into
a new VM made ``creating`` at the start, which is ready on success and goes on failure.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from vcenter.core.clock import utcnow
from vcenter.db.models import BackupPoint, Task, VirtualMachine, VmSnapshotRow
from vcenter.domain.states import TaskState
from vcenter.messaging.results import BackupResult
from vcenter.services.tasks.events import record_event
from vcenter.services.operations.base import AgentResult, Ending, Operation, drop_creating
from vcenter.services.tasks.tasks import finish_task


class Backup(Operation):
    kinds = ("vm.backup",)

    def on_result(self, session: Session, task: Task, report: AgentResult) -> None:
        vm = session.get(VirtualMachine, task.object_id)
        name = vm.name if vm else None
        point = session.get(BackupPoint, task.params["point_id"])
        result = report.typed(BackupResult)
        if not report.ok:
            if point is not None:
                point.state = "failed"
                point.files = []
            state = TaskState.CANCELLED if report.error_code == "BACKUP_CANCELLED" else TaskState.ERROR
            finish_task(session, task, state, error_code=report.error_code or "AGENT_ERROR", error_message=report.error_message, object_name=name)
            return
        point.state = "ok"
        point.kind = result.kind if result.kind is not None else point.kind
        if point.kind == "full":
            point.parent_id = None  # the chain ends at a full point made instead of an incremental one
        point.checkpoint = result.checkpoint
        sizes = result.files
        point.files = [{**f, "bytes": int(sizes.get(f["target"], 0))} for f in point.files]
        point.size_bytes = sum(f["bytes"] for f in point.files)
        point.completed_at = utcnow()
        for pid in task.params.get("retention_deletes", []):
            old = session.get(BackupPoint, pid)
            if old is not None:
                for child in session.scalars(select(BackupPoint).where(BackupPoint.parent_id == old.id)):
                    child.parent_id = None
                session.delete(old)
        finish_task(session, task, TaskState.SUCCESS, result={**report.result, "point_id": point.id}, object_name=name)
        record_event(
            session,
            "vm.backup.done",
            f"{point.kind} backup of VM {name}: point {point.id}, {point.size_bytes} bytes",
            username=task.username,
            object_type="vm",
            object_id=task.object_id,
            object_name=name,
            task_id=task.id,
        )

    def rollback(self, session: Session, task: Task, ending: Ending) -> None:
        if ending is Ending.CANCELLED:
            return  # as before the registry: a backup cancelled while queued leaves its point running (a known gap)
        point = session.get(BackupPoint, task.params.get("point_id"))
        if point is not None and point.state == "running":
            point.state = "failed"


class Restore(Operation):
    kinds = ("vm.restore",)

    def on_result(self, session: Session, task: Task, report: AgentResult) -> None:
        vm = session.get(VirtualMachine, task.object_id)
        name = vm.name if vm else None
        new = session.get(VirtualMachine, task.params["new_vm_id"]) if task.params.get("new_vm_id") else None
        if not report.ok:
            finish_task(session, task, TaskState.ERROR, error_code=report.error_code or "AGENT_ERROR", error_message=report.error_message, object_name=name)
            if new is not None:
                session.delete(new)
            return
        if new is not None:
            new.status = "ready"
        elif vm is not None:
            for row in session.scalars(select(VmSnapshotRow).where(VmSnapshotRow.vm_id == vm.id)):
                session.delete(row)
            for disk in vm.disks:
                disk.backing_file = None
        finish_task(session, task, TaskState.SUCCESS, result={**report.result, **({"new_vm_id": new.id} if new else {})}, object_name=name)
        record_event(
            session,
            "vm.restored",
            f"VM {name} restored from point {task.params['point_id']}" + (f" into new VM {new.name}" if new else " over its disks"),
            username=task.username,
            object_type="vm",
            object_id=new.id if new else task.object_id,
            object_name=new.name if new else name,
            task_id=task.id,
        )

    def rollback(self, session: Session, task: Task, ending: Ending) -> None:
        if ending is Ending.CANCELLED:
            return  # as before the registry: a restore cancelled while queued keeps its new VM's row (a known gap)
        drop_creating(session, task.params.get("new_vm_id"))
