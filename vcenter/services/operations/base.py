"""What an operation is: the one object that owns a Task kind after it started.

An operation answers, for its Task kinds, what the inventory does when the agent's result
arrives (success or failure), what a progress report's details mean, whether a cancel waits
for the running step, whether a task whose agent went silent already reached its aim
(``reconciled``), and what rows made for its outcome go when it ended without a result
(``rollback``). The defaults are those of a plain agent command: apply the result, change
nothing else. Starting an operation stays with the service that validates the request (the
operation's docstring names it); the habit is nova's ``TaskBase``: the logic in the subclass,
a rollback hook that does nothing unless the operation made something.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

from pydantic import ValidationError
from sqlalchemy.orm import Session

from vcenter.core.errors import Invalid
from vcenter.db.models import Host, Task, VirtualMachine
from vcenter.domain.states import TaskState
from vcenter.messaging.contracts import DomainState
from vcenter.messaging.results import Result
from vcenter.services.tasks.tasks import finish_task


class Ending(str, Enum):
    """How a task ended without its agent's result (what its rollback reacts to)."""

    LOST = "lost"  # the reaper: lease expired, attempts exhausted (WORKER_LOST)
    UNREACHABLE = "unreachable"  # the reaper: no agent picked the command up (AGENT_UNREACHABLE)
    CANCELLED = "cancelled"  # cancelled while still queued


@dataclass(frozen=True)
class AgentResult:
    """An agent's result for a task, as the report carried it."""

    host: Host
    ok: bool
    result: dict[str, Any] = field(default_factory=dict)
    error_code: str | None = None
    error_message: str | None = None
    domain: DomainState | None = None

    def typed(self, model: type[ResultT]) -> ResultT:
        """The result as its command's result model (vcenter.messaging.results) reads it; the
        dict itself stays what the task stores. A result that does not fit is refused (422
        AGENT_RESULT_INVALID, the report's changes rolled back), never a 500."""
        try:
            return model.model_validate(self.result)
        except ValidationError as exc:
            where = [".".join(str(part) for part in error["loc"]) for error in exc.errors()]
            raise Invalid(f"the agent's result does not fit {model.__name__}: {', '.join(where)}", code="AGENT_RESULT_INVALID", details={"fields": where}) from None


ResultT = TypeVar("ResultT", bound=Result)


def apply_domain(vm: VirtualMachine, domain: DomainState) -> None:
    """The domain's state as the agent reported it with the result."""
    if vm.power_state != domain.power_state:
        vm.power_state = domain.power_state
    if domain.vcpus and vm.vcpus != domain.vcpus:
        vm.vcpus = domain.vcpus
    if domain.memory_mib and vm.memory_mib != domain.memory_mib:
        vm.memory_mib = domain.memory_mib


def drop_creating(session: Session, vm_id: int | None) -> None:
    """The VM row made for a task's outcome goes while it is still being created."""
    vm = session.get(VirtualMachine, vm_id) if vm_id else None
    if vm is not None and vm.status == "creating":
        session.delete(vm)


class Operation:
    """Base of every operation; alone it is a plain agent command on any object."""

    kinds: tuple[str, ...] = ()
    advances = False  # True: the orchestrator's periodic pass calls ``advance`` on its running tasks

    def on_result(self, session: Session, task: Task, report: AgentResult) -> None:
        """Apply the agent's result; the task ends here (or moves to its next command)."""
        vm = session.get(VirtualMachine, task.object_id) if task.object_type == "vm" else None
        if report.ok:
            self.succeeded(session, task, vm, report)
        else:
            self.failed(session, task, vm, report)

    def succeeded(self, session: Session, task: Task, vm: VirtualMachine | None, report: AgentResult) -> None:
        if vm is not None and report.domain is not None:
            apply_domain(vm, report.domain)
        finish_task(session, task, TaskState.SUCCESS, result=report.result, object_name=vm.name if vm else None)

    def failed(self, session: Session, task: Task, vm: VirtualMachine | None, report: AgentResult) -> None:
        finish_task(session, task, self.failed_state(report), error_code=report.error_code or "AGENT_ERROR", error_message=report.error_message, object_name=vm.name if vm else None)
        if vm is not None and report.domain is not None:
            apply_domain(vm, report.domain)

    def failed_state(self, report: AgentResult) -> TaskState:
        return TaskState.ERROR

    def on_progress(self, task: Task, details: dict[str, Any]) -> None:
        """A progress report's details (e.g. libvirt's job stats); ignored by default."""

    def defers_cancel(self, task: Task) -> bool:
        """True while the running step must finish even though a cancel was requested."""
        return False

    def reconciled(self, session: Session, task: Task) -> bool:
        """True when a task whose agent went silent already reached its aim (the reaper ends it
        as a success)."""
        return False

    def after_reconciled(self, session: Session, task: Task) -> None:
        """What follows the reaper's success for a reconciled task whose lease expired."""

    def advance(self, session: Session, task: Task) -> None:
        """The periodic pass, for an operation that waits for something other than an agent's
        result (its children, a host coming back)."""

    def rollback(self, session: Session, task: Task, ending: Ending) -> None:
        """The task ended without its agent's result: undo what was made for its outcome."""
