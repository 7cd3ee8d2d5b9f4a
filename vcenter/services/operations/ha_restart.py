"""HA's operations: a VM restarted on another host (``vm.ha_restart``) and a VM-monitoring
reset (``vm.ha_reset``), both started by the HA monitor through services.ha. Their results
stay HA's: this adapter hands the agent's report to ``services.ha.ha.on_result`` (its retry
schedule and give-up decisions live there, fenced by the monitor's token).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from vcenter.db.models import Task
from vcenter.services.ha import ha
from vcenter.services.operations.base import AgentResult, Operation


class HaRestart(Operation):
    kinds = (ha.RESTART_KIND, ha.RESET_KIND)

    def on_result(self, session: Session, task: Task, report: AgentResult) -> None:
        ha.on_result(session, task, report.ok, report.error_code, report.error_message)
