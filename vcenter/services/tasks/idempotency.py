"""Operations' ``Idempotency-Key``: a client that retries an operation (its replica died before
it answered, a timeout) with the same key gets the Task the first request started, not a
second Task.

What this decides:

- the same operation: the same user sends the same key within ``idempotency_retention``
  seconds, and the request's fingerprint (method, path, body) is the one the key was first
  used with; it answers with the first request's Task (``IdempotentReplay``, which the API turns
  into the same 202). The same key with another fingerprint is a client error, 422
  ``IDEMPOTENCY_KEY_REUSED``; an expired key starts a new operation.
- when a key is bound: to the first Task the request starts (``start_task`` calls ``bind``),
  in the request's own transaction and before the Task claims its object, under a unique
  (user, key) constraint. Two replicas racing on one key: the second insert waits on the
  unique index until the first transaction ends; then it fails and replays the first's Task
  (or, had the first rolled back, succeeds and starts the operation).
- a key is looked up twice: where the request authenticates (``replay_for``, before the route
  judges the object's state, so that a retry of a running operation is not refused as
  OBJECT_BUSY by its own first attempt) and at ``bind`` (the race above).

The request's key travels in a context variable set by the API route (vcenter.api.v1) around
the operations that answer a Task; outside them nothing here runs.
"""

from __future__ import annotations

import hashlib
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vcenter.core.clock import utcnow
from vcenter.core.errors import Invalid
from vcenter.core.settings import Settings
from vcenter.db.models import IdempotencyKey, Task

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 200


class IdempotentReplay(Exception):
    """The request repeats an earlier one: answer with ``task_id``, start nothing."""

    def __init__(self, task_id: int):
        super().__init__(f"replay of task {task_id}")
        self.task_id = task_id


@dataclass
class Pending:
    """The key of the request being served and whether a Task of it carries the key yet."""

    key: str
    fingerprint: str
    retention: float  # setting idempotency_retention (s)
    bound: bool = False


_pending: ContextVar[Pending | None] = ContextVar("idempotency_pending", default=None)


def valid_key(key: str) -> bool:
    """A key is 1 to MAX_KEY_LENGTH visible ASCII characters (a UUID is the usual one)."""
    return 0 < len(key) <= MAX_KEY_LENGTH and all("!" <= c <= "~" for c in key)


def fingerprint(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(b"\0".join((method.upper().encode(), path.encode(), body))).hexdigest()


def begin(key: str, request_fingerprint: str, settings: Settings) -> Token:
    """The API route: this request carries ``key`` (refused with 422 when it is malformed)."""
    if not valid_key(key):
        raise Invalid(f"{HEADER} must be 1 to {MAX_KEY_LENGTH} visible ASCII characters", code="INVALID_IDEMPOTENCY_KEY")
    return _pending.set(Pending(key, request_fingerprint, settings.idempotency_retention))


def active() -> bool:
    """Whether the request being served carries a key."""
    return _pending.get() is not None


def end(token: Token) -> None:
    _pending.reset(token)


def _earlier(session: Session, user_id: int, pending: Pending) -> IdempotencyKey | None:
    since = utcnow() - timedelta(seconds=pending.retention)
    return session.scalar(select(IdempotencyKey).where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == pending.key, IdempotencyKey.created_at >= since))


def _judge(row: IdempotencyKey, pending: Pending) -> IdempotentReplay:
    if row.fingerprint != pending.fingerprint:
        raise Invalid(
            f"{HEADER} {pending.key!r} was used for another request (another operation, object or body); use a new key for a new operation",
            code="IDEMPOTENCY_KEY_REUSED",
            details={"task_id": row.task_id},
        )
    return IdempotentReplay(row.task_id)


def replay_for(session: Session, user_id: int) -> None:
    """Where the request authenticates: raise IdempotentReplay (or 422) when this user's key
    already started an operation; nothing without a key."""
    pending = _pending.get()
    if pending is None:
        return
    row = _earlier(session, user_id, pending)
    if row is not None:
        raise _judge(row, pending)


def bind(session: Session, task: Task) -> None:
    """Make ``task`` (just flushed, not yet claiming its object) the request's key's Task; a
    key another transaction bound first replays that one's Task."""
    pending = _pending.get()
    if pending is None or pending.bound or task.user_id is None:
        return
    pending.bound = True  # the request's later Tasks (an operation with several) are its own
    # An expired row of this key gives way to the new operation.
    cutoff = utcnow() - timedelta(seconds=pending.retention)
    session.execute(delete(IdempotencyKey).where(IdempotencyKey.user_id == task.user_id, IdempotencyKey.key == pending.key, IdempotencyKey.created_at < cutoff))
    try:
        with session.begin_nested():
            session.add(IdempotencyKey(user_id=task.user_id, key=pending.key, fingerprint=pending.fingerprint, task_id=task.id))
            session.flush()
    except IntegrityError:
        row = _earlier(session, task.user_id, pending)
        if row is None:  # bound and expired within this instant: nothing sensible to replay
            raise Invalid(f"{HEADER} {pending.key!r} is in use; retry", code="IDEMPOTENCY_KEY_REUSED") from None
        raise _judge(row, pending) from None


def purge(session: Session, settings: Settings) -> int:
    """Retention: keys older than ``idempotency_retention`` go (the reaper's pass)."""
    cutoff = utcnow() - timedelta(seconds=settings.idempotency_retention)
    return session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < cutoff)).rowcount or 0
