"""The health and metrics listener of a process that is no web server (worker, beat, HA
monitor, agent): a small plain-HTTP server on its own port serving

- ``/livez``: 200 while the process's main loop turns (``LoopWatch``: stamped on every turn;
  503 once it has not turned for ``process_stall_after`` seconds), whatever its dependencies do;
- ``/readyz``: 200 when its dependencies answer (database, Redis, the hypervisor: the checks the
  process hands in), else 503 naming the one that does not;
- ``/metrics``: the process's metrics (vcenter.observability.metrics) in Prometheus' text
  format, under the API's rule for /metrics: with ``metrics_token`` set, only the bearer of
  that token; without it, plain, for a listener bound to an address only Prometheus reaches.

Anything else is 404; only GET and HEAD. The listener is off unless the process's setting
names an address (``worker_metrics_listen``, ``beat_metrics_listen``, ``ha_metrics_listen``,
``agent_metrics_listen``, or the ``--metrics-listen`` option of its command).
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from vcenter.observability.metrics import LOOP_AGE, REGISTRY

log = logging.getLogger(__name__)

Check = Callable[[], None]  # returns when the dependency answers, raises otherwise


class LoopWatch:
    """When the process's loop last turned; ``stamp`` on every turn. ``idle_ok`` is for a loop
    that legitimately waits (a standby beat blocked on the scheduler lock): live while it says so."""

    def __init__(self, stall_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_after = stall_after
        self.clock = clock
        self.last = clock()
        self.waiting: str | None = None

    def stamp(self) -> None:
        self.last = self.clock()
        self.waiting = None

    def wait(self, why: str) -> None:
        """The loop is parked on purpose (standing by for a lock): live, and says why."""
        self.last = self.clock()
        self.waiting = why

    def age(self) -> float:
        return 0.0 if self.waiting else max(0.0, self.clock() - self.last)

    def live(self) -> bool:
        return self.age() <= self.stall_after


def bearer_of(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def is_metrics_token(token: str | None, metrics_token: str | None) -> bool:
    """The Prometheus credential, compared in constant time; never true when none is set."""
    return bool(token and metrics_token) and hmac.compare_digest(token.encode(), metrics_token.encode())  # type: ignore[union-attr]


def may_scrape(authorization: str | None, metrics_token: str | None) -> bool:
    """/metrics on a process listener: the metrics token when one is set, else anyone who
    reaches the address (bind it where only Prometheus does)."""
    return not metrics_token or is_metrics_token(bearer_of(authorization), metrics_token)


def readiness(checks: Mapping[str, Check]) -> tuple[bool, dict[str, str]]:
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            check()
            results[name] = "ok"
        except Exception as exc:  # report, do not crash: this is the health check
            results[name] = f"error: {type(exc).__name__}"
    return all(v == "ok" for v in results.values()), results


class ProcessListener:
    """The listener of one process, serving in a daemon thread until ``stop``."""

    def __init__(self, address: str, role: str, watch: LoopWatch, checks: Mapping[str, Check], metrics_token: str | None, registry: Any = REGISTRY) -> None:
        host, _, port = address.rpartition(":")
        self.role = role
        self.watch = watch
        self.checks = checks
        self.metrics_token = metrics_token
        self.registry = registry
        listener = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "virtcenter"
            sys_version = ""

            def do_GET(self) -> None:
                status, content_type, body = listener.answer(self.path, self.headers.get("authorization"))
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Bearer realm="metrics"')
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_HEAD = do_GET

            def log_message(self, format: str, *args: Any) -> None:  # Prometheus scrapes every few seconds: no line each
                log.debug("%s " + format, self.address_string(), *args)

        self.server = ThreadingHTTPServer((host.strip("[]"), int(port)), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name=f"{role}-health", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def answer(self, path: str, authorization: str | None) -> tuple[int, str, bytes]:
        """(status, content type, body) of a GET of ``path``."""
        path = path.split("?", 1)[0]
        if path == "/livez":
            LOOP_AGE.set(self.watch.age())
            live = self.watch.live()
            body: dict[str, Any] = {"status": "ok" if live else "stalled", "role": self.role, "loop_age_seconds": round(self.watch.age(), 3)}
            if self.watch.waiting:
                body["waiting"] = self.watch.waiting
            return (200 if live else 503), "application/json", json.dumps(body).encode()
        if path == "/readyz":
            ready, checks = readiness(self.checks)
            return (200 if ready else 503), "application/json", json.dumps({"status": "ok" if ready else "unavailable", "role": self.role, "checks": checks}).encode()
        if path == "/metrics":
            if not may_scrape(authorization, self.metrics_token):
                return 401, "application/json", json.dumps({"code": "NOT_AUTHENTICATED", "message": "/metrics needs the metrics token as 'Authorization: Bearer <token>'"}).encode()
            LOOP_AGE.set(self.watch.age())
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        return 404, "application/json", json.dumps({"code": "NOT_FOUND", "message": "this listener serves /livez, /readyz and /metrics"}).encode()

    def start(self) -> "ProcessListener":
        self.thread.start()
        log.info("%s: health and metrics on http://%s:%s (/livez, /readyz, /metrics)", self.role, *self.server.server_address[:2])
        return self

    def stop(self) -> None:
        if self.thread.is_alive():  # shutdown() waits for serve_forever, which must have started
            self.server.shutdown()
        self.server.server_close()


def start_listener(role: str, address: str | None, watch: LoopWatch, checks: Mapping[str, Check], metrics_token: str | None) -> ProcessListener | None:
    """Start ``role``'s listener on ``address`` (None: off); the process's info metric either way."""
    from vcenter.core.release import release
    from vcenter.observability.metrics import set_role

    set_role(role, release())
    if not address:
        return None
    return ProcessListener(address, role, watch, checks, metrics_token).start()
