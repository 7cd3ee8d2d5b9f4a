"""Snapshots, promote and clones of a VM (started by services.protection.snapshots): what the inventory
records when the agent reports.

Snapshots (``vm.snapshot.create|revert|delete``): rows in ``vm_snapshots`` appear, move their
``current`` mark or go only on the agent's success, with the parent libvirt named. Promote
(``vm.promote``): a linked clone's disks become standalone. Clone (``vm.clone``, a saga of two
commands on the SOURCE VM): copying on the source's host -> defining on the target host
(``vm.create``, or ``vm.deploy`` writing a customised guest's own seed) -> the clone is ready;
on any failure the clone's row (status ``creating``) goes.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vcenter.core.settings import get_settings
from vcenter.db.models import Task, VirtualMachine, VmSnapshotRow
from vcenter.domain.states import PowerState, TaskState
from vcenter.messaging.results import PromoteResult, Result, SnapshotCreated, SnapshotResult, SnapshotReverted, SnapshotsDeleted
from vcenter.messaging.contracts import CreateArgs, DeployArgs
from vcenter.services.tasks.events import record_event
from vcenter.services.operations.base import AgentResult, Ending, Operation, drop_creating
from vcenter.services.tasks.tasks import finish_task, mark_running, send_command
from vcenter.services.inventory.vm_spec import vm_spec


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


class Clone(Operation):
    kinds = ("vm.clone",)

    def on_result(self, session: Session, task: Task, report: AgentResult) -> None:
        vm = session.get(VirtualMachine, task.object_id)
        if vm is None:
            finish_task(session, task, TaskState.ERROR, error_code="VM_GONE", error_message="the VM left the inventory")
            return
        new = session.get(VirtualMachine, task.params["clone_vm_id"])
        if not report.ok:
            finish_task(
                session,
                task,
                TaskState.CANCELLED if report.error_code == "BACKUP_CANCELLED" else TaskState.ERROR,
                error_code=report.error_code or "AGENT_ERROR",
                error_message=report.error_message,
                object_name=vm.name,
            )
            if new is not None:
                record_event(
                    session,
                    "vm.clone.failed",
                    f"clone {new.name} of VM {vm.name} failed: {report.error_code}",
                    username=task.username,
                    object_type="vm",
                    object_id=vm.id,
                    object_name=vm.name,
                    reason=report.error_code,
                    task_id=task.id,
                )
                session.delete(new)
            return
        if task.step == "copying":
            self._define(session, task, vm, new, report.result)
            return
        new.status = "ready"
        finish_task(session, task, TaskState.SUCCESS, result={"clone_vm_id": new.id, "copy": task.params.get("copy", {}), "linked": task.params.get("linked")}, object_name=vm.name)
        record_event(session, "vm.cloned", f"VM {vm.name} cloned to {new.name}", username=task.username, object_type="vm", object_id=new.id, object_name=new.name, task_id=task.id)

    def _define(self, session: Session, task: Task, vm: VirtualMachine, new: VirtualMachine, copy: dict[str, Any]) -> None:
        """The copy is done: the clone's domain is defined on the target host."""
        if task.params.get("linked"):
            for disk in vm.disks:
                made = next(c for c in task.params["copies"] if c["index"] == disk.index)
                disk.backing_file = made["base_file"]  # the source is now an overlay on the base too
        task.host_id = task.params["target_host_id"]
        task.command_id = None
        # The lease now waits for the target's agent (lease length: the server's settings).
        mark_running(session, task, "defining", 80, get_settings())
        task.params = {**task.params, "copy": copy}
        spec = vm_spec(session, new, new.host_id)
        if task.params.get("seed"):
            # A customised guest: the target's agent writes the clone's own seed, then defines.
            send_command(session, task, "vm.deploy", DeployArgs(spec=spec, clones=[], mode="clone", seed=task.params["seed"]).args())
        else:
            send_command(session, task, "vm.create", CreateArgs(spec=spec).args())

    def rollback(self, session: Session, task: Task, ending: Ending) -> None:
        if ending is Ending.CANCELLED:
            return  # as before the registry: a clone cancelled while queued keeps its row (a known gap)
        drop_creating(session, task.params.get("clone_vm_id"))
