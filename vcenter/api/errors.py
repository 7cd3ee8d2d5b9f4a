"""Errors of the REST API: the body every error answer carries, how an exception becomes one,
and which error statuses an operation documents.

Every error body is ``{"code", "message", "details"?}`` (``ErrorBody``); never a bare 500.
The mapping (``error_response``) belongs to the API that mounts it: /api/v1's routes apply it
themselves (vcenter.api.v1.V1Route), so another API mounted in the same process (the
vSphere-compatible one) answers in its own format. ``install_error_handlers`` gives the
application the same mapping as its default, for what no API's route answers (an unknown path,
a method not allowed, the input guards, /metrics).

A refused credential (a presented user token, password, agent credential, registration token
or registration proof) is also counted in the audit of refused credentials
(vcenter.services.access.refusals) on its way out: one hook for every route that refuses one.

Which statuses an operation documents (``error_statuses``) is decided from what can raise
them: the dependencies it declares (a dependency's ``error_statuses`` attribute: the bearer
credential 401, a privilege check 403, an agent's host credential 400 and 401), its path
parameters and its body's ``*_id`` fields (404: an object named does not exist), its inputs
(422), its body (400 unparseable, 413 and 415 from the input guards), writes (409), and what its decorator declares itself (``declare(429, 503)``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from vcenter.core.audit import request_source
from vcenter.core.errors import VcError
from vcenter.services.access import refusals

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    """The body of every error answer."""

    model_config = ConfigDict(
        title="Error",
        json_schema_extra={
            "examples": [
                {"code": "VM_NOT_FOUND", "message": "no vm 7"},
                {"code": "INVALID", "message": "invalid value for: name", "details": [{"field": "name", "message": "Field required", "type": "missing"}]},
            ]
        },
    )

    code: str = Field(description="stable UPPER_SNAKE identifier to switch on (docs/api.md#errors)", examples=["VM_NOT_FOUND", "OBJECT_BUSY"])
    message: str = Field(description="what went wrong, for people", examples=["no vm 7"])
    details: Any = Field(None, description="data about the error: for INVALID the fields and their messages", examples=[[{"field": "name", "message": "Field required", "type": "missing"}]])


# What each documented status means, with the codes a client meets most (docs/api.md#errors).
ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "the body cannot be parsed (INVALID_BODY), or an agent's protocol version is not one this server reads (PROTOCOL_VERSION_UNSUPPORTED)",
    401: "no valid credential (NOT_AUTHENTICATED, SESSION_EXPIRED, TOKEN_EXPIRED, BAD_CREDENTIALS, ...)",
    403: "the credential does not hold the privilege this operation needs on its object (FORBIDDEN, ...)",
    404: "an object named in the path does not exist or is not visible (<KIND>_NOT_FOUND)",
    409: "the state of the objects refuses it (OBJECT_BUSY, STALE_VERSION, <KIND>_IN_USE, DUPLICATE_NAME, ...)",
    413: "the body is larger than the server accepts (BODY_TOO_LARGE, UPLOAD_TOO_LARGE)",
    415: "the body's media type is ambiguous (AMBIGUOUS_CONTENT_TYPE)",
    422: "a parameter or the body is invalid (INVALID naming the fields, INVALID_ID, INVALID_FILTER, ...)",
    429: "too many at once (LOGIN_RATE_LIMITED, STREAM_LIMIT): try again later",
    503: "a service the operation needs (Redis, the database) does not answer (UNAVAILABLE)",
}

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def declare(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for error statuses an operation answers beyond those its dependencies
    and parameters imply (a rate limit, a dependency that may be down)."""
    return {status: {"model": ErrorBody, "description": ERROR_DESCRIPTIONS[status]} for status in statuses}


def declare_json(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``declare`` for a route whose own answer is not JSON (its ``response_class`` would
    otherwise name the error body's media type too): the schema by reference."""
    schema = {"$ref": f"#/components/schemas/{ErrorBody.__name__}"}
    return {status: {"description": ERROR_DESCRIPTIONS[status], "content": {"application/json": {"schema": schema}}} for status in statuses}


def error_statuses(
    *, methods: Iterable[str], from_dependencies: Iterable[int], path_params: bool, inputs: bool, body: bool, body_names_objects: bool = False, conflicts: bool | None = None
) -> set[int]:
    """The error statuses an operation can answer: ``body_names_objects``, its body has
    ``*_id`` fields (404 when one names nothing); ``conflicts`` None: a write can conflict."""
    statuses = set(from_dependencies)
    if path_params or body_names_objects:
        statuses |= {404, 422}
    if inputs or body:
        statuses.add(422)
    if body:  # 400: a body the parser cannot read (INVALID_BODY); 413, 415: the input guards
        statuses |= {400, 413, 415}
    if conflicts if conflicts is not None else bool(set(methods) & WRITE_METHODS):
        statuses.add(409)
    return statuses


async def count_refusal(request: Request, kind: str, exc: VcError) -> None:
    """Count the refusal in its own transaction; a failure to count is logged, never turned
    into a 500 in place of the 401 the client is owed."""
    source = request_source.get() or (request.client.host if request.client else None)
    detail = f"{exc.code} {request.method} {request.url.path}"
    try:
        await run_in_threadpool(refusals.record_refusal, request.app.state.runtime.sessions, source, kind, detail)
    except Exception:
        log.exception("could not count a refused %s credential from %s", kind, source)


_HTTP_CODES = {400: "INVALID_BODY", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 401: "NOT_AUTHENTICATED"}


async def error_response(request: Request, exc: Exception) -> JSONResponse:
    """The answer to ``exc`` raised while serving ``request``: ``{"code", "message", "details"?}``."""
    if isinstance(exc, VcError):
        kind = refusals.credential_kind(exc.code, credential_presented=bool(request.headers.get("authorization", "").strip()))
        if kind is not None:
            await count_refusal(request, kind, exc)
        return JSONResponse(exc.to_dict(), status_code=exc.status)
    if isinstance(exc, RequestValidationError):
        errors = [{"field": ".".join(str(p) for p in e["loc"] if p not in ("body",)), "message": e["msg"], "type": e["type"]} for e in exc.errors()]
        fields = ", ".join(e["field"] for e in errors)
        return JSONResponse({"code": "INVALID", "message": f"invalid value for: {fields}", "details": errors}, status_code=422)
    if isinstance(exc, StarletteHTTPException):
        return JSONResponse({"code": _HTTP_CODES.get(exc.status_code, "HTTP_ERROR"), "message": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"code": "INTERNAL", "message": "internal error; see the server log"}, status_code=500)


_HANDLERS_KEY = "starlette.exception_handlers"


async def handle_with(handlers: tuple[dict[Any, Any], dict[Any, Any]], handle: Any, scope: Any, receive: Any, send: Any) -> None:
    """Serve a route with ``handlers`` as its exception handlers, whatever the application's
    defaults are: Starlette looks them up in the scope when the route's app starts, outside the
    dependencies' exit stacks (a transaction still rolls back first). Each mounted API (/api/v1,
    the vSphere-compatible one) maps its errors its own way through this."""
    previous = scope.get(_HANDLERS_KEY)
    scope[_HANDLERS_KEY] = handlers
    try:
        await handle(scope, receive, send)
    finally:
        if previous is not None:
            scope[_HANDLERS_KEY] = previous


def install_error_handlers(app: FastAPI) -> None:
    """The application's default mapping, for answers no mounted API's route gives."""
    for kind in (VcError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, error_response)
