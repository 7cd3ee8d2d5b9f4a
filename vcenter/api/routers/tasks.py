"""Tasks, events and the login session."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import Depends, Query, Request, status
from pydantic import AwareDatetime
from starlette.concurrency import run_in_threadpool

from vcenter.api import v1
from vcenter.api.errors import declare
from vcenter.api.filters import list_filters
from vcenter.api.deps import CurrentUser, CurrentUserInfo, DbDep, SettingsDep, TokenDep, public, requires
from vcenter.api.routers.users import since_utc
from vcenter.core.errors import Invalid
from vcenter.core.object_ids import ObjectIdPath, Offset, OptionalObjectIdQuery
from vcenter.domain.states import TaskState
from vcenter.schemas import inventory as s
from vcenter.services.access import auth, users
from vcenter.services.orchestration import cancel
from vcenter.services.tasks import feeds, tasks
from vcenter.services.inventory.listing import list_rows

router = v1.router(prefix="/api/v1")


def _task_object(task: Any) -> tuple[str | None, int | None]:
    from vcenter.services.access.permissions import OBJECT_KINDS

    return (task.object_type, task.object_id) if task.object_type in OBJECT_KINDS and task.object_id else (None, None)


def _visible(db: Any, user: CurrentUserInfo, model: Any) -> Any:
    """Tasks and events of objects the caller may see, and its own."""
    from vcenter.services.access import authz

    return authz.event_visibility_clause(db, users.get_user(db, user.id), model, token=user.token)


# Reading from a point (a program catching up, then following /tasks/stream or /events/stream).
_AFTER_ID = "only rows with a higher id (ascending by default): the id of the last row already read"
_SINCE = "only rows at or after this instant, with its time zone (e.g. 2026-01-01T00:00:00Z); a time without one is a 422"
_SORT = "field or -field; default -id (newest first), or id when reading from a point (after_id or since)"
_NOT_FILTERS = {"offset", "limit", "sort", "after_id", "since"}
_TASK_FILTERS = {"state", "kind", "object_type", "object_id", "host_id", "username"}
_EVENT_FILTERS = {"kind", "object_type", "object_id", "username", "reason", "task_id"}


def _from_point(db: Any, user: CurrentUserInfo, model: Any, after_id: int | None, since: Any, sort: str | None) -> tuple[Any, str]:
    """The list's WHERE clause (visibility, then the point) and its sort."""
    restrict = feeds.window(model, _visible(db, user, model), after_id, since_utc(since))
    return restrict, sort or ("id" if after_id is not None or since is not None else "-id")


@router.get("/tasks", response_model=s.Page[s.TaskRead], tags=["tasks"], summary="List tasks, newest first by default")
def list_tasks(
    db: DbDep,
    user: Annotated[CurrentUserInfo, requires("System.View", deferred=True)],
    offset: Offset = 0,
    limit: int = Query(50, ge=1, le=500),
    sort: str | None = Query(None, description=_SORT),
    after_id: Annotated[OptionalObjectIdQuery, Query(description=_AFTER_ID)] = None,
    since: AwareDatetime | None = Query(None, description=_SINCE + " (tasks: by creation time)"),
    filters: dict[str, list[Any]] = Depends(list_filters(tasks.TASK_MODEL, _TASK_FILTERS, choices={"state": TaskState}, others=_NOT_FILTERS)),
) -> Any:
    restrict, sort = _from_point(db, user, tasks.TASK_MODEL, after_id, since, sort)
    total, rows = list_rows(
        db,
        tasks.TASK_MODEL,
        filters=filters,
        filterable=_TASK_FILTERS,
        sort=sort,
        sortable={"id", "created_at"},
        offset=offset,
        limit=limit,
        restrict=restrict,
    )
    return {"total": total, "offset": offset, "limit": limit, "items": rows}


def _read_task(runtime: Any, user: CurrentUserInfo, task_id: int) -> s.TaskRead:
    with runtime.transaction() as db:
        task = tasks.get_task(db, task_id)
        if task.user_id is None or task.user_id != user.id:  # its own by id: a name can be taken again
            user.require(db, *_task_object(task))
        return s.TaskRead.model_validate(task)


