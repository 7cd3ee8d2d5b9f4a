"""The agent's console endpoint: a TLS listener that relays a VM's serial console to the server.

Its certificate: the host's from the cluster CA (workers.agent.host_tls) once the agent has
installed one, chosen at each connection so a renewal takes effect at the next console; before
that, the agent's own self-signed certificate, whose thumbprint the server pinned at
registration. The server accepts either (vcenter.dashboard.console).

Protocol (one connection = one console session):
1. the server sends one line: a command envelope signed with the server's key
   (vcenter.messaging.signing), name ``console.open``, for this host, not expired, with a
   ``command_id`` never seen before (nonce), args ``{"uuid": <libvirt domain UUID>}``;
2. the agent answers one JSON line, ``{"ok": true}`` or ``{"ok": false, "code", "message"}``;
3. then raw bytes both ways until either side closes: the server's bytes are keystrokes, the
   agent's are what the guest wrote on its serial port.
A listener that cannot verify (no server key) refuses everything.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from vcenter.hypervisor.base import DriverError
from vcenter.messaging.commands import UuidArgs
from vcenter.messaging.signing import CommandRefused, CommandVerifier

log = logging.getLogger(__name__)

MAX_REQUEST = 16384
POLL = 0.02  # seconds each direction of the relay waits before giving the other its turn


class NonceCache:
    """command_ids of console requests already used (until they would have expired anyway)."""

    def __init__(self, retention: float, max_entries: int = 10000):
        self.retention = retention
        self.max_entries = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def first_use(self, nonce: str) -> bool:
        now = time.monotonic()
        with self._lock:
            while self._seen and (next(iter(self._seen.values())) < now - self.retention or len(self._seen) >= self.max_entries):
                self._seen.popitem(last=False)
            if nonce in self._seen:
                return False
            self._seen[nonce] = now
            return True


def _server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


class ConsoleEndpoint:
    def __init__(
        self,
        driver: Any,
        verifier: CommandVerifier | None,
        state_dir: Path,
        address: str,
        port: int,
        retention: float,
        stop_event: threading.Event,
        driver_lock: threading.RLock | None = None,
        cluster_cert: tuple[Path, Path] | None = None,
    ):
        self.driver = driver
        self.verifier = verifier
        self.address = address
        self.port = port
        self.stop_event = stop_event
        self.nonces = NonceCache(retention)
        self.driver_lock = driver_lock or threading.RLock()
        self.self_signed = _server_context(state_dir / "agent.crt", state_dir / "agent.key")
        self.cluster_cert = cluster_cert  # (certificate, key) files from the cluster CA
        self._sock: socket.socket | None = None

    def context(self) -> ssl.SSLContext:
        """The host's cluster-CA certificate when installed (and matching its key: the key is
        written first during a renewal), else the self-signed one."""
        if self.cluster_cert is not None and all(p.is_file() for p in self.cluster_cert):
            try:
                return _server_context(*self.cluster_cert)
            except (ssl.SSLError, OSError) as exc:
                log.warning("console endpoint: the cluster CA's certificate is not usable (%s); serving the self-signed one", exc)
        return self.self_signed

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET6 if ":" in self.address else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.address, self.port))
        sock.listen(16)
        sock.settimeout(1.0)
        self._sock = sock
        threading.Thread(target=self._accept_loop, name="agent-console", daemon=True).start()
        log.info("console endpoint listening on %s:%s", self.address, self.port)

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self.stop_event.is_set():
            try:
                raw, peer = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self.stop_event.is_set():
                    return
                log.exception("console endpoint: accept failed")
                time.sleep(0.5)
                continue
            threading.Thread(target=self._serve, args=(raw, peer), name="agent-console-session", daemon=True).start()
        self._sock.close()

    def _serve(self, raw: socket.socket, peer: Any) -> None:
        raw.settimeout(10)
        try:
            conn = self.context().wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.warning("console endpoint: TLS handshake with %s failed: %s", peer, exc)
            raw.close()
            return
        console = None
        try:
            line = _read_line(conn)
            try:
                uuid = self._admit(line)
                with self.driver_lock:
                    console = self.driver.open_console(uuid)
            except CommandRefused as exc:
                log.warning("console request from %s refused: %s", peer, exc)
                conn.sendall(json.dumps({"ok": False, "code": exc.code, "message": exc.message}).encode() + b"\n")
                return
            except DriverError as exc:
                conn.sendall(json.dumps({"ok": False, "code": exc.code, "message": str(exc)}).encode() + b"\n")
                return
            conn.sendall(b'{"ok": true}\n')
            log.info("console of %s opened for %s", uuid, peer)
            self._relay(conn, console)
        except (OSError, ValueError) as exc:
            log.info("console session with %s ended: %s", peer, exc)
        finally:
            if console is not None:
                console.close()
            try:
                conn.close()
            except OSError:
                pass

    def _admit(self, line: bytes) -> str:
        if self.verifier is None:
            raise CommandRefused("UNSIGNED", "this agent has no server key to verify console requests")
        try:
            envelope = json.loads(line)
        except ValueError:
            raise CommandRefused("MALFORMED", "the request is not JSON") from None
        command = self.verifier.open(envelope)
        if command.name != "console.open":
            raise CommandRefused("MALFORMED", f"{command.name} is not a console request")
        if not self.nonces.first_use(command.command_id):
            raise CommandRefused("REPLAYED", f"console request {command.command_id} was already used")
        try:
            uuid = UuidArgs.model_validate(command.args).uuid
        except ValidationError:
            raise CommandRefused("MALFORMED", "the request names no domain") from None
        if getattr(self.driver, "open_console", None) is None:
            raise DriverError("CONSOLE_UNSUPPORTED", "this hypervisor driver has no serial console")
        return uuid

    def _relay(self, conn: ssl.SSLSocket, console: Any) -> None:
        """One thread does both directions: an SSL socket must not be read and written by
        two threads at once. Each direction waits at most POLL seconds for the other."""
        while not self.stop_event.is_set():
            data = console.read(timeout=POLL)
            if data is None:  # the guest side ended (domain stopped, console taken)
                return
            if data:
                conn.settimeout(10)
                conn.sendall(data)
            conn.settimeout(POLL)
            try:
                incoming = conn.recv(65536)
            except (TimeoutError, ssl.SSLWantReadError):
                continue
            if not incoming:  # the server closed
                return
            console.write(incoming)


def _read_line(conn: ssl.SSLSocket) -> bytes:
    buf = b""
    while b"\n" not in buf:
        chunk = conn.recv(4096)
        if not chunk:
            raise ValueError("closed before the request line")
        buf += chunk
        if len(buf) > MAX_REQUEST:
            raise ValueError("request line too long")
    line, rest = buf.split(b"\n", 1)
    if rest:
        raise ValueError("bytes after the request line before the answer")
    return line
