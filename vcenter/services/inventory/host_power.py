"""Host power for DPM and operators: power a host off into standby (after its evacuation, see
services.compute.migration) and back on, through the host's power driver (vcenter.power: IPMI,
Redfish, Wake-on-LAN, the lab's).

Vocabulary: standby = powered off by us, known to come back; a host in standby takes no VMs
(placement's StandbyFilter) and its silence is expected (the host monitor leaves it alone).
Power-on is a Task (``host.exitStandby``) that ends when the host's agent reported again.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from vcenter.core.clock import utcnow
from vcenter.core.errors import Conflict, InvalidState
from vcenter.db.models import Host, Task
from vcenter.domain.states import ConnectionState, TaskState
from vcenter.services.inventory import inventory
from vcenter.services.tasks.events import record_event
from vcenter.services.tasks.tasks import ensure_idle, finish_task, start_task

log = logging.getLogger(__name__)

EXIT_STANDBY = "host.exitStandby"  # the power-on Task's kind


def _driver(host: Host):
    from vcenter.power.drivers import make_driver

    return make_driver(host.power)


def power_off_host(session: Session, task: Task, host: Host, moved: int) -> None:
    """The last step of entering standby: the host is empty; cut its power."""
    from vcenter.power.drivers import PowerError

    try:
        _driver(host).power_off(graceful=False)
    except (PowerError, ValueError) as exc:
        code = getattr(exc, "code", "INVALID_POWER_SETTINGS")
        finish_task(session, task, TaskState.ERROR, error_code=code, error_message=str(exc), object_name=host.name)
        return
    # Connection state stays: a host in standby is a known, connected host that sleeps (as in
    # vCenter); the host monitor leaves its silence alone.
    host.standby = True
    finish_task(session, task, TaskState.SUCCESS, result={"moved": moved, "powered_off": True}, object_name=host.name)
    record_event(
        session,
        "host.standby.entered",
        f"host {host.name} evacuated ({moved} VMs) and powered off: standby",
        username=task.username,
        object_type="host",
        object_id=host.id,
        object_name=host.name,
        task_id=task.id,
    )


def power_on_host(session: Session, user: str, host_id: int, reason: str = "") -> Task:
    from vcenter.power.drivers import PowerError

    host: Host = inventory.get(session, "host", host_id)
    ensure_idle(session, "host", host.id)
    if not host.standby:
        raise InvalidState(f"host {host.name} is not in standby", code="NOT_IN_STANDBY")
    if not host.power:
        raise Conflict(f"host {host.name} has no power settings", code="NO_POWER_DRIVER")
    task = start_task(session, kind=EXIT_STANDBY, object_type="host", object_id=host.id, username=user, params={"reason": reason})
    task.state = TaskState.RUNNING.value
    task.step = "powering-on"
    task.started_at = utcnow()
    try:
        _driver(host).power_on()
    except (PowerError, ValueError) as exc:
        finish_task(session, task, TaskState.ERROR, error_code=getattr(exc, "code", "INVALID_POWER_SETTINGS"), error_message=str(exc), object_name=host.name)
        return task
    task.step = "waiting-for-agent"
    record_event(
        session, "host.powered_on", f"host {host.name} powered on{': ' + reason if reason else ''}", username=user, object_type="host", object_id=host.id, object_name=host.name, task_id=task.id
    )
    return task


def advance_power_on(session: Session) -> None:
    """Every powered-on host whose agent reported again leaves standby."""
    for task in session.scalars(select(Task).where(Task.kind == EXIT_STANDBY, Task.state == TaskState.RUNNING.value)):
        advance_power_on_task(session, task)


def advance_power_on_task(session: Session, task: Task) -> None:
    """A powered-on host leaves standby when its agent reports again."""
    host = session.get(Host, task.object_id)
    reported = host is not None and host.last_report_at is not None and task.started_at is not None and host.last_report_at > task.started_at
    if reported and host.connection_state == ConnectionState.CONNECTED.value:
        host.standby = False
        finish_task(session, task, TaskState.SUCCESS, result={"powered_on": True}, object_name=host.name)
        record_event(session, "host.standby.exited", f"host {host.name} is back from standby", username=task.username, object_type="host", object_id=host.id, object_name=host.name, task_id=task.id)
