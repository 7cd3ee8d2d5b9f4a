"""Count a change when its transaction commits, not when the code makes it: a task
transition made in a transaction that then rolls back (a conflict, a refused request) never
happened, and a counter that counted it would lie.

``after_commit(session, record)`` queues ``record`` on the session with the innermost
transaction open (a savepoint, if any); SQLAlchemy's ``after_commit`` event runs the queue once
the outermost transaction committed. A rollback drops what was queued in the transaction it
rolled back: a savepoint's rollback (``begin_nested`` around a step that may fail) only what
that savepoint queued."""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

log = logging.getLogger(__name__)

_KEY = "vc_metrics_after_commit"


def after_commit(session: Session, record: Callable[[], None]) -> None:
    transaction = session.get_nested_transaction() or session.get_transaction()
    session.info.setdefault(_KEY, []).append((transaction, record))


def _within(transaction: SessionTransaction | None, ended: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is ended:
            return True
        transaction = transaction.parent
    return False


@event.listens_for(Session, "after_commit")
def _run(session: Session) -> None:
    for _transaction, record in session.info.pop(_KEY, ()):
        try:
            record()
        except Exception:  # a metric never breaks the work it counts
            log.exception("recording a metric failed")


@event.listens_for(Session, "after_soft_rollback")
def _drop(session: Session, previous_transaction: SessionTransaction) -> None:
    queued = session.info.get(_KEY)
    if queued:
        session.info[_KEY] = [(t, r) for t, r in queued if not _within(t, previous_transaction)]
