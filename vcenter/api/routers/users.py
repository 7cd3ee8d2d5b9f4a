"""Users (administrators only until roles and permissions arrive) and the audit log export."""
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, status
from fastapi.responses import StreamingResponse

from vcenter.api.deps import CurrentUser, DbDep, RuntimeDep
from vcenter.core.errors import Forbidden
from vcenter.schemas import inventory as s
from vcenter.services import auth, tasks

router = APIRouter(prefix="/api/v1", tags=["users"])


def _admin(user) -> None:
    if not user.is_admin:
        raise Forbidden("administrators only", code="FORBIDDEN")


@router.get("/users", response_model=list[s.UserRead], summary="List users")
def list_users(db: DbDep, user: CurrentUser) -> Any:
    _admin(user)
    return auth.list_users(db)


@router.post("/users", response_model=s.UserRead, status_code=status.HTTP_201_CREATED, summary="Create a user")
def create_user(body: s.UserCreate, db: DbDep, user: CurrentUser) -> Any:
    _admin(user)
    return auth.create_user(db, body.username, body.password, body.is_admin, by=user.username)


@router.patch("/users/{user_id}", response_model=s.UserRead, summary="Change a user's password (revokes its sessions), administrator flag, or disable it; the last administrator stays")
def update_user(user_id: int, body: s.UserUpdate, db: DbDep, user: CurrentUser) -> Any:
    _admin(user)
    return auth.update_user(db, user.username, user_id, body.model_dump(exclude_unset=True))


@router.delete("/users/{user_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a user (never the last administrator)")
def delete_user(user_id: int, db: DbDep, user: CurrentUser) -> None:
    _admin(user)
    auth.delete_user(db, user.username, user_id)


@router.get("/events/export", tags=["events"], summary="The audit log as JSON lines (append-only: no route changes or deletes events)")
def export_events(runtime: RuntimeDep, user: CurrentUser, since: datetime | None = Query(None)) -> StreamingResponse:
    _admin(user)

    def lines() -> Iterator[str]:
        with runtime.transaction() as session:
            for event in tasks.iter_events(session, since):
                yield json.dumps(s.EventRead.model_validate(event).model_dump(mode="json")) + "\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")
