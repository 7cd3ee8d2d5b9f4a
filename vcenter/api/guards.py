"""Hostile-input guards applied before any route: JSON bodies above a size limit are refused
(413 BODY_TOO_LARGE) before they are read whole, and NUL characters in a query string, a path
or a JSON body are refused (422 INVALID_CHARACTER): PostgreSQL cannot store them, and no
name, path or XML built from user input has any use for them. Uploads (non-JSON bodies) have
their own streamed limits in their routes."""
from __future__ import annotations

import json
from typing import Any

_NUL_JSON = (b"\\u0000", b"\x00")


def _reply(status: int, code: str, message: str) -> tuple[dict[str, Any], dict[str, Any]]:
    body = json.dumps({"code": code, "message": message}).encode()
    start = {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}
    return start, {"type": "http.response.body", "body": body}


class InputGuard:
    def __init__(self, app: Any, max_json_body: int):
        self.app = app
        self.max_json_body = max_json_body

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = None
        if b"%00" in scope.get("query_string", b"") or "\x00" in scope.get("path", "") or b"%00" in scope.get("raw_path", b""):
            refusal = _reply(422, "INVALID_CHARACTER", "NUL characters are not accepted")
        headers = dict(scope.get("headers") or [])
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if refusal is None and content_type.endswith(b"json"):
            declared = headers.get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_json_body:
                refusal = _reply(413, "BODY_TOO_LARGE", f"JSON bodies are limited to {self.max_json_body} bytes")
            else:
                chunks, size = [], 0
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        break
                    chunks.append(message.get("body", b""))
                    size += len(chunks[-1])
                    if size > self.max_json_body:
                        refusal = _reply(413, "BODY_TOO_LARGE", f"JSON bodies are limited to {self.max_json_body} bytes")
                        break
                    if not message.get("more_body"):
                        break
                body = b"".join(chunks)
                if refusal is None and any(marker in body for marker in _NUL_JSON):
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
        if refusal is not None:
            for message in refusal:
                await send(message)
            return
        return await self.app(scope, receive, send)
