"""Error mapping: every error body is {"code", "message", "details"?}; never a bare 500.

A refused credential (a presented user token, password, agent credential, registration token
or registration proof) is also counted in the audit of refused credentials
(vcenter.services.access.refusals) on its way out: one hook for every route that refuses one."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from vcenter.core.audit import request_source
from vcenter.core.errors import VcError
from vcenter.services.access import refusals

log = logging.getLogger(__name__)


async def _count_refusal(request: Request, kind: str, exc: VcError) -> None:
    """Count the refusal in its own transaction; a failure to count is logged, never turned
    into a 500 in place of the 401 the client is owed."""
    source = request_source.get() or (request.client.host if request.client else None)
    detail = f"{exc.code} {request.method} {request.url.path}"
    try:
        await run_in_threadpool(refusals.record_refusal, request.app.state.runtime.sessions, source, kind, detail)
    except Exception:
        log.exception("could not count a refused %s credential from %s", kind, source)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(VcError)
    async def _vc_error(request: Request, exc: VcError) -> JSONResponse:
        kind = refusals.credential_kind(exc.code, credential_presented=bool(request.headers.get("authorization", "").strip()))
        if kind is not None:
            await _count_refusal(request, kind, exc)
        return JSONResponse(exc.to_dict(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": ".".join(str(p) for p in e["loc"] if p not in ("body",)), "message": e["msg"], "type": e["type"]} for e in exc.errors()]
        fields = ", ".join(e["field"] for e in errors)
        return JSONResponse({"code": "INVALID", "message": f"invalid value for: {fields}", "details": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {400: "INVALID_BODY", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 401: "NOT_AUTHENTICATED"}.get(exc.status_code, "HTTP_ERROR")
        return JSONResponse({"code": code, "message": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"code": "INTERNAL", "message": "internal error; see the server log"}, status_code=500)
