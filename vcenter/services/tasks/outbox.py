"""The outbox: commands are written in the same transaction as their Task and sent to Celery
only after that transaction committed, so an enqueue is never lost and never precedes its row.

``relay`` claims each unsent row with a conditional UPDATE (sent_at IS NULL), sends it, and
un-claims it when the broker refused; several relays may run at once (API replicas, the
periodic orchestrator job) without sending a row twice in the normal case. A row sent twice
after a crash is harmless: commands are idempotent by ``command_id``.

Commands to host agents are stored plain and signed when they are sent (``signer``): their
expiry counts from the moment they reach the broker, not from the commit, so a broker outage
does not make them stale before they are sent.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from vcenter.core.clock import utcnow
from vcenter.db.models import OutboxMessage
from vcenter.messaging.contracts import AGENT_EXECUTE_TASK

log = logging.getLogger(__name__)


class Publisher(Protocol):
    def send_task(self, name: str, args: list[Any], queue: str) -> Any: ...


def enqueue(session: Session, queue: str, task_name: str, payload: dict[str, Any]) -> OutboxMessage:
    message = OutboxMessage(queue=queue, task_name=task_name, payload=payload)
    session.add(message)
    session.info["outbox_dirty"] = True
    return message


class Signer(Protocol):
    def seal(self, command: dict[str, Any]) -> dict[str, Any]: ...


def relay(factory: sessionmaker[Session], publisher: Publisher, limit: int = 100, signer: Signer | None = None) -> int:
    """Send unsent outbox rows; return how many were sent. Agent commands are sealed with
    ``signer`` (agents refuse unsigned ones)."""
    with factory() as session:
        ids = session.scalars(select(OutboxMessage.id).where(OutboxMessage.sent_at.is_(None)).order_by(OutboxMessage.id).limit(limit)).all()
    sent = 0
    for message_id in ids:
        with factory() as session:
            claimed = session.execute(
                update(OutboxMessage).where(OutboxMessage.id == message_id, OutboxMessage.sent_at.is_(None)).values(sent_at=utcnow(), send_attempts=OutboxMessage.send_attempts + 1)
            ).rowcount
            session.commit()
            if not claimed:
                continue
            message = session.get(OutboxMessage, message_id)
            try:
                payload = message.payload
                if signer is not None and message.task_name == AGENT_EXECUTE_TASK:
                    payload = signer.seal(payload)
                publisher.send_task(message.task_name, args=[payload], queue=message.queue)
                sent += 1
            except Exception:  # the broker is down: leave the row for the next relay
                log.exception("outbox: sending message %s to %s failed; will retry", message_id, message.queue)
                session.execute(update(OutboxMessage).where(OutboxMessage.id == message_id).values(sent_at=None))
                session.commit()
                break
    return sent
