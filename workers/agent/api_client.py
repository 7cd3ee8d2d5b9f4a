"""The agent's HTTP client to the server: its host's own token and its protocol version
(vcenter.messaging.contracts) on every request, retries until the server answers (reports are
idempotent on the server side), so an API restart loses nothing."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import httpx

from vcenter.messaging.contracts import PROTOCOL_HEADER, PROTOCOL_VERSION

log = logging.getLogger(__name__)


class PermanentReportError(Exception):
    """The server refused the report (4xx other than 408/429): retrying will not help."""


class ApiClient:
    def __init__(self, base_url: str, host_id: int, token: str, retry_delay: float = 1.0, max_delay: float = 10.0, verify: Any = True):
        """``verify``: how the server's HTTPS certificate is checked (workers.agent.tls)."""
        self.host_id = host_id
        self._client = httpx.Client(base_url=base_url.rstrip("/"), headers={"Authorization": f"Bearer {token}", PROTOCOL_HEADER: str(PROTOCOL_VERSION)}, timeout=10.0, verify=verify)
        self._retry_delay = retry_delay
        self._max_delay = max_delay
        self._stop = threading.Event()

    def close(self) -> None:
        self._stop.set()
        self._client.close()

    def post(self, path: str, body: Any, *, retry_for: float | None = None) -> dict[str, Any]:
        """POST under /api/v1/agent/hosts/<id>; retry transport errors and 5xx until
        ``retry_for`` seconds passed (None: forever, until the agent stops)."""
        url = f"/api/v1/agent/hosts/{self.host_id}{path}"
        deadline = None if retry_for is None else time.monotonic() + retry_for
        delay = self._retry_delay
        while True:
            try:
                response = self._client.post(url, json=body)
                if response.status_code < 300:
                    return response.json()
                # A report that raced another write to the same row (optimistic concurrency) is
                # simply sent again: reports are idempotent.
                stale = response.status_code == 409 and "STALE_VERSION" in response.text
                if response.status_code < 500 and response.status_code not in (408, 429) and not stale:
                    raise PermanentReportError(f"{url}: {response.status_code} {response.text[:300]}")
                problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                stale = False
            if self._stop.is_set() or (deadline is not None and time.monotonic() > deadline):
                raise ConnectionError(f"server unreachable for {url}: {problem}")
            if stale:
                problem = "raced another update"
                self._stop.wait(0.05)
                continue
            log.warning("report %s failed (%s); retrying in %.1f s", url, problem, delay)
            self._stop.wait(delay)
            delay = min(delay * 2, self._max_delay)

    # --- bulk data (templates_store): uploads pulled, exports pushed, seeds fetched ----------
    def get_json(self, path: str, *, retry_for: float = 30.0) -> dict[str, Any]:
        """GET under /api/v1/agent/hosts/<id> (e.g. a VM's cloud-init seed); 4xx is permanent."""
        url = f"/api/v1/agent/hosts/{self.host_id}{path}"
        deadline = time.monotonic() + retry_for
        while True:
            try:
                response = self._client.get(url)
                if response.status_code < 300:
                    return response.json()
                if response.status_code < 500:
                    raise PermanentReportError(f"{url}: {response.status_code} {response.text[:300]}")
                problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if self._stop.is_set() or time.monotonic() > deadline:
                raise ConnectionError(f"server unreachable for {url}: {problem}")
            self._stop.wait(self._retry_delay)

    def download(self, path: str, dest: str, *, timeout: float = 3600.0, on_bytes: Any = None, cancel: Any = None) -> tuple[int, str]:
        """Stream GET <path> into ``dest`` (via a temporary name); (bytes, sha256 hex)."""
        import hashlib
        import os

        url = f"/api/v1/agent/hosts/{self.host_id}{path}"
        h = hashlib.sha256()
        size = 0
        tmp = f"{dest}.download"
        try:
            with self._client.stream("GET", url, timeout=httpx.Timeout(timeout, connect=10.0)) as response:
                if response.status_code >= 300:
                    response.read()
                    raise PermanentReportError(f"{url}: {response.status_code} {response.text[:300]}")
                with open(tmp, "wb") as f:
                    for chunk in response.iter_bytes(1 << 20):
                        if cancel is not None and cancel.is_set():
                            raise InterruptedError("download cancelled")
                        f.write(chunk)
                        h.update(chunk)
                        size += len(chunk)
                        if on_bytes is not None:
                            on_bytes(size)
            os.rename(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return size, h.hexdigest()

    def upload_file(self, path: str, source: str, *, timeout: float = 3600.0) -> dict[str, Any]:
        """Stream PUT a file to <path>; the server's JSON answer."""
        url = f"/api/v1/agent/hosts/{self.host_id}{path}"

        def chunks():
            with open(source, "rb") as f:
                while chunk := f.read(1 << 20):
                    yield chunk

        import os

        response = self._client.put(url, content=chunks(), headers={"Content-Length": str(os.path.getsize(source))}, timeout=httpx.Timeout(timeout, connect=10.0))
        if response.status_code >= 300:
            raise PermanentReportError(f"{url}: {response.status_code} {response.text[:300]}")
        return response.json()
