"""The template library's operations (started by services.library.templates): what the inventory
records when the agent reports, and how it rolls back when one ends without success (the
agent's error or cancel, a cancel while queued, the reaper's WORKER_LOST/AGENT_UNREACHABLE;
the agent already removed what it had made).

- ``template.fromVm``: the template (row ``creating``) is ready and the VM goes; rollback: the
  template row goes.
- ``template.toVm``: the VM (row ``creating``) is ready and the template goes; rollback: the
  template is ready again, the VM row goes.
- ``template.delete``: the template goes; rollback: it is ready again.
- ``template.deploy``, ``vm.import``, ``vm.importOva``: the new VM is ready; rollback: it goes
  (an Event says why).
- ``vm.export``, ``template.export``: the OVA is the upload's file; rollback: the file goes.
- ``template.verify``, ``datastore.browse``: the answer is the task's result.
"""

from __future__ import annotations

import os

from sqlalchemy.orm import Session

from vcenter.db.models import Task, Template, Upload, VirtualMachine
from vcenter.domain.states import TaskState
from vcenter.messaging.results import CaptureResult, ImportResult
from vcenter.services.tasks.events import record_event
from vcenter.services.operations.base import AgentResult, Ending, Operation
from vcenter.services.tasks.tasks import finish_task


def _objects(session: Session, task: Task) -> tuple[VirtualMachine | None, Template | None]:
    """The VM and the template a library task works on (its object, or named in its params)."""
    params = task.params or {}
    vm = session.get(VirtualMachine, task.object_id) if task.object_type == "vm" else session.get(VirtualMachine, params.get("vm_id") or 0)
    template = session.get(Template, task.object_id) if task.object_type == "template" else session.get(Template, params.get("template_id") or 0)
    return vm, template


class LibraryCommand(Operation):
    """A library task whose answer is its result (verify, browse); the base of the others."""

    kinds = ("template.verify", "datastore.browse")

    def on_result(self, session: Session, task: Task, report: AgentResult) -> None:
        vm, template = _objects(session, task)
        if report.domain is not None and vm is not None:
            if vm.power_state != report.domain.power_state:
                vm.power_state = report.domain.power_state
        if report.ok:
            self.done(session, task, vm, template, report)
            return
        ended = TaskState.CANCELLED if report.error_code == "CANCELLED" else TaskState.ERROR
        finish_task(session, task, ended, error_code=report.error_code or "AGENT_ERROR", error_message=report.error_message)
        self.undo(session, task, vm, template)

    def done(self, session: Session, task: Task, vm: VirtualMachine | None, template: Template | None, report: AgentResult) -> None:
        finish_task(session, task, TaskState.SUCCESS, result=report.result, object_name=template.name if template is not None and task.object_type == "template" else None)

    def rollback(self, session: Session, task: Task, ending: Ending) -> None:
        self.undo(session, task, *_objects(session, task))

    def undo(self, session: Session, task: Task, vm: VirtualMachine | None, template: Template | None) -> None:
        """Roll the inventory back after an end without success (whatever ended it)."""


class TemplateFromVm(LibraryCommand):
    kinds = ("template.fromVm",)

    def done(self, session: Session, task: Task, vm: VirtualMachine | None, template: Template | None, report: AgentResult) -> None:
        template.manifest = report.typed(CaptureResult).manifest
        template.state = "ready"
        name = vm.name
        finish_task(session, task, TaskState.SUCCESS, result={"template_id": template.id, **report.result}, object_name=name)
        session.delete(vm)
        record_event(
            session,
            "template.created",
            f"template {template.name} v{template.version} created from VM {name}",
            username=task.username,
            object_type="template",
            object_id=template.id,
            object_name=template.name,
            task_id=task.id,
        )

    def undo(self, session: Session, task: Task, vm: VirtualMachine | None, template: Template | None) -> None:
        if template is not None:
            session.delete(template)


class TemplateToVm(LibraryCommand):
    kinds = ("template.toVm",)

    def done(self, session: Session, task: Task, vm: VirtualMachine | None, template: Template | None, report: AgentResult) -> None:
        vm.status = "ready"
        finish_task(session, task, TaskState.SUCCESS, result={"vm_id": vm.id, **report.result}, object_name=template.name)
        record_event(
            session,
            "template.converted",
            f"template {template.name} v{template.version} converted to VM {vm.name}",
            username=task.username,
            object_type="vm",
            object_id=vm.id,
            object_name=vm.name,
            task_id=task.id,
        )
        session.delete(template)

    def undo(self, session: Session, task: Task, vm: VirtualMachine | None, template: Template | None) -> None:
        if template is not None:
            template.state = "ready"
            if vm is not None and vm.status == "creating":
                session.delete(vm)


class TemplateDelete(LibraryCommand):
    kinds = ("template.delete",)

    def done(self, session: Session, task: Task, vm: VirtualMachine | None, template: Template | None, report: AgentResult) -> None:
        finish_task(session, task, TaskState.SUCCESS, result=report.result, object_name=template.name)
        record_event(
            session,
            "template.deleted",
            f"template {template.name} v{template.version} deleted",
            username=task.username,
            object_type="template",
            object_id=template.id,
            object_name=template.name,
            task_id=task.id,
        )
        session.delete(template)

    def undo(self, session: Session, task: Task, vm: VirtualMachine | None, template: Template | None) -> None:
        if template is not None:
            template.state = "ready"


class Deploy(LibraryCommand):
    """A new VM from a template, a disk image or an OVA."""

    kinds = ("template.deploy", "vm.import", "vm.importOva")

    def done(self, session: Session, task: Task, vm: VirtualMachine | None, template: Template | None, report: AgentResult) -> None:
        vm.status = "ready"
        imported = report.typed(ImportResult) if task.kind == "vm.import" else None
        if imported is not None and imported.capacity_mib:
            vm.disks[0].capacity_mib = imported.capacity_mib  # an imported image's size is known only now
        finish_task(session, task, TaskState.SUCCESS, result={"vm_id": vm.id, **report.result}, object_name=vm.name)
        record_event(
            session,
            "vm.created",
            f"VM {vm.name} {'deployed' if task.kind == 'template.deploy' else 'imported'} on host {report.host.name}",
            username=task.username,
            object_type="vm",
            object_id=vm.id,
            object_name=vm.name,
            task_id=task.id,
        )

    def undo(self, session: Session, task: Task, vm: VirtualMachine | None, template: Template | None) -> None:
        if vm is not None and vm.status == "creating":
            record_event(
                session,
                "vm.create.failed",
                f"VM {vm.name} could not be created: {task.error_code}",
                username=task.username,
                object_type="vm",
                object_id=vm.id,
                object_name=vm.name,
                reason=task.error_code,
                task_id=task.id,
            )
            session.delete(vm)


class Export(LibraryCommand):
    """An OVA of a VM or a template, written to an upload the operator downloads."""

    kinds = ("vm.export", "template.export")

    def undo(self, session: Session, task: Task, vm: VirtualMachine | None, template: Template | None) -> None:
        upload = session.get(Upload, (task.params or {}).get("upload_id") or 0)
        if upload is not None:
            if upload.path and os.path.exists(upload.path):
                os.unlink(upload.path)
            upload.state = "failed"
