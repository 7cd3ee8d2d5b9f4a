"""Users (Users.Modify) and the audit log export (Global.Diagnostics)."""
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from fastapi.responses import StreamingResponse

from vcenter.api.deps import CurrentUserInfo, DbDep, RuntimeDep, requires
from vcenter.core.errors import Forbidden
from vcenter.core.object_ids import ObjectIdPath
from vcenter.schemas import inventory as s
from vcenter.services import auth, tasks

router = APIRouter(prefix="/api/v1", tags=["users"])


UserAdmin = Annotated[CurrentUserInfo, requires("Users.Modify")]


def _only_admins_make_admins(user: CurrentUserInfo, touches_admin_flag: bool) -> None:
    # Users.Modify alone must not be a path to every privilege.
    if touches_admin_flag and not user.is_admin:
        raise Forbidden("only an administrator grants or takes the administrator flag", code="FORBIDDEN")


@router.get("/users", response_model=list[s.UserRead], summary="List users")
def list_users(db: DbDep, user: UserAdmin) -> Any:
    return auth.list_users(db)


@router.post("/users", response_model=s.UserRead, status_code=status.HTTP_201_CREATED, summary="Create a user")
def create_user(body: s.UserCreate, db: DbDep, user: UserAdmin) -> Any:
    _only_admins_make_admins(user, body.is_admin)
    return auth.create_user(db, body.username, body.password, body.is_admin, by=user.username)


@router.patch("/users/{user_id}", response_model=s.UserRead, summary="Change a user's password (revokes its sessions), administrator flag, or disable it; the last administrator stays")
def update_user(user_id: ObjectIdPath, body: s.UserUpdate, db: DbDep, user: UserAdmin) -> Any:
    _only_admins_make_admins(user, body.is_admin is not None)
    return auth.update_user(db, user.username, user_id, body.model_dump(exclude_unset=True))


@router.delete("/users/{user_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a user (never the last administrator)")
def delete_user(user_id: ObjectIdPath, db: DbDep, user: UserAdmin) -> None:
    auth.delete_user(db, user.username, user_id)


@router.get("/events/export", tags=["events"], response_class=StreamingResponse,
            responses={200: {"content": {"application/x-ndjson": {"schema": {"type": "string"}}}, "description": "one JSON event per line"}}, summary="The audit log as JSON lines (append-only: no route changes or deletes events)")
def export_events(runtime: RuntimeDep, user: Annotated[CurrentUserInfo, requires("Global.Diagnostics")], since: datetime | None = Query(None)) -> StreamingResponse:

    def lines() -> Iterator[str]:
        with runtime.transaction() as session:
            for event in tasks.iter_events(session, since):
                yield json.dumps(s.EventRead.model_validate(event).model_dump(mode="json")) + "\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")
