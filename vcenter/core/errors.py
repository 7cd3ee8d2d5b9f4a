"""Errors with a stable code: what an API client, a Task and an Event all report.

Vocabulary: ``code`` is a stable UPPER_SNAKE identifier clients may switch on; ``message`` is
for humans; ``status`` is the HTTP status the API maps the error to; ``details`` is data.
"""

from __future__ import annotations

from typing import Any


class VcError(Exception):
    status = 400
    code = "BAD_REQUEST"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None, audit: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details
        # An Event to record although the change itself is rolled back (a refused attempt).
        self.audit = audit

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return body


class NotFound(VcError):
    status = 404
    code = "NOT_FOUND"


class Conflict(VcError):
    status = 409
    code = "CONFLICT"


class ObjectBusy(Conflict):
    code = "OBJECT_BUSY"


class StaleVersion(Conflict):
    code = "STALE_VERSION"


class InvalidState(Conflict):
    code = "INVALID_STATE"


class Invalid(VcError):
    status = 422
    code = "INVALID"


class Unauthorized(VcError):
    status = 401
    code = "UNAUTHORIZED"


class Forbidden(VcError):
    status = 403
    code = "FORBIDDEN"


class Unavailable(VcError):
    status = 503
    code = "UNAVAILABLE"


class RateLimited(VcError):
    status = 429
    code = "RATE_LIMITED"
