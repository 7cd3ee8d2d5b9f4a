"""Errors of the vSphere-compatible API: the body vSphere clients read, and how each of our
errors becomes one.

Every error answer is vSphere's ``{"error_type": "NOT_FOUND", "messages": [{"id",
"default_message", "args"}]}`` (vapi.std.errors.* of the upstream specification); a message's
``id`` carries our own stable code (``virtcenter.VM_NOT_FOUND``) for those who switch on it.

Decisions (status -> vSphere error type):
- 401 UNAUTHENTICATED, 403 UNAUTHORIZED, 404 NOT_FOUND, 503 SERVICE_UNAVAILABLE;
- our 422 (an invalid id, filter or body) and 400 are vSphere's 400 INVALID_ARGUMENT (vSphere
  has no 422);
- 409 by our code: OBJECT_BUSY -> RESOURCE_BUSY, STALE_VERSION -> CONCURRENT_CHANGE,
  INVALID_STATE -> NOT_ALLOWED_IN_CURRENT_STATE, ALREADY_* -> ALREADY_IN_DESIRED_STATE,
  DUPLICATE_NAME -> ALREADY_EXISTS, else RESOURCE_BUSY;
- our 429 (a login rate limit) is 503 SERVICE_UNAVAILABLE (vSphere has no 429; its clients
  retry a 503), with the same message ("try again later");
- an operation of the vSphere API we do not serve is 404 OPERATION_NOT_FOUND; plain HTTP is
  400 INVALID_REQUEST (vcenter.api.vsphere.route).
A refused credential is counted in the audit of refused credentials exactly as /api/v1 counts
it (vcenter.api.errors.count_refusal), the session id header counting as a presented one.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from vcenter.api.errors import count_refusal
from vcenter.core.errors import VcError
from vcenter.services.access import refusals

log = logging.getLogger(__name__)

SESSION_HEADER = "vmware-api-session-id"

_BY_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "UNAUTHORIZED",
    404: "NOT_FOUND",
    413: "INVALID_ARGUMENT",
    415: "INVALID_ARGUMENT",
    422: "INVALID_ARGUMENT",
    503: "SERVICE_UNAVAILABLE",
}
_CONFLICTS = {"OBJECT_BUSY": "RESOURCE_BUSY", "STALE_VERSION": "CONCURRENT_CHANGE", "INVALID_STATE": "NOT_ALLOWED_IN_CURRENT_STATE", "DUPLICATE_NAME": "ALREADY_EXISTS"}
# Statuses vSphere does not answer, and the one it answers instead.
_STATUS = {422: 400, 413: 400, 415: 400, 429: 503}


# Codes raised by these routes under vSphere's own error type names.
VSPHERE_TYPES = frozenset({"OPERATION_NOT_FOUND", "UNABLE_TO_ALLOCATE_RESOURCE", "INVALID_REQUEST"})


def error_type(status: int, code: str) -> str:
    """vSphere's error type for our error of ``status`` and ``code``."""
    if code in VSPHERE_TYPES:
        return code
    if status == 409:
        if code.startswith("ALREADY_"):
            return "ALREADY_IN_DESIRED_STATE"
        return _CONFLICTS.get(code, "RESOURCE_BUSY")
    if status == 429:
        return "SERVICE_UNAVAILABLE"
    return _BY_STATUS.get(status, "ERROR")


def body(kind: str, code: str, message: str, args: list[str] | None = None) -> dict[str, Any]:
    return {"error_type": kind, "messages": [{"id": f"virtcenter.{code}", "default_message": message, "args": list(args or [])}]}


def answer(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The vSphere error answer for our error of ``status`` and ``code``."""
    return JSONResponse(body(error_type(status, code), code, message), status_code=_STATUS.get(status, status), headers=headers)


async def vsphere_error_response(request: Request, exc: Exception) -> JSONResponse:
    """The answer to ``exc`` raised while serving a vSphere route."""
    if isinstance(exc, VcError):
        presented = bool(request.headers.get("authorization", "").strip() or request.headers.get(SESSION_HEADER, "").strip())
        kind = refusals.credential_kind(exc.code, credential_presented=presented)
        if kind is not None:
            await count_refusal(request, kind, exc)
        return answer(exc.status, exc.code, exc.message)
    if isinstance(exc, RequestValidationError):
        fields = ", ".join(".".join(str(p) for p in e["loc"] if p != "body") for e in exc.errors())
        return answer(422, "INVALID", f"invalid value for: {fields}")
    if isinstance(exc, StarletteHTTPException):
        return answer(exc.status_code, "HTTP_ERROR", str(exc.detail), headers=exc.headers)
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(body("INTERNAL_SERVER_ERROR", "INTERNAL", "internal error; see the server log"), status_code=500)
