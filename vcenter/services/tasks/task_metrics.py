"""Task state transitions as metrics: ``vcenter_tasks_total{kind,state}`` counts every state a
Task row enters, ``vcenter_task_queue_wait_seconds{kind}`` its wait from creation to running.

Read from what each flush writes (the ``state`` attribute's history of every new or changed
Task), not at each place that sets a state: a transition is counted wherever the code makes
it (the task functions, a migration leaving its wait for a slot, the reaper re-queueing), and
only when its transaction commits (vcenter.observability.committed)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session

from vcenter.core.clock import as_utc, utcnow
from vcenter.db.models import Task
from vcenter.domain.states import TaskState
from vcenter.observability import metrics
from vcenter.observability.committed import after_commit


def entered_states(task: Task) -> list[str]:
    """The states ``task`` entered since it was loaded or last flushed (usually none or one)."""
    added = inspect(task).attrs.state.history.added
    return [str(state) for state in added or ()]


def _record(kind: str, state: str, waited: float | None) -> None:
    metrics.task_entered(kind, state)
    if waited is not None:
        metrics.QUEUE_WAIT.labels(kind).observe(max(0.0, waited))


@event.listens_for(Session, "before_flush")
def _count_transitions(session: Session, _context: Any, _instances: Any) -> None:
    for task in [*session.new, *session.dirty]:
        if not isinstance(task, Task):
            continue
        for state in entered_states(task):
            waited = None
            if state == TaskState.RUNNING.value:
                now = utcnow()
                waited = (as_utc(task.started_at or now) - as_utc(task.created_at or now)).total_seconds()
            after_commit(session, lambda kind=task.kind, state=state, waited=waited: _record(kind, state, waited))
