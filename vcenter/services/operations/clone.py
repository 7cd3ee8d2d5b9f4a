"""Clone (``vm.clone``, started by services.library.clones): what the inventory records when the
agent reports. A saga of two commands on the SOURCE VM: copying on the source's host ->
defining on the target host (``vm.create``, or ``vm.deploy`` writing a customised guest's own
seed) -> the clone is ready; on any failure the clone's row (status ``creating``) goes.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from vcenter.core.settings import get_settings
from vcenter.db.models import Task, VirtualMachine
from vcenter.domain.states import TaskState
from vcenter.messaging.contracts import CreateArgs, DeployArgs
from vcenter.services.inventory.vm_spec import vm_spec
from vcenter.services.operations.base import AgentResult, Ending, Operation, drop_creating
from vcenter.services.tasks.events import record_event
from vcenter.services.tasks.tasks import finish_task, mark_running, send_command


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
