"""Events: the append-only record of every change — who, what, when, which object, why."""
from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from vcenter.core.audit import request_source
from vcenter.db.models import Event


def record_event(
    session: Session,
    kind: str,
    message: str,
    *,
    username: str = "system",
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
