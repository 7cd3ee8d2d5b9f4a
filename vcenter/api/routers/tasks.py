"""Tasks, events and the login session."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, status

from vcenter.api.deps import CurrentUser, DbDep, SettingsDep, TokenDep
from vcenter.schemas import inventory as s
from vcenter.services import auth, tasks
from vcenter.services.listing import list_rows

router = APIRouter(prefix="/api/v1")


@router.get("/tasks", response_model=s.Page[s.TaskRead], tags=["tasks"], summary="List tasks, newest first by default")
def list_tasks(
    request: Request, db: DbDep, user: CurrentUser,
    offset: int = Query(0, ge=0), limit: int = Query(50, ge=1, le=500), sort: str | None = Query("-id"),
) -> Any:
    filters = {k: (int(v) if k.endswith("_id") and v.isdigit() else v) for k, v in request.query_params.items() if k not in {"offset", "limit", "sort"}}
    total, rows = list_rows(db, tasks.TASK_MODEL, filters=filters, filterable={"state", "kind", "object_type", "object_id", "host_id", "username"}, sort=sort, sortable={"id", "created_at"}, offset=offset, limit=limit)
    return {"total": total, "offset": offset, "limit": limit, "items": rows}


@router.get("/tasks/{task_id}", response_model=s.TaskRead, tags=["tasks"], summary="Get a task: state, step, progress, result, error code")
def get_task(task_id: int, db: DbDep, user: CurrentUser) -> Any:
    return tasks.get_task(db, task_id)


@router.post("/tasks/{task_id}/cancel", response_model=s.TaskRead, status_code=status.HTTP_202_ACCEPTED, tags=["tasks"], summary="Ask a task to stop")
def cancel_task(task_id: int, db: DbDep, user: CurrentUser) -> Any:
    return tasks.request_cancel(db, task_id, user.username)


@router.get("/events", response_model=s.Page[s.EventRead], tags=["events"], summary="List events, newest first by default")
def list_events(
    request: Request, db: DbDep, user: CurrentUser,
    offset: int = Query(0, ge=0), limit: int = Query(50, ge=1, le=500), sort: str | None = Query("-id"),
) -> Any:
    filters = {k: (int(v) if k.endswith("_id") and v.isdigit() else v) for k, v in request.query_params.items() if k not in {"offset", "limit", "sort"}}
    total, rows = list_rows(db, tasks.EVENT_MODEL, filters=filters, filterable={"kind", "object_type", "object_id", "username", "reason", "task_id"}, sort=sort, sortable={"id", "at"}, offset=offset, limit=limit)
    return {"total": total, "offset": offset, "limit": limit, "items": rows}


@router.post("/session", response_model=s.SessionRead, status_code=status.HTTP_201_CREATED, tags=["session"], summary="Log in: returns a bearer token")
def login(body: s.LoginRequest, db: DbDep, settings: SettingsDep) -> Any:
    token, login_session, user = auth.login(db, body.username, body.password, settings)
    return {"token": token, "username": user.username, "expires_at": login_session.expires_at}


@router.delete("/session", status_code=status.HTTP_204_NO_CONTENT, tags=["session"], summary="Log out: the token stops working")
def logout(db: DbDep, token: TokenDep, user: CurrentUser) -> None:
    auth.logout(db, token)
