"""Users (Users.Modify) and the audit log export (Global.Diagnostics).

Users.Modify alone never leads further: changing or deleting a user needs the caller to hold
everything that user holds (vcenter.services.access.delegation); only an administrator makes or
touches administrators."""

import json
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import Query, status
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime

from vcenter.api import v1
from vcenter.api.deps import CurrentUserInfo, DbDep, RuntimeDep, SettingsDep, requires
from vcenter.core.errors import Invalid
from vcenter.core.object_ids import ObjectIdPath
from vcenter.schemas import inventory as s
from vcenter.services.access import auth
from vcenter.services.tasks import tasks
from vcenter.services.access.delegation import Actor

router = v1.router(prefix="/api/v1", tags=["users"])


UserAdmin = Annotated[CurrentUserInfo, requires("Users.Modify")]


@router.get("/users", response_model=list[s.UserRead], summary="List users")
def list_users(db: DbDep, user: UserAdmin) -> Any:
    return auth.list_users(db)


@router.post("/users", response_model=s.UserRead, status_code=status.HTTP_201_CREATED, summary="Create a user")
def create_user(body: s.UserCreate, db: DbDep, settings: SettingsDep, user: UserAdmin) -> Any:
    if body.is_admin:
        Actor.of(db, user.id, user.token).require_administrator(f"user {body.username}: an administrator")
    return auth.create_user(db, body.username, body.password, body.is_admin, by=user.username, min_password_length=settings.password_min_length)


@router.patch(
    "/users/{user_id}",
    response_model=s.UserRead,
    summary="Change a user's password (revokes its sessions), administrator flag, or disable it; the caller must hold everything the user holds; the last administrator stays",
)
def update_user(user_id: ObjectIdPath, body: s.UserUpdate, db: DbDep, settings: SettingsDep, user: UserAdmin) -> Any:
    return auth.update_user(db, Actor.of(db, user.id, user.token), user_id, body.model_dump(exclude_unset=True), min_password_length=settings.password_min_length)


@router.delete(
    "/users/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a user with its permissions, group memberships, tokens and sessions (never the last administrator; the caller must hold everything the user holds)",
)
def delete_user(user_id: ObjectIdPath, db: DbDep, user: UserAdmin) -> None:
    auth.delete_user(db, Actor.of(db, user.id, user.token), user_id)


def since_utc(since: datetime | None) -> datetime | None:
    """The instant in UTC, as the database compares it; 422 for one beyond datetime's range
    once in UTC (0001-01-01T00:00+01:00)."""
    if since is None:
        return None
    try:
        return since.astimezone(timezone.utc)
    except OverflowError:
        raise Invalid("since: out of range once converted to UTC", code="INVALID", details={"field": "since"}) from None


@router.get(
    "/events/export",
    tags=["events"],
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {"schema": {"type": "string"}}}, "description": "one JSON event per line"}},
    summary="The audit log as JSON lines (append-only: no route changes or deletes events)",
)
def export_events(
    runtime: RuntimeDep,
    user: Annotated[CurrentUserInfo, requires("Global.Diagnostics")],
    since: AwareDatetime | None = Query(None, description="only events at or after this instant, with its time zone (e.g. 2026-01-01T00:00:00Z)"),
) -> StreamingResponse:
    # Everything that can refuse the request happens here, before the stream starts: an error
    # after the status line would end a 200 with an empty body. A time without a zone is a 422
    # (AwareDatetime) rather than a guess that could silently leave events out of an audit.
    after = since_utc(since)

    def lines() -> Iterator[str]:
        with runtime.transaction() as session:
            for event in tasks.iter_events(session, after):
                yield json.dumps(s.EventRead.model_validate(event).model_dump(mode="json")) + "\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")
