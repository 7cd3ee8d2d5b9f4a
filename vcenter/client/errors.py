"""The client's failures, apart from the HTTP client so that the commands that only read the
contexts, or fail before asking a server, import no httpx: ``ClientError`` (no server, not
logged in), ``ApiError`` (a refusal of the server, its stable ``code`` read from either error
body shape), ``PathError`` (an inventory path that names nothing, or more than one thing)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx


class ClientError(Exception):
    """The CLI's failures that are not the server's refusal (no server, not logged in)."""


class ApiError(ClientError):
    """A refusal of the server: HTTP status, stable ``code``, message for people, details."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message, self.details = status, code, message, details

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        try:
            body = response.json()
        except ValueError:
            body = None
        return cls.from_body(response.status_code, body, response.text)

    @classmethod
    def from_body(cls, status: int, body: Any, text: str = "") -> ApiError:
        """Either shape: ``{"code","message","details"}`` or problem+json (``title``,
        ``detail``, ``code`` member, extension members as details)."""
        if not isinstance(body, dict):
            return cls(status, f"HTTP_{status}", text.strip()[:200] or "no error document")
        code = body["code"] if isinstance(body.get("code"), str) else f"HTTP_{status}"
        message = body.get("message") or body.get("detail") or body.get("title") or ""
        if not isinstance(message, str):  # FastAPI's own {"detail": [...]}
            message = json.dumps(message)
        details = body.get("details")
        if details is None:  # problem+json: the extension members are the details
            extra = {k: v for k, v in body.items() if k not in {"type", "title", "status", "detail", "instance", "code", "message"}}
            details = extra or None
        return cls(status, code, message, details)

    def as_json(self) -> dict[str, Any]:
        return {"status": self.status, "code": self.code, "message": self.message, "details": self.details}


class PathError(ClientError):
    """A path or name that names nothing the caller may see, or more than one thing."""

    code = "PATH_NOT_FOUND"

    def __init__(self, message: str, code: str = "PATH_NOT_FOUND") -> None:
        super().__init__(message)
        self.code = code
