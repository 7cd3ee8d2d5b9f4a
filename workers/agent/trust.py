"""What the agent accepts from its queue: only commands the server signed for this host, not
expired, and not replays of a command whose result was already reported.

Vocabulary:
- gate: ``CommandGate.admit`` opens a message (vcenter.messaging.signing) or raises
  CommandRefused; the caller acknowledges a refused message and does nothing else.
- reported: a command whose outcome reached the server. Only then is its ``command_id``
  remembered, so that a genuine redelivery (the agent died between the hypervisor call and
  the report) still runs again, idempotently, while a replay after the report is refused
  (code REPLAY) without effect.
- in flight: a command this process is running now; a second delivery of it meanwhile is
  refused (IN_PROGRESS): the first one will report. This set dies with the process, so a
  crash never leaves a command refused for good.
- replay cache: ``command_id -> keep until`` in an append-only file in the agent's state
  directory, compacted now and then; bounded by retention (longer than any command's
  lifetime, after which the signature's expiry refuses it anyway) and by a maximum size.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vcenter.core.clock import as_utc
from vcenter.messaging.contracts import Command
from vcenter.messaging.signing import CommandRefused, CommandVerifier

log = logging.getLogger(__name__)

REPLAY_FILE = "replay-cache"


class ReplayCache:
    """The command ids whose result was reported, each until a deadline (epoch seconds)."""

    def __init__(self, path: Path, retention: float, max_entries: int, clock: Callable[[], float] = time.time):
        self.path = path
        self.retention = retention
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, float] = OrderedDict()
        self._lines = 0
        self._lock = threading.Lock()
        self._load()

    def __len__(self) -> int:
        return len(self._entries)

    def _load(self) -> None:
        if not self.path.exists():
            return
        now = self._clock()
        for line in self.path.read_text().splitlines():
            parts = line.split()
            if len(parts) != 2:
                continue  # a torn last line after a crash
            try:
                keep_until = float(parts[1])
            except ValueError:
                continue
            if keep_until > now:
                self._entries.pop(parts[0], None)
                self._entries[parts[0]] = keep_until
            self._lines += 1
        self._evict()
        self._compact()

    def reported(self, command_id: str) -> bool:
        with self._lock:
            keep_until = self._entries.get(command_id)
            return keep_until is not None and keep_until > self._clock()

    def remember(self, command_id: str, expires_at: float | None) -> None:
        if not command_id or any(c.isspace() for c in command_id):
            return
        now = self._clock()
        keep_until = max(now + self.retention, expires_at or 0.0)
        with self._lock:
            self._entries.pop(command_id, None)
            self._entries[command_id] = keep_until
            self._evict()
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, f"{command_id} {keep_until:.3f}\n".encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            self._lines += 1
            if self._lines > 2 * len(self._entries) + 1000:
                self._compact()

    def _evict(self) -> None:
        now = self._clock()
        for command_id in [c for c, until in self._entries.items() if until <= now]:
            del self._entries[command_id]
        while len(self._entries) > self.max_entries:
            command_id, _ = self._entries.popitem(last=False)
            log.warning("replay cache full (%d): forgetting command %s early", self.max_entries, command_id)

    def _compact(self) -> None:
        """Rewrite the file with the live entries only (atomically)."""
        if not self.path.exists():
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.writelines(f"{c} {until:.3f}\n" for c, until in self._entries.items())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._lines = len(self._entries)


class CommandGate:
    def __init__(self, verifier: CommandVerifier, replay: ReplayCache):
        self.verifier = verifier
        self.replay = replay
        self._in_flight: set[str] = set()
        self._lock = threading.Lock()

    @property
    def host_id(self) -> int:
        return self.verifier.host_id

    def admit(self, payload: Any) -> Command:
        """The verified command, now in flight; or CommandRefused."""
        command = self.verifier.open(payload)
        if self.replay.reported(command.command_id):
            raise CommandRefused("REPLAY", f"command {command.command_id} ({command.name}) already ran and was reported")
        with self._lock:
            if command.command_id in self._in_flight:
                raise CommandRefused("IN_PROGRESS", f"command {command.command_id} ({command.name}) is running here now")
            self._in_flight.add(command.command_id)
        return command

    def reported(self, command: Command) -> None:
        """Its outcome reached the server: from now on a delivery of it is a replay."""
        expires = as_utc(command.expires_at).timestamp() if command.expires_at else None
        try:
            self.replay.remember(command.command_id, None if expires is None else expires + self.verifier.clock_skew)
        finally:
            self.release(command)

    def release(self, command: Command) -> None:
        """Not reported (failed, skipped): a later delivery may run it."""
        with self._lock:
            self._in_flight.discard(command.command_id)


def make_gate(public_key_pem: str, host_id: int, state_dir: Path, clock_skew: float, retention: float, max_entries: int) -> CommandGate:
    from vcenter.messaging.signing import load_public_key

    verifier = CommandVerifier(load_public_key(public_key_pem), host_id, clock_skew)
    return CommandGate(verifier, ReplayCache(state_dir / REPLAY_FILE, retention, max_entries))