@router.get("/tasks/{task_id}", response_model=s.TaskRead, tags=["tasks"], summary="Get a task: state, step, progress, result, error code; with ?wait=, once it ends")
async def get_task(
    task_id: ObjectIdPath,
    request: Request,
    user: Annotated[CurrentUserInfo, requires("System.View", deferred=True)],
    wait: float | None = Query(
        None,
        ge=0,
        le=3600,
        allow_inf_nan=False,
        description="seconds to wait for the task to end (success, error or cancelled) before answering; at most the server's task_wait_max (60 s by default)",
    ),
) -> Any:
    runtime = request.app.state.runtime
    if wait is not None and wait > runtime.settings.task_wait_max:
        raise Invalid(f"wait: at most {runtime.settings.task_wait_max:g} seconds", code="INVALID_WAIT", details={"field": "wait", "max": runtime.settings.task_wait_max})
    # Read (and the privilege checked) in a worker thread each time: a wait holds no thread and
    # no transaction, and sees the task as committed by whichever process ends it.
    task = await run_in_threadpool(_read_task, runtime, user, task_id)
    deadline = time.monotonic() + (wait or 0)
    while not TaskState(task.state).finished and (left := deadline - time.monotonic()) > 0 and not await request.is_disconnected():
        await asyncio.sleep(min(runtime.settings.feed_poll_period, left))
        task = await run_in_threadpool(_read_task, runtime, user, task_id)
    return task


@router.post("/tasks/{task_id}/cancel", response_model=s.TaskRead, status_code=status.HTTP_202_ACCEPTED, tags=["tasks"], summary="Ask a task to stop")
def cancel_task(task_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("Global.CancelTask", deferred=True)]) -> Any:
    task = tasks.get_task(db, task_id)
    if task.user_id is None or task.user_id != user.id:  # one's own task (by id) needs no privilege to cancel
        user.require(db, *_task_object(task))
    return cancel.request_cancel(db, task_id, user.username)


@router.get("/events", response_model=s.Page[s.EventRead], tags=["events"], summary="List events, newest first by default")
def list_events(
    db: DbDep,
    user: Annotated[CurrentUserInfo, requires("System.View", deferred=True)],
    offset: Offset = 0,
    limit: int = Query(50, ge=1, le=500),
    sort: str | None = Query(None, description=_SORT),
    after_id: Annotated[OptionalObjectIdQuery, Query(description=_AFTER_ID)] = None,
    since: AwareDatetime | None = Query(None, description=_SINCE),
    filters: dict[str, list[Any]] = Depends(list_filters(tasks.EVENT_MODEL, _EVENT_FILTERS, others=_NOT_FILTERS)),
) -> Any:
    restrict, sort = _from_point(db, user, tasks.EVENT_MODEL, after_id, since, sort)
    total, rows = list_rows(
        db,
        tasks.EVENT_MODEL,
        filters=filters,
        filterable=_EVENT_FILTERS,
        sort=sort,
        sortable={"id", "at"},
        offset=offset,
        limit=limit,
        restrict=restrict,
    )
    return {"total": total, "offset": offset, "limit": limit, "items": rows}


@router.post(
    "/session",
    response_model=s.SessionRead,
    status_code=status.HTTP_201_CREATED,
    tags=["session"],
    summary="Log in: returns a bearer token",
    dependencies=[public("logging in is how a caller gets a session")],
    responses=declare(401, 429),  # BAD_CREDENTIALS, LOCKED_OUT; LOGIN_RATE_LIMITED
)
@v1.conflicts(False)
def login(body: s.LoginRequest, db: DbDep, settings: SettingsDep) -> Any:
    token, login_session, user = auth.login(db, body.username, body.password, settings)
    return {"token": token, "username": user.username, "expires_at": login_session.expires_at}


@router.delete("/session", status_code=status.HTTP_204_NO_CONTENT, tags=["session"], summary="Log out: the token stops working", dependencies=[public("ends the caller's own session")])
@v1.conflicts(False)
def logout(db: DbDep, token: TokenDep, user: CurrentUser) -> None:
    auth.logout(db, token)
