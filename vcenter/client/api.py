"""``Client``: virtcenter's REST API over HTTP with a bearer credential.

Decides: how a refusal is read (``ApiError.code`` from ``{"code","message","details"}`` or from
an RFC 9457 problem document that carries ``code`` as a member; a body without one gets
``HTTP_<status>``), how lists are paged (``limit`` at most 500 a page, to ``max_items``), how a
task is waited for (long polls of ``GET /tasks/{id}?wait=``, each at most ``poll`` seconds, so
its progress shows between them), and how a server-sent event stream is read (``parse_sse``).
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from vcenter.client.errors import ApiError, ClientError
from vcenter.client.models import Event, Task

__all__ = ["API", "ApiError", "Client", "ClientError", "Session", "SseMessage", "parse_sse", "tls_verify"]

API = "/api/v1"
PAGE = 500  # the API's largest page


@dataclass(frozen=True)
class Session:
    token: str
    username: str
    expires_at: str


@dataclass(frozen=True)
class SseMessage:
    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        return json.loads(self.data)


def parse_sse(lines: Iterable[str]) -> Iterator[SseMessage]:
    """Server-sent events (WHATWG): ``event:``/``data:``/``id:`` fields up to a blank line;
    comments (``:``) are keep-alives; ``data`` lines are joined with newlines."""
    event, last_id = "message", None
    data: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield SseMessage(event, "\n".join(data), last_id)
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            last_id = value
    if data:
        yield SseMessage(event, "\n".join(data), last_id)


def tls_verify(ca_file: str | None) -> ssl.SSLContext | bool:
    """Verify the server's certificate with the system's CAs, or with ``ca_file`` only."""
    return ssl.create_default_context(cafile=ca_file) if ca_file else True


class Client:
    """One server, one credential (a login session's token or an API token ``vct_...``).
    ``http`` lets a caller hand in its own httpx.Client (the tests: FastAPI's TestClient)."""

    def __init__(self, server: str, token: str | None = None, *, ca_file: str | None = None, timeout: float = 30.0, http: httpx.Client | None = None) -> None:
        self.server = server.rstrip("/")
        self.token = token
        self._http = http or httpx.Client(base_url=self.server, verify=tls_verify(ca_file), timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def request(self, method: str, path: str, *, params: Any = None, json: Any = None, timeout: float | None = None) -> Any:
        """The answer's JSON (None for 204); a refusal raises ApiError, no server ClientError."""
        url = path if path.startswith(("http://", "https://", "/")) else f"{API}/{path}"
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        try:
            response = self._http.request(method, url, params=params, json=json, headers=self._headers(), **extra)
        except httpx.TransportError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise ClientError(f"{self.server}: its certificate does not verify ({exc}); give its CA: vcenter login --ca-file FILE") from None
            raise ClientError(f"cannot reach {self.server}: {exc}") from None
        if response.status_code >= 400:
            raise ApiError.from_response(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body)

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, json=body)

    def delete(self, path: str, **params: Any) -> Any:
        return self.request("DELETE", path, params=params or None)

    # --- session ---------------------------------------------------------------------------
    def login(self, username: str, password: str) -> Session:
        doc = self.post("session", {"username": username, "password": password})
        self.token = doc["token"]
        return Session(token=doc["token"], username=doc["username"], expires_at=str(doc["expires_at"]))

    def logout(self) -> None:
        self.delete("session")

    def check_token(self) -> None:
        """A credential the server accepts (the caller's own token list needs no privilege)."""
        self.get("session/tokens")

    # --- lists -----------------------------------------------------------------------------
    def list_all(self, path: str, *, max_items: int = 100_000, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every item of a paged list with these filters (equality; ``name`` takes ``*``)."""
        offset = 0
        while offset < max_items:
            page = self.get(path, offset=offset, limit=min(PAGE, max_items - offset), **{k: v for k, v in filters.items() if v is not None})
            items = page["items"] if isinstance(page, dict) else page
            yield from items
            offset += len(items)
            if not items or not isinstance(page, dict) or offset >= page["total"]:
                return

    # --- tasks and events ------------------------------------------------------------------
    def task(self, task_id: int, wait: float | None = None) -> Task:
        params = None if wait is None else {"wait": f"{wait:g}"}
        return Task.from_json(self.request("GET", f"tasks/{task_id}", params=params, timeout=None if wait is None else wait + 30))

    def wait_task(self, task: Task | int, *, on_update: Callable[[Task], None] | None = None, timeout: float | None = None, poll: float = 1.0) -> Task:
        """Follow a task to its end (or ``timeout``), calling ``on_update`` at each change."""
        current = task if isinstance(task, Task) else self.task(task)
        deadline = None if timeout is None else time.monotonic() + timeout
        if on_update:
            on_update(current)
        while not current.finished and (deadline is None or time.monotonic() < deadline):
            later = self.task(current.id, wait=poll)
            if on_update and (later.state, later.step, later.progress) != (current.state, current.step, current.progress):
                on_update(later)
            current = later
        return current

    def stream(self, kind: str, after_id: str | None = None, read_timeout: float = 120.0) -> Iterator[SseMessage]:
        """Follow ``tasks`` or ``events`` live (``/{kind}/stream``) until the stream ends; each
        message is a row (``event`` "task"/"event") or the end (``event`` "end")."""
        params = {"after_id": after_id} if after_id else None
        try:
            with self._http.stream("GET", f"{API}/{kind}/stream", params=params, headers=self._headers(), timeout=httpx.Timeout(30.0, read=read_timeout)) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ApiError.from_response(response)
                for message in parse_sse(response.iter_lines()):
                    yield message
                    if message.event == "end":
                        return
        except httpx.TransportError as exc:
            raise ClientError(f"stream from {self.server} broken: {exc}") from None

    def events(self, **filters: Any) -> list[Event]:
        return [Event.from_json(doc) for doc in self.list_all("events", **filters)]
