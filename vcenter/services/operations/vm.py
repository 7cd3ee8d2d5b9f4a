"""The VM's own operations: create (``vm.create``, started by services.compute.vms.create_vm), delete
(``vm.delete``, services.compute.vms.delete_vm) and the power actions (``vm.powerOn`` ...,
services.compute.vms.power). One agent command each; the result is the truth about the domain.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from vcenter.db.models import Task, VirtualMachine
from vcenter.domain.states import PowerAction, TaskState, power_state_after
from vcenter.services.tasks.events import record_event
from vcenter.services.operations.base import AgentResult, Ending, Operation, apply_domain, drop_creating
from vcenter.services.tasks.tasks import finish_task


class VmCreate(Operation):
    """The VM row exists from the start with status ``creating``; the agent's success makes it
    ready, its failure (the agent rolled back what it had made) removes it."""

    kinds = ("vm.create",)

    def succeeded(self, session: Session, task: Task, vm: VirtualMachine | None, report: AgentResult) -> None:
        if vm is not None:
            if report.domain is not None:
                apply_domain(vm, report.domain)
            vm.status = "ready"
            record_event(session, "vm.created", f"VM {vm.name} created on host {report.host.name}", username=task.username, object_type="vm", object_id=vm.id, object_name=vm.name, task_id=task.id)
        finish_task(session, task, TaskState.SUCCESS, result=report.result, object_name=vm.name if vm else None)

    def failed(self, session: Session, task: Task, vm: VirtualMachine | None, report: AgentResult) -> None:
        super().failed(session, task, vm, report)
        if vm is not None:
            # The agent rolled back what it had created; the inventory forgets the VM too.
            record_event(
                session,
                "vm.create.failed",
                f"VM {vm.name} could not be created: {report.error_code}",
                username=task.username,
                object_type="vm",
                object_id=vm.id,
                object_name=vm.name,
                reason=report.error_code,
                task_id=task.id,
            )
            session.delete(vm)

    def rollback(self, session: Session, task: Task, ending: Ending) -> None:
        # Only a command no agent ever picked up is known not to have made the domain.
        if ending is Ending.UNREACHABLE:
            drop_creating(session, task.object_id)


class VmDelete(Operation):
    """The domain and its disks are gone on the host: the VM leaves the inventory."""

    kinds = ("vm.delete",)

    def succeeded(self, session: Session, task: Task, vm: VirtualMachine | None, report: AgentResult) -> None:
        if vm is None:
            super().succeeded(session, task, vm, report)
            return
        name = vm.name
        finish_task(session, task, TaskState.SUCCESS, result=report.result, object_name=name)
        session.delete(vm)
        record_event(session, "vm.deleted", f"VM {name} deleted with its disks", username=task.username, object_type="vm", object_id=task.object_id, object_name=name, task_id=task.id)


class VmPower(Operation):
    """A power action; a task whose agent went silent is done when the VM shows the state the
    action leads to (a reset leads to the state it started from: never known done)."""

    kinds = tuple(f"vm.{a.value}" for a in PowerAction)

    def reconciled(self, session: Session, task: Task) -> bool:
        action = PowerAction(task.kind.removeprefix("vm."))
        if action == PowerAction.RESET:
            return False
        vm = session.get(VirtualMachine, task.object_id)
        return vm is not None and vm.power_state == power_state_after(action).value
