"""Event and task feeds: reading from a point and following as rows arrive, from the database.

Every API replica serves a feed the same way, by polling the database (no replica holds state
another needs): a poll reads the rows past the caller's cursor (vcenter.domain.feed_cursor,
which also awaits ids skipped by transactions that had not committed yet) and keeps those the
caller may see now (the visibility clause is given per poll, so a permission removed stops the
rows at the next one).

- EventFeed: each event once, in the order the polls find them (ascending ids, and an id
  that committed late when it shows up).
- TaskFeed: a task when it first appears and again whenever its state, step or progress
  changes, until it ends; it follows the caller's unfinished tasks (at most
  ``feed_tracked_tasks``, the newest kept).

The feeds do database work only; the API layer runs them off the event loop, authenticates
each poll and writes the server-sent events.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, false, func, or_, select, true
from sqlalchemy.orm import Session

from vcenter.db.models import Event, Task
from vcenter.domain.feed_cursor import Cursor, advance
from vcenter.domain.states import TaskState

UNFINISHED = tuple(state.value for state in TaskState if not state.finished)


def window(model: Any, restrict: Any, after_id: int | None, since: datetime | None) -> Any:
    """``restrict`` (permissions; None: all) narrowed to rows after ``after_id`` and at or
    after ``since`` (tasks by creation, events by time): the WHERE clause of a list read from a
    point."""
    parts = [] if restrict is None else [restrict]
    if after_id is not None:
        parts.append(model.id > after_id)
    if since is not None:
        parts.append((model.created_at if model is Task else model.at) >= since)
    return and_(*parts) if parts else None


def latest_id(session: Session, model: Any) -> int:
    return session.scalar(select(func.max(model.id))) or 0


def read_past(session: Session, model: Any, cursor: Cursor, restrict: Any, batch: int) -> tuple[list[Any], list[int]]:
    """The rows past ``cursor`` (new ids and awaited ones, lowest first, at most ``batch``):
    those the caller may see, and the ids of all read (the cursor advances over rows the
    caller may not see too, else they would look like gaps)."""
    visible = true() if restrict is None else case((restrict, true()), else_=false())
    past = model.id > cursor.last
    if cursor.gaps:
        past = or_(past, model.id.in_(cursor.awaited()))
    rows = session.execute(select(model, visible).where(past).order_by(model.id).limit(batch)).all()
    return [row for row, shown in rows if shown], [row.id for row, _ in rows]


class EventFeed:
    """Each event past the cursor once."""

    def __init__(self, cursor: Cursor, *, grace: float, max_gaps: int, batch: int):
        self.cursor = cursor
        self.grace, self.max_gaps, self.batch = grace, max_gaps, batch

    def poll(self, session: Session, restrict: Any, now: float) -> tuple[list[Event], bool]:
        """New visible events, and whether the batch was full (poll again at once)."""
        rows, seen = read_past(session, Event, self.cursor, restrict, self.batch)
        self.cursor = advance(self.cursor, seen, now, self.grace, self.max_gaps)
        return rows, len(seen) >= self.batch


def fingerprint(task: Task) -> tuple[str, str, int]:
    return (task.state, task.step, task.progress)


class TaskFeed:
    """New tasks past the cursor, and every move of the unfinished ones it follows."""

    def __init__(self, cursor: Cursor, *, grace: float, max_gaps: int, batch: int, max_tracked: int):
        self.cursor = cursor
        self.grace, self.max_gaps, self.batch, self.max_tracked = grace, max_gaps, batch, max_tracked
        self.tracked: dict[int, tuple[str, str, int]] = {}

    def follow_running(self, session: Session, restrict: Any) -> list[Task]:
        """Start following the visible unfinished tasks at or below the cursor (newest first,
        at most ``max_tracked``); answers them, for a caller that wants them as they are."""
        query = select(Task).where(Task.state.in_(UNFINISHED), Task.id <= self.cursor.last)
        if restrict is not None:
            query = query.where(restrict)
        running = list(reversed(session.scalars(query.order_by(Task.id.desc()).limit(self.max_tracked)).all()))
        for task in running:
            self.tracked[task.id] = fingerprint(task)
        return running

    def poll(self, session: Session, restrict: Any, now: float) -> tuple[list[Task], bool]:
        """The tasks to send (moved ones, then new ones), and whether the batch was full."""
        out: list[Task] = []
        if self.tracked:
            query = select(Task).where(Task.id.in_(sorted(self.tracked)))
            if restrict is not None:
                query = query.where(restrict)
            current = {task.id: task for task in session.scalars(query)}
            for task_id in sorted(self.tracked):
                task = current.get(task_id)
                if task is None:  # no longer visible (or deleted): stop following it
                    del self.tracked[task_id]
                    continue
                if fingerprint(task) != self.tracked[task_id]:
                    out.append(task)
                self._track(task)
        rows, seen = read_past(session, Task, self.cursor, restrict, self.batch)
        self.cursor = advance(self.cursor, seen, now, self.grace, self.max_gaps)
        for task in rows:
            out.append(task)
            self._track(task)
        if len(self.tracked) > self.max_tracked:
            for task_id in sorted(self.tracked)[: len(self.tracked) - self.max_tracked]:
                del self.tracked[task_id]
        return out, len(seen) >= self.batch

    def _track(self, task: Task) -> None:
        if TaskState(task.state).finished:
            self.tracked.pop(task.id, None)
        else:
            self.tracked[task.id] = fingerprint(task)
