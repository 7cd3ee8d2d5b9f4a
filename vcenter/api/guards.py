"""Hostile-input guards applied before any route, on the bytes of the request rather than on
what one header claims (a client controls every header, and FastAPI, Starlette and this guard
would otherwise each read a different one):

- a ``Content-Type`` sent twice, or one value naming several media types (``a/b, c/d``), is
  refused with 415 AMBIGUOUS_CONTENT_TYPE: which one a reader picks is not defined;
- every request body is limited to ``max_json_body`` bytes (413 BODY_TOO_LARGE), counted as it
  arrives — chunked bodies and any ``Content-Length`` included — whatever the content type,
  except on routes that declare a streamed upload (``openapi_extra=STREAMED_UPLOAD``), which
  enforce their own, larger, limit while streaming to disk;
- NUL characters in the query string, the path or any guarded body (raw, JSON-escaped
  ``\\u0000`` or form-encoded ``%00``) are refused with 422 INVALID_CHARACTER: PostgreSQL
  cannot store them, and no name, path or XML built from user input has any use for them. The
  body is checked whatever content type it claims, as the dashboard's forms and FastAPI's
  JSON parsing do not depend on it being right.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

# A route that streams its body to disk under its own limit declares itself with this
# (FastAPI route ``openapi_extra``; it also shows in the OpenAPI document).
STREAMED_UPLOAD: dict[str, Any] = {"x-streamed-upload": True}

_NUL_BODY = (b"\x00", b"\\u0000", b"%00")
_QUOTED = re.compile(rb'"(?:[^"\\]|\\.)*"')

Reply = tuple[dict[str, Any], dict[str, Any]]


def _reply(status: int, code: str, message: str) -> Reply:
    body = json.dumps({"code": code, "message": message}).encode()
    start = {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}
    return start, {"type": "http.response.body", "body": body}


def content_type_refusal(headers: Iterable[tuple[bytes, bytes]]) -> Reply | None:
    """415 when the request names more than one media type: two ``Content-Type`` headers, or
    one value with a comma outside quoted parameters (``boundary="a,b"`` is one type)."""
    values = [v for k, v in headers if k.lower() == b"content-type"]
    if len(values) > 1 or (values and b"," in _QUOTED.sub(b"", values[0])):
        return _reply(415, "AMBIGUOUS_CONTENT_TYPE", "send exactly one Content-Type naming one media type")
    return None


def declared_too_large(headers: Iterable[tuple[bytes, bytes]], limit: int) -> bool:
    """Any ``Content-Length`` above the limit: refuse before reading (the body is counted anyway)."""
    return any(v.strip().isascii() and v.strip().isdigit() and int(v.strip()) > limit for k, v in headers if k.lower() == b"content-length")


def has_nul(body: bytes) -> bool:
    return any(marker in body for marker in _NUL_BODY)


def target_has_nul(scope: dict) -> bool:
    query = scope.get("query_string", b"")
    return b"%00" in query or b"\x00" in query or "\x00" in scope.get("path", "") or b"%00" in scope.get("raw_path", b"")


def _streamed_routes(routes: Iterable[Any], prefix: str = "") -> Iterator[tuple[set[str], str]]:
    """(methods, full path) of every route declaring STREAMED_UPLOAD. An included router is
    walked through its own routes with its include prefix: asking it for its effective routes
    would make FastAPI analyse every route of the application again, for each new app."""
    for route in routes:
        included = getattr(route, "original_router", None)
        context = getattr(route, "include_context", None)
        if included is not None and context is not None:
            yield from _streamed_routes(included.routes, prefix + (context.prefix or ""))
        elif (getattr(route, "openapi_extra", None) or {}).get("x-streamed-upload"):
            yield set(getattr(route, "methods", None) or ()), prefix + route.path


def streamed_upload_matcher(routes: Callable[[], Iterable[Any]]) -> Callable[[dict], bool]:
    """Whether a request goes to a route declaring STREAMED_UPLOAD (same method, same path
    pattern); the routes are read on the first request, when the application has all of them."""
    from starlette.routing import compile_path

    streamed: list[tuple[set[str], Any]] | None = None

    def matches(scope: dict) -> bool:
        nonlocal streamed
        if streamed is None:
            streamed = [(methods, compile_path(path)[0]) for methods, path in _streamed_routes(routes())]
        path = scope.get("path", "")
        return any(scope.get("method") in methods and regex.match(path) for methods, regex in streamed)

    return matches


class InputGuard:
    def __init__(self, app: Any, max_json_body: Callable[[], int], is_streamed_upload: Callable[[dict], bool] | None = None):
        # The limit is read for each request (the setting of the application's current runtime).
        self.app = app
        self.max_json_body = max_json_body
        self.is_streamed_upload = is_streamed_upload or (lambda scope: False)

    @staticmethod
    def _too_large(limit: int) -> Reply:
        return _reply(413, "BODY_TOO_LARGE", f"request bodies are limited to {limit} bytes")

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = scope.get("headers") or []
        refusal = content_type_refusal(headers)
        if refusal is None and target_has_nul(scope):
            refusal = _reply(422, "INVALID_CHARACTER", "NUL characters are not accepted")
        if refusal is None and self.is_streamed_upload(scope):
            return await self.app(scope, receive, send)
        limit = self.max_json_body()
        if refusal is None and declared_too_large(headers, limit):
            refusal = self._too_large(limit)
        if refusal is None:
            chunks, size = [], 0
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    # The client left before sending its body: nothing to serve.
                    return
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                if size > limit:
                    refusal = self._too_large(limit)
                    break
                if not message.get("more_body"):
                    break
            body = b"".join(chunks)
            if refusal is None and has_nul(body):
                refusal = _reply(422, "INVALID_CHARACTER", "NUL characters are not accepted")
            if refusal is None:
                replayed = False

                async def replay() -> dict:
                    nonlocal replayed
                    if not replayed:
                        replayed = True
                        return {"type": "http.request", "body": body, "more_body": False}
                    return await receive()

                return await self.app(scope, replay, send)
        for message in refusal:
            await send(message)
