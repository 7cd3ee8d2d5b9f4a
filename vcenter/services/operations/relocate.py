"""Relocation (``vm.relocate``): disks to other datastores, on the VM's host or with a move to
another host. Started by services.compute.migration.relocate; three shapes share the kind:

- on the VM's host (no ``params.target``): one agent command copies (running VM: block copy
  and pivot) or converts (powered off) the disks;
- a running VM to another host (``params.target``): a VMotion with its moved disks copied,
  queued for migration slots like one, its progress libvirt's job stats;
- a powered-off VM to another host (``params.offline``): the saga of services.compute.relocation
  (copying -> defining -> finishing, discarding on failure), one command per phase, each phase
  started here on the previous one's result.

A cancel while a running VM's disks copy ends the task cancelled with the VM on its old disks.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from vcenter.core.settings import get_settings
from vcenter.db.models import Host, Task, VirtualMachine
from vcenter.domain.states import PowerState, TaskState
from vcenter.messaging.results import RelocateResult
from vcenter.messaging.contracts import OfflineDiscardArgs
from vcenter.services.compute import maintenance_mode, migration, relocation
from vcenter.services.tasks.events import record_event
from vcenter.services.operations.base import AgentResult, Operation, apply_domain
from vcenter.services.tasks.tasks import finish_task, mark_running, send_command

CANCELLED = "the relocation was cancelled; the VM stays on its old host and disks"


def _offline(task: Task) -> bool:
    return bool((task.params or {}).get("offline"))


class Relocate(Operation):
    kinds = ("vm.relocate",)

    def on_result(self, session: Session, task: Task, report: AgentResult) -> None:
        if not _offline(task):
            super().on_result(session, task, report)
            return
        self._advance_offline(session, task, report)
        parent = session.get(Task, task.params["parent"]) if task.params.get("parent") else None
        if parent is not None and TaskState(task.state).finished:
            maintenance_mode.advance_maintenance(session, parent)  # a cold move of a maintenance evacuation

    # --- on the VM's host, or live to another host ---------------------------------------
    def succeeded(self, session: Session, task: Task, vm: VirtualMachine | None, report: AgentResult) -> None:
        if vm is not None:
            if report.domain is not None:
                apply_domain(vm, report.domain)
            self._moved(session, task, vm)
        finish_task(session, task, TaskState.SUCCESS, result=report.result, object_name=vm.name if vm else None)
        migration.dispatch_waiting(session)  # its migration slots are free

    def _moved(self, session: Session, task: Task, vm: VirtualMachine) -> None:
        by_index = {d.index: d for d in vm.disks}
        for move in task.params["moves"]:
            by_index[move["index"]].datastore_id = move["datastore_id"]
            by_index[move["index"]].backing_file = None  # the moved disk is a flattened copy
        if task.params.get("target") is not None:
            # Moved to another host with its disks: it runs there now (libvirt completed).
            vm.host_id = task.params["target"]
            vm.status = "ready"
            vm.power_state = PowerState.POWERED_ON.value
        record_event(
            session,
            "vm.relocated",
            f"VM {vm.name}: {len(task.params['moves'])} disk(s) moved",
            username=task.username,
            object_type="vm",
            object_id=vm.id,
            object_name=vm.name,
            task_id=task.id,
            data={"moves": task.params["moves"]},
        )

    def failed(self, session: Session, task: Task, vm: VirtualMachine | None, report: AgentResult) -> None:
        finish_task(session, task, self.failed_state(report), error_code=report.error_code or "AGENT_ERROR", error_message=report.error_message, object_name=vm.name if vm else None)
        migration.dispatch_waiting(session)  # its migration slots are free
        if vm is not None and report.domain is not None:
            apply_domain(vm, report.domain)

    def failed_state(self, report: AgentResult) -> TaskState:
        # A Storage VMotion cancelled midway ends cancelled (as a VMotion): the VM stays on its old disks.
        return TaskState.CANCELLED if report.error_code == "MIGRATION_CANCELLED" else TaskState.ERROR

    def on_progress(self, task: Task, details: dict[str, Any]) -> None:
        if task.params.get("target") is not None:
            task.result = {"migration": details}

    def defers_cancel(self, task: Task) -> bool:
        """Defining, finishing and discarding of a cold move are short and run to their end
        (a cancel while defining is applied at its result: the new definition and copies are
        discarded); only the copy stops midway."""
        return _offline(task) and task.params.get("phase") in ("defining", "finishing", "discarding")

    # --- a powered-off VM to another host: the saga -------------------------------------
    def _advance_offline(self, session: Session, task: Task, report: AgentResult) -> None:
        params = task.params
        vm = session.get(VirtualMachine, task.object_id)
        phase = params.get("phase")
        target_paths = [p["to"] for p in params["moves"]]  # planned against the target's mounts
        copier_paths = [c["to"] for c in params["copies"]]
        code = report.error_code or "AGENT_ERROR"
        if phase == "discarding":
            self._end_failed(session, task, vm, None if report.ok else f"{report.error_code}: {report.error_message}")
            return
        if not report.ok:
            state = self.failed_state(report)
            if phase == "copying":  # the copier removed its new files itself
                finish_task(session, task, state, error_code=code, error_message=report.error_message, object_name=vm.name)
                migration.dispatch_waiting(session)
            elif phase == "defining":
                self._discard(session, task, vm, params["copier"], copier_paths, False, state, code, f"defining on the target failed: {report.error_message}")
            else:  # finishing: the source could not undefine; the target's definition goes
                self._discard(session, task, vm, params["target"], target_paths, True, state, code, f"undefining on the source failed: {report.error_message}")
            return
        if task.cancel_requested and phase in ("copying", "defining"):
            if phase == "copying":
                self._discard(session, task, vm, params["copier"], copier_paths, False, TaskState.CANCELLED, "MIGRATION_CANCELLED", CANCELLED)
            else:
                self._discard(session, task, vm, params["target"], target_paths, True, TaskState.CANCELLED, "MIGRATION_CANCELLED", CANCELLED)
            return
        if phase == "copying":
            task.params = {**params, "copy": report.result}
            self._next(session, task, "defining", params["target"], relocation.phase_command(session, vm, params, "defining"))
            return
        if phase == "defining":
            self._next(session, task, "finishing", params["source"], relocation.phase_command(session, vm, params, "finishing"))
            return
        self._finished(session, task, vm, report.typed(RelocateResult))

    def _finished(self, session: Session, task: Task, vm: VirtualMachine, result: RelocateResult) -> None:
        """Finishing succeeded: the VM is defined on the target only."""
        params = task.params
        target: Host = session.get(Host, params["target"])
        by_index = {d.index: d for d in vm.disks}
        for move in params["moves"]:
            disk = by_index[move["index"]]
            disk.datastore_id = move["datastore_id"]
            disk.backing_file = None  # the copy is a flattened image
        vm.host_id = target.id
        vm.cluster_id = target.cluster_id
        vm.status = "ready"
        outcome = {"moved": [p["to"] for p in params["moves"]], "removed": result.removed, "not_removed": result.not_removed, "copier": params["copier"], "copy": params.get("copy", {})}
        finish_task(session, task, TaskState.SUCCESS, result=outcome, object_name=vm.name)
        record_event(
            session,
            "vm.relocated",
            f"powered-off VM {vm.name} moved to host {target.name} with {len(params['moves'])} disk(s)",
            username=task.username,
            object_type="vm",
            object_id=vm.id,
            object_name=vm.name,
            task_id=task.id,
            data={"moves": params["moves"]},
        )
        migration.dispatch_waiting(session)

    def _next(self, session: Session, task: Task, phase: str, host_id: int, args: dict[str, Any]) -> None:
        task.host_id = host_id
        task.command_id = None
        task.params = {**task.params, "phase": phase}
        mark_running(session, task, phase, relocation.PHASE_PROGRESS[phase], get_settings())
        send_command(session, task, "vm.relocate", args)

    def _discard(self, session: Session, task: Task, vm: VirtualMachine, host_id: int, paths: list[str], undefine: bool, state: TaskState, code: str, message: str) -> None:
        """Undo what was made on the target side, then end the task as ``state``."""
        task.params = {**task.params, "failure": {"state": state.value, "code": code, "message": message}}
        if not paths and not undefine:
            self._end_failed(session, task, vm)
            return
        self._next(session, task, "discarding", host_id, OfflineDiscardArgs(uuid=vm.libvirt_uuid if undefine else None, paths=paths).args())

    def _end_failed(self, session: Session, task: Task, vm: VirtualMachine, leftover: str | None = None) -> None:
        failure = task.params["failure"]
        message = failure["message"] + (f" (cleanup on the target side failed: {leftover})" if leftover else "")
        finish_task(session, task, TaskState(failure["state"]), error_code=failure["code"], error_message=message, object_name=vm.name)
        migration.dispatch_waiting(session)
