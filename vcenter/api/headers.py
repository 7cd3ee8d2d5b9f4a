"""Security headers on every response the server sends (API, /ui, /docs, static files, errors,
the guards' refusals): which ones, decided per request by ``security_headers``.

- ``Content-Security-Policy``: scripts and styles from our own origin only — no inline script,
  no ``eval``, no inline style except a ``<style>`` carrying the per-response nonce (the
  console's terminal, xterm.js, builds its stylesheet at run time; our console.js hands it the
  nonce). Framing is refused (``frame-ancestors 'none'``), forms post to us only, no plugins,
  no ``<base>``. Images may be ``data:`` URIs (the API docs' icons).
  One page needs more, and gets it alone: ``/redoc`` (Redoc) inserts its styles at run time
  with the response's nonce, except two ``<style>`` elements its bundle inserts as it loads,
  before it knows the nonce: those are allowed by their hashes (``REDOC_STYLE_HASHES``); and
  it builds its search index in a Web Worker made from a ``blob:`` URL (``worker-src blob:``
  there only; every other page keeps workers to our own origin).
- ``X-Frame-Options: DENY`` for browsers predating ``frame-ancestors``; ``nosniff``;
  ``Referrer-Policy: no-referrer`` (object ids in our URLs are nobody else's business).
- ``Strict-Transport-Security`` only when the request came over HTTPS (our TLS, or a trusted
  proxy's ``X-Forwarded-Proto``): sent over plain HTTP it would be ignored at best, and it
  would lock a lab that runs on HTTP out of its own server at worst.
- ``Cache-Control: no-store`` on everything but static assets: API answers, /ui pages and
  /metrics carry data behind a credential, and a shared or back-button cache must not keep it.
"""

from __future__ import annotations

import secrets
from typing import Any

HSTS = b"max-age=31536000"
STATIC_PREFIXES = ("/static/", "/ui/static/")
# Pages that render the console take a style nonce (see the module docstring).
NONCE_PREFIXES = ("/ui/",)
# The API reference (Redoc): a style nonce, blob: workers and the hashes below, on this exact
# path only.
REDOC_PATH = "/redoc"
# The <style> elements the vendored Redoc bundle (static/vendor/redoc) inserts while it loads:
# first empty, then filled with its CSS. They change with the bundle: after an update, the
# browser test (tests/system/test_api_docs_browser.py) names the hashes Chromium wants.
REDOC_STYLE_HASHES = ("'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='", "'sha256-QMIg+bpjm3JdElJ388KYke01izlUW0UoNOeKjpMxdgc='")


def content_security_policy(style_nonce: str | None = None, redoc: bool = False) -> str:
    style = " ".join(("style-src 'self'", *([f"'nonce-{style_nonce}'"] if style_nonce else []), *(REDOC_STYLE_HASHES if redoc else ())))
    worker = "worker-src 'self'" + (" blob:" if redoc else "")
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            style,
            "img-src 'self' data:",
            "font-src 'self'",
            "connect-src 'self'",
            worker,
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


def is_static(path: str) -> bool:
    return path.startswith(STATIC_PREFIXES)


def takes_style_nonce(path: str) -> bool:
    return path == REDOC_PATH or (path.startswith(NONCE_PREFIXES) and not is_static(path))


def security_headers(path: str, scheme: str, style_nonce: str | None = None) -> list[tuple[bytes, bytes]]:
    """The headers a response to ``path`` requested over ``scheme`` carries."""
    headers = [
        (b"content-security-policy", content_security_policy(style_nonce, redoc=path == REDOC_PATH).encode()),
        (b"x-frame-options", b"DENY"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
    ]
    if scheme in ("https", "wss"):
        headers.append((b"strict-transport-security", HSTS))
    if not is_static(path):
        headers.append((b"cache-control", b"no-store"))
    return headers


class SecurityHeaders:
    """ASGI middleware: sets the headers above on every ``http.response.start``, replacing any
    the application set under the same names. Wraps the whole application, error handling
    included, so a 500 carries them too."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        nonce = None
        if takes_style_nonce(path):
            nonce = secrets.token_urlsafe(18)
            scope.setdefault("state", {})["csp_style_nonce"] = nonce
        ours = security_headers(path, scope.get("scheme", "http"), nonce)
        names = {name for name, _ in ours}

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": kept + ours}
            await send(message)

        await self.app(scope, receive, send_with_headers)
