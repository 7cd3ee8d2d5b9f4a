"""A user's cancel of a Task. A queued Task ends cancelled at once and its operation rolls back
what was made for its outcome (a VM being deployed, ...); a running one is flagged, and its
agent (or its operation, for a step that must finish first) ends it. Stands on both the task
store (services.tasks.tasks) and the operations (services.operations), which stand on the task store."""

from __future__ import annotations

from sqlalchemy.orm import Session

from vcenter.core.errors import InvalidState
from vcenter.db.models import Task
from vcenter.domain.states import TaskState
from vcenter.services.operations import Ending, operation_for
from vcenter.services.tasks.tasks import finish_task, get_task


def request_cancel(session: Session, task_id: int, username: str) -> Task:
    task = get_task(session, task_id)
    if TaskState(task.state).finished:
        raise InvalidState(f"task {task_id} already ended {task.state}", code="TASK_FINISHED")
    task.cancel_requested = True
    if task.state == TaskState.QUEUED.value:
        # The agent refuses a command whose task is cancelled when it reports running.
        finish_task(session, task, TaskState.CANCELLED, error_code="CANCELLED", error_message=f"cancelled by {username}")
        operation_for(task.kind).rollback(session, task, Ending.CANCELLED)
    return task
