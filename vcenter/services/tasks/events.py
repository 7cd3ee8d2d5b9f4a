"""Events: the append-only record of every change — who, what, when, which object, why.

Who: an event names its actor twice. ``username`` is for people (a user's name at the time, or
one of the system's own actors, SYSTEM_ACTORS); ``user_id`` is what visibility and ownership
are decided on (vcenter.services.access.authz), never the name, which a later user could take. The
id comes, in this order, from: the caller; the authenticated actor of the request
(``bind_actor``, set by the API where it authenticates) when the name is that actor's; the
task the event is about, when the name is its owner's; None for a system actor; else the user
who holds that name now (names are unique, so at the moment of writing this is that user).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vcenter.core.audit import request_source
from vcenter.db.models import Event, Task, User

# The names the code acts under itself (record_event/start_task callers: the default, the CLI,
# HA, DRS, DPM, scheduled backups) and a few an operator would read the same way. No user may
# take one (vcenter.services.access.auth.create_user), so a name here never means a person.
SYSTEM_ACTORS: frozenset[str] = frozenset(
    {
        "system",
        "cli",
        "ha",
        "drs",
        "dpm",
        "scheduler",
        "reaper",
        "beat",
        "agent",
        "monitor",
        "alarms",
        "anonymous",
        "root",
    }
)

_UNSET: Any = object()

# (user id, user name) of the request's authenticated caller; None outside a request.
current_actor: ContextVar[tuple[int, str] | None] = ContextVar("current_actor", default=None)


def bind_actor(user_id: int, username: str) -> None:
    """Called where a request authenticates: later events and tasks named after this user in
    the same request carry its id."""
    current_actor.set((user_id, username))


def is_system_actor(username: str) -> bool:
    return username.casefold() in SYSTEM_ACTORS


def actor_user_id(session: Session, username: str, task_id: int | None = None) -> int | None:
    """The id of the user acting as ``username`` (None for the system's own actors)."""
    actor = current_actor.get()
    if actor is not None and actor[1] == username:
        return actor[0]
    if task_id is not None:
        task = session.get(Task, task_id)
        if task is not None and task.username == username:
            return task.user_id  # the task's owner, even if that name changed hands since
    if is_system_actor(username):
        return None
    with session.no_autoflush:
        return session.scalar(select(User.id).where(User.username == username))


def record_event(
    session: Session,
    kind: str,
    message: str,
    *,
    username: str = "system",
    user_id: int | None = _UNSET,
    object_type: str | None = None,
    object_id: int | None = None,
    object_name: str | None = None,
    reason: str | None = None,
    task_id: int | None = None,
    data: dict[str, Any] | None = None,
) -> Event:
    event = Event(
        kind=kind,
        message=message,
        username=username,
        user_id=actor_user_id(session, username, task_id) if user_id is _UNSET else user_id,
        object_type=object_type,
        object_id=object_id,
        object_name=object_name,
        reason=reason,
        task_id=task_id,
        data=data or {},
        source=request_source.get(),
    )
    session.add(event)
    return event
