"""Host operations that wait on the orchestrator's periodic pass, not on an agent's result:

- evacuation (``host.enterMaintenance``, ``host.enterStandby``; started by
  services.compute.maintenance_mode.enter_maintenance): its children (VMotions, cold moves) end one by one;
  the host enters maintenance, or is powered off into standby, when all succeeded and nothing
  runs there any more (services.compute.maintenance_mode.advance_maintenance);
- power-on out of standby (``host.exitStandby``; services.inventory.host_power.power_on_host): ends when the
  host's agent reported again (services.inventory.host_power.advance_power_on_task).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from vcenter.db.models import Task
from vcenter.services.compute import maintenance_mode
from vcenter.services.inventory import host_power
from vcenter.services.operations.base import Operation


class Evacuate(Operation):
    kinds = ("host.enterMaintenance", "host.enterStandby")
    advances = True

    def advance(self, session: Session, task: Task) -> None:
        maintenance_mode.advance_maintenance(session, task)


class ExitStandby(Operation):
    kinds = (host_power.EXIT_STANDBY,)
    advances = True

    def advance(self, session: Session, task: Task) -> None:
        host_power.advance_power_on_task(session, task)
