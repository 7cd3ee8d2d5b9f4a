"""Periodic housekeeping run by the orchestrator: the task reaper and the host monitor.

Reaper vocabulary (docs/architecture.md): a running task whose lease expired lost its agent or
worker. It is reconciled when the VM already shows the state the task aimed at; otherwise its
command (idempotent, same command id) is re-sent while attempts remain; otherwise it ends as
WORKER_LOST. A queued task no agent picked up within ``task_queue_timeout`` ends as
AGENT_UNREACHABLE (the agent refuses that command if it arrives later: it has expired).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from vcenter.core.clock import utcnow
from vcenter.core.settings import Settings
from vcenter.db.models import Event, Host, Task
from vcenter.domain.states import TaskState
from vcenter.services.compute import migration
from vcenter.services.access import refusals
from vcenter.services.tasks.events import record_event
from vcenter.services.operations import REGISTRY, Ending, operation_for
from vcenter.services.orchestration.reports import mark_host_heartbeat
from vcenter.services.tasks.tasks import expired_leases, finish_task, send_command, stale_queued

log = logging.getLogger(__name__)


def reap(session: Session, settings: Settings) -> dict[str, int]:
    counts = {"reconciled": 0, "resent": 0, "lost": 0, "unreachable": 0}
    for task in expired_leases(session):
        operation = operation_for(task.kind)
        if operation.reconciled(session, task):
            finish_task(session, task, TaskState.SUCCESS, result={"reconciled": True})
            counts["reconciled"] += 1
            operation.after_reconciled(session, task)
        elif task.attempts < settings.task_max_attempts and task.params.get("command"):
            task.state = TaskState.QUEUED.value
            task.step = "resent"
            task.lease_expires_at = None
            send_command(session, task, task.params["command"], task.params.get("command_args", {}))
            record_event(
                session,
                "task.resent",
                f"task {task.id} ({task.kind}) lost its agent; command re-sent (attempt {task.attempts})",
                object_type=task.object_type,
                object_id=task.object_id,
                task_id=task.id,
                reason="LEASE_EXPIRED",
            )
            counts["resent"] += 1
        else:
            finish_task(session, task, TaskState.ERROR, error_code="WORKER_LOST", error_message="the worker running this task died and the task could not be resumed")
            operation.rollback(session, task, Ending.LOST)
            counts["lost"] += 1
    for task in stale_queued(session, settings.task_queue_timeout):
        if task.command_id is None:
            continue  # never sent: waiting for a slot (its own saga decides), not lost
        operation = operation_for(task.kind)
        if operation.reconciled(session, task):
            finish_task(session, task, TaskState.SUCCESS, result={"reconciled": True})
            counts["reconciled"] += 1
            continue
        finish_task(session, task, TaskState.ERROR, error_code="AGENT_UNREACHABLE", error_message=f"no agent picked the command up within {settings.task_queue_timeout:.0f} s")
        operation.rollback(session, task, Ending.UNREACHABLE)
        counts["unreachable"] += 1
    return counts


def monitor_hosts(session: Session, is_alive: Callable[[int], bool]) -> None:
    for host in session.scalars(select(Host)):
        mark_host_heartbeat(session, host, is_alive(host.id))


def advance_sagas(session: Session) -> None:
    """The orchestrator's periodic pass: dispatch the migrations waiting for slots, then let
    every running task whose operation waits on this pass advance (evacuations finish when
    their children did, power-ons when the host reported)."""
    migration.dispatch_waiting(session)
    kinds = [kind for kind, operation in REGISTRY.items() if operation.advances]
    for task in session.scalars(select(Task).where(Task.kind.in_(kinds), Task.state == TaskState.RUNNING.value).order_by(Task.id)):
        operation_for(task.kind).advance(session, task)


def purge_events(session: Session, settings: Settings) -> int:
    """Retention of the audit log: events older than ``events_retention_days`` go."""
    cutoff = utcnow() - timedelta(days=settings.events_retention_days)
    return session.execute(delete(Event).where(Event.at < cutoff)).rowcount or 0


def purge_refusals(session: Session, settings: Settings) -> int:
    """The refused-credential counts are audit log too: same retention as the events."""
    return refusals.purge(session, utcnow() - timedelta(days=settings.events_retention_days))
