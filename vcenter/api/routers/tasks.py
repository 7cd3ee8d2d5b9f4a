"""Tasks, events and the login session."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status

from vcenter.api.deps import CurrentUser, CurrentUserInfo, DbDep, SettingsDep, TokenDep, public, requires
from vcenter.core.object_ids import ObjectIdPath, Offset
from vcenter.schemas import inventory as s
from vcenter.services.access import auth, users
from vcenter.services.orchestration import cancel
from vcenter.services.tasks import tasks
from vcenter.services.inventory.listing import list_rows

router = APIRouter(prefix="/api/v1")


def _task_object(task: Any) -> tuple[str | None, int | None]:
    from vcenter.services.access.permissions import OBJECT_KINDS

    return (task.object_type, task.object_id) if task.object_type in OBJECT_KINDS and task.object_id else (None, None)


def _visible(db: Any, user: CurrentUserInfo, model: Any) -> Any:
    """Tasks and events of objects the caller may see, and its own."""
    from vcenter.services.access import authz

    return authz.event_visibility_clause(db, users.get_user(db, user.id), model, token=user.token)


@router.get("/tasks", response_model=s.Page[s.TaskRead], tags=["tasks"], summary="List tasks, newest first by default")
def list_tasks(
    request: Request,
    db: DbDep,
    user: Annotated[CurrentUserInfo, requires("System.View", deferred=True)],
    offset: Offset = 0,
    limit: int = Query(50, ge=1, le=500),
    sort: str | None = Query("-id"),
) -> Any:
    filters = {k: v for k, v in request.query_params.items() if k not in {"offset", "limit", "sort"}}  # parsed by column in list_rows
    total, rows = list_rows(
        db,
        tasks.TASK_MODEL,
        filters=filters,
        filterable={"state", "kind", "object_type", "object_id", "host_id", "username"},
        sort=sort,
        sortable={"id", "created_at"},
        offset=offset,
        limit=limit,
        restrict=_visible(db, user, tasks.TASK_MODEL),
    )
    return {"total": total, "offset": offset, "limit": limit, "items": rows}


@router.get("/tasks/{task_id}", response_model=s.TaskRead, tags=["tasks"], summary="Get a task: state, step, progress, result, error code")
def get_task(task_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("System.View", deferred=True)]) -> Any:
    task = tasks.get_task(db, task_id)
    if task.user_id is None or task.user_id != user.id:  # its own by id: a name can be taken again
        user.require(db, *_task_object(task))
    return task


@router.post("/tasks/{task_id}/cancel", response_model=s.TaskRead, status_code=status.HTTP_202_ACCEPTED, tags=["tasks"], summary="Ask a task to stop")
def cancel_task(task_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("Global.CancelTask", deferred=True)]) -> Any:
    task = tasks.get_task(db, task_id)
    if task.user_id is None or task.user_id != user.id:  # one's own task (by id) needs no privilege to cancel
        user.require(db, *_task_object(task))
    return cancel.request_cancel(db, task_id, user.username)


@router.get("/events", response_model=s.Page[s.EventRead], tags=["events"], summary="List events, newest first by default")
def list_events(
    request: Request,
    db: DbDep,
    user: Annotated[CurrentUserInfo, requires("System.View", deferred=True)],
    offset: Offset = 0,
    limit: int = Query(50, ge=1, le=500),
    sort: str | None = Query("-id"),
) -> Any:
    filters = {k: v for k, v in request.query_params.items() if k not in {"offset", "limit", "sort"}}  # parsed by column in list_rows
    total, rows = list_rows(
        db,
        tasks.EVENT_MODEL,
        filters=filters,
        filterable={"kind", "object_type", "object_id", "username", "reason", "task_id"},
        sort=sort,
        sortable={"id", "at"},
        offset=offset,
        limit=limit,
        restrict=_visible(db, user, tasks.EVENT_MODEL),
    )
    return {"total": total, "offset": offset, "limit": limit, "items": rows}


@router.post(
    "/session",
    response_model=s.SessionRead,
    status_code=status.HTTP_201_CREATED,
    tags=["session"],
    summary="Log in: returns a bearer token",
    dependencies=[public("logging in is how a caller gets a session")],
)
def login(body: s.LoginRequest, db: DbDep, settings: SettingsDep) -> Any:
    token, login_session, user = auth.login(db, body.username, body.password, settings)
    return {"token": token, "username": user.username, "expires_at": login_session.expires_at}


@router.delete("/session", status_code=status.HTTP_204_NO_CONTENT, tags=["session"], summary="Log out: the token stops working", dependencies=[public("ends the caller's own session")])
def logout(db: DbDep, token: TokenDep, user: CurrentUser) -> None:
    auth.logout(db, token)
