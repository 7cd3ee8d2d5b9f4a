"""VMotion (``vm.migrate``, started by services.compute.migration.migrate): the source host's agent
live-migrates the running VM; its progress carries libvirt's job stats. The inventory changes
host only on the agent's success; a cancel (libvirt's job aborted) leaves the VM on the source.
Every end frees migration slots (the waiting migrations are dispatched), and a child VMotion of
a maintenance evacuation lets its parent see the end.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from vcenter.db.models import Host, Task, VirtualMachine
from vcenter.domain.states import PowerState, TaskState
from vcenter.messaging.results import MigrateResult
from vcenter.observability.committed import after_commit
from vcenter.observability.metrics import MIGRATION_DOWNTIME
from vcenter.services.compute import maintenance_mode, migration
from vcenter.services.tasks.events import record_event
from vcenter.services.operations.base import AgentResult, Operation
from vcenter.services.tasks.tasks import finish_task


class Migrate(Operation):
    kinds = ("vm.migrate",)

    def on_result(self, session: Session, task: Task, report: AgentResult) -> None:
        vm = session.get(VirtualMachine, task.object_id)
        target = session.get(Host, task.params["target"])
        if report.ok:
            vm.host_id = target.id
            vm.status = "ready"
            vm.power_state = PowerState.POWERED_ON.value
            migrated = report.typed(MigrateResult).stats
            stats = migrated.result() if migrated is not None else {}
            finish_task(session, task, TaskState.SUCCESS, result={"migration": stats}, object_name=vm.name)
            if migrated is not None and migrated.downtime_ms is not None:
                downtime = migrated.downtime_ms / 1000.0
                after_commit(session, lambda: MIGRATION_DOWNTIME.observe(downtime))
            record_event(
                session,
                "vm.migrated",
                f"VM {vm.name} moved to host {target.name} (downtime {migrated.downtime_ms if migrated is not None else None} ms)",
                username=task.username,
                object_type="vm",
                object_id=vm.id,
                object_name=vm.name,
                task_id=task.id,
                data={"stats": stats},
            )
        else:
            state = TaskState.CANCELLED if report.error_code == "MIGRATION_CANCELLED" else TaskState.ERROR
            finish_task(session, task, state, error_code=report.error_code, error_message=report.error_message, object_name=vm.name)
        migration.dispatch_waiting(session)
        parent = session.get(Task, task.params.get("parent")) if task.params.get("parent") else None
        if parent is not None:
            maintenance_mode.advance_maintenance(session, parent)

    def on_progress(self, task: Task, details: dict[str, Any]) -> None:
        task.result = {"migration": details}

    def reconciled(self, session: Session, task: Task) -> bool:
        """A migration whose agent went silent is done when the VM is known on the target."""
        vm = session.get(VirtualMachine, task.object_id)
        return vm is not None and vm.host_id == task.params.get("target")

    def after_reconciled(self, session: Session, task: Task) -> None:
        migration.dispatch_waiting(session)  # its migration slots are free
