"""Tasks: every long operation is a Task row; Celery only moves commands.

Vocabulary:
- claim: the ObjectClaim row that makes a Task the one active task of its object; a second
  task on the same object gets 409 OBJECT_BUSY (unique key, so it holds across API replicas).
- command: what the Task asks of a host agent, sent through the outbox to ``host.<id>``,
  identified by ``command_id``; a result for another command_id is stale and ignored.
- lease: a running task must hear from its agent before ``lease_expires_at``; the reaper
  re-sends the command of a task whose lease expired (commands are idempotent) up to
  ``task_max_attempts`` times, reconciles it against the reported VM state, or ends it as
  WORKER_LOST.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vcenter.core.clock import utcnow
from vcenter.core.errors import NotFound, ObjectBusy
from vcenter.core.ids import new_uuid
from vcenter.core.settings import Settings
from vcenter.db.models import Event, ObjectClaim, Task
from vcenter.domain.states import TaskState
from vcenter.messaging.contracts import AGENT_EXECUTE_TASK, Command, host_queue
from vcenter.services.tasks import idempotency
from vcenter.services.tasks.events import actor_user_id, record_event
from vcenter.services.tasks.outbox import enqueue

log = logging.getLogger(__name__)

# For generic listing by the API layer, which does not import the database package.
TASK_MODEL = Task
EVENT_MODEL = Event


def ensure_idle(session: Session, object_type: str, object_id: int) -> None:
    """Refuse early, before judging the object's state: while a task runs, the state it
    will leave is unknown, and "busy" is the true answer (vCenter: another task is in
    progress)."""
    existing = session.get(ObjectClaim, (object_type, object_id))
    if existing is not None:
        raise ObjectBusy(f"{object_type} {object_id} is busy with task {existing.task_id}", details={"task_id": existing.task_id})


def claim_object(session: Session, task: Task) -> None:
    """Make ``task`` the one active task of its object, or raise OBJECT_BUSY."""
    existing = session.get(ObjectClaim, (task.object_type, task.object_id))
    if existing is not None:
        raise ObjectBusy(
            f"{task.object_type} {task.object_id} is busy with task {existing.task_id}",
            details={"task_id": existing.task_id},
        )
    try:
        with session.begin_nested():
            session.add(ObjectClaim(object_type=task.object_type, object_id=task.object_id, task_id=task.id))
            session.flush()
    except IntegrityError as exc:  # lost a race with another replica
        raise ObjectBusy(f"{task.object_type} {task.object_id} is busy with another task") from exc


def release_object(session: Session, task: Task) -> None:
    session.execute(delete(ObjectClaim).where(ObjectClaim.task_id == task.id))


def start_task(
    session: Session,
    *,
    kind: str,
    object_type: str,
    object_id: int,
    username: str,
    params: dict[str, Any] | None = None,
    host_id: int | None = None,
    command: str | None = None,
    command_args: dict[str, Any] | None = None,
) -> Task:
    """Create a queued Task, claim its object and (optionally) enqueue its host command."""
    task = Task(
        kind=kind,
        state=TaskState.QUEUED.value,
        step="queued",
        object_type=object_type,
        object_id=object_id,
        username=username,
        # The owner by id: "own task" checks and visibility never compare names.
        user_id=actor_user_id(session, username),
        params=params or {},
        host_id=host_id,
    )
    session.add(task)
    session.flush()
    # Before the claim: a retry racing its first attempt on another replica waits for it on
    # the key and replays its Task, instead of being refused as OBJECT_BUSY by it.
    idempotency.bind(session, task)
    claim_object(session, task)
    if command is not None:
        assert host_id is not None
        send_command(session, task, command, command_args or {})
    return task


def send_command(session: Session, task: Task, name: str, args: dict[str, Any]) -> Command:
    """(Re-)send the task's command; a re-send keeps the command id (idempotency key)."""
    if task.command_id is None:
        task.command_id = new_uuid()
    task.attempts += 1
    task.params = {**task.params, "command": name, "command_args": args}
    command = Command(
        command_id=task.command_id,
        task_id=task.id,
        host_id=task.host_id,
        name=name,
        args=args,
        issued_at=utcnow(),
    )
    enqueue(session, host_queue(task.host_id), AGENT_EXECUTE_TASK, command.model_dump(mode="json"))
    return command


def send_host_command(session: Session, host_id: int, name: str, args: dict[str, Any] | None = None) -> None:
    """A command with no Task (e.g. host.refresh)."""
    command = Command(command_id=new_uuid(), task_id=None, host_id=host_id, name=name, args=args or {}, issued_at=utcnow())
    enqueue(session, host_queue(host_id), AGENT_EXECUTE_TASK, command.model_dump(mode="json"))


def get_task(session: Session, task_id: int) -> Task:
    task = session.get(Task, task_id)
    if task is None:
        raise NotFound(f"task {task_id} not found")
    return task


def mark_running(session: Session, task: Task, step: str, progress: int, settings: Settings) -> None:
    if TaskState(task.state).finished:
        return
    now = utcnow()
    if task.state != TaskState.RUNNING.value:
        task.state = TaskState.RUNNING.value
        task.started_at = task.started_at or now
    task.step = step
    task.progress = max(task.progress, progress)
    task.lease_expires_at = now + timedelta(seconds=settings.task_lease)


def finish_task(
    session: Session,
    task: Task,
    state: TaskState,
    *,
    result: dict[str, Any] | None = None,
    error_code: str | None = None,
    error_message: str | None = None,
    object_name: str | None = None,
) -> None:
    if TaskState(task.state).finished:
        return
    task.state = state.value
    task.step = state.value
    task.finished_at = utcnow()
    task.lease_expires_at = None
    if state == TaskState.SUCCESS:
        task.progress = 100
        task.result = result or {}
    else:
        task.error_code = error_code
        task.error_message = error_message
    release_object(session, task)
    if state == TaskState.SUCCESS:
        message = f"task {task.kind} on {task.object_type} {object_name or task.object_id} succeeded"
    else:
        message = f"task {task.kind} on {task.object_type} {object_name or task.object_id} ended {state.value}: {error_code}: {error_message}"
    record_event(
        session,
        f"task.{state.value}",
        message,
        username=task.username,
        user_id=task.user_id,
        object_type=task.object_type,
        object_id=task.object_id,
        object_name=object_name,
        reason=error_code,
        task_id=task.id,
    )


def expired_leases(session: Session) -> list[Task]:
    now = utcnow()
    return list(session.scalars(select(Task).where(Task.state == TaskState.RUNNING.value, Task.lease_expires_at < now).with_for_update(skip_locked=True)))


def stale_queued(session: Session, older_than: float) -> list[Task]:
    cutoff = utcnow() - timedelta(seconds=older_than)
    return list(session.scalars(select(Task).where(Task.state == TaskState.QUEUED.value, Task.created_at < cutoff).with_for_update(skip_locked=True)))


def iter_events(session: Session, since=None, batch: int = 1000):
    """Every event in order (for the JSON-lines export), read in batches."""
    last = 0
    while True:
        query = select(Event).where(Event.id > last).order_by(Event.id).limit(batch)
        if since is not None:
            query = query.where(Event.at >= since)
        rows = list(session.scalars(query))
        if not rows:
            return
        yield from rows
        last = rows[-1].id
