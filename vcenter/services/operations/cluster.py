"""Cluster operations: EVC (``cluster.evc``, started by services.compute.evc.enable): one of the
cluster's agents computes the CPU baseline of the chosen hosts; on success the cluster takes
it as its EVC mode (services.compute.evc.apply_baseline), on failure nothing changes.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from vcenter.db.models import Task, VirtualMachine
from vcenter.domain.states import TaskState
from vcenter.messaging.results import CpuBaselineResult
from vcenter.services.compute import evc
from vcenter.services.operations.base import AgentResult, Operation
from vcenter.services.tasks.tasks import finish_task


class EnableEvc(Operation):
    kinds = ("cluster.evc",)

    def succeeded(self, session: Session, task: Task, vm: VirtualMachine | None, report: AgentResult) -> None:
        evc.apply_baseline(session, task, report.typed(CpuBaselineResult))
        finish_task(session, task, TaskState.SUCCESS, result=report.result)
