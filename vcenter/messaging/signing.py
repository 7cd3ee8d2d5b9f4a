"""Signed commands: the server signs every command it puts on a host queue; the agent runs only
what it can verify. A host that can touch the broker (every agent can: Redis ACLs cannot
confine a Celery consumer to its own queue) can then neither forge a command, nor move a
genuine one to another host's queue, nor replay it there or later.

Vocabulary:
- signing key: the server's Ed25519 private key (a PEM file readable by the server processes
  only; generated on first use). Its public half goes to each agent in the registration answer
  (or by the setting ``VCENTER_COMMAND_PUBLIC_KEY``).
- envelope: what travels on the queue, ``{"v": 1, "kid": <key id>, "body": <canonical JSON of
  the Command>, "sig": <base64 Ed25519 signature of the body's UTF-8 bytes>}``. The body is a
  string, so the agent verifies exactly the bytes that were signed before parsing anything.
- the signed body names its target ``host_id``, carries ``issued_at`` and ``expires_at`` and
  the ``command_id``, which is both the idempotency key and the nonce of the agent's replay
  check (a re-send of a task's command keeps the id and gets a fresh expiry).
- refusal: ``CommandRefused`` with a code (UNSIGNED, BAD_SIGNATURE, MALFORMED, WRONG_HOST,
  NO_EXPIRY, EXPIRED); the agent logs it, acknowledges the message and does nothing else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import ValidationError

from vcenter.core.clock import as_utc, utcnow
from vcenter.core.settings import Settings
from vcenter.messaging.contracts import PROTOCOL_VERSION, Command

log = logging.getLogger(__name__)

ENVELOPE_VERSION = 1
SIGNING_KEY_FILE = "command-signing.pem"


class CommandRefused(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no spaces, ASCII only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_pem(private_key: Ed25519PrivateKey) -> str:
    return private_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


# --- key files ---------------------------------------------------------------------------
def signing_key_path(settings: Settings) -> Path:
    return Path(settings.command_signing_key) if settings.command_signing_key else Path(settings.key_dir) / SIGNING_KEY_FILE


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """Load the PEM private key at ``path``, creating it (mode 0600) if absent. Safe when
    several server processes start at once: the file appears atomically, and the first one
    wins."""
    try:
        return _load_or_create(path)
    except PermissionError as exc:
        raise PermissionError(f"command signing key {path}: {exc.strerror}; set VCENTER_KEY_DIR (or VCENTER_COMMAND_SIGNING_KEY) to a directory this server process may write") from exc


def _load_or_create(path: Path) -> Ed25519PrivateKey:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".signing-", suffix=".tmp")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # fails if another process created it first
                log.info("command signing key created in %s", path)
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return loaded


def load_public_key(pem_or_path: str | bytes) -> Ed25519PublicKey:
    """A public key from its PEM text, or from the path of a PEM file."""
    data = pem_or_path.encode() if isinstance(pem_or_path, str) else pem_or_path
    if not data.lstrip().startswith(b"-----BEGIN"):
        data = Path(data.decode()).read_bytes()
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the command public key is not an Ed25519 key")
    return key


# --- signing and verifying -----------------------------------------------------------------
class CommandSigner:
    """Server side: turns a Command (or its JSON dict) into a signed envelope."""

    def __init__(self, private_key: Ed25519PrivateKey, ttl: float):
        self._key = private_key
        self.ttl = ttl
        self.key_id = key_id(private_key.public_key())

    @classmethod
    def from_settings(cls, settings: Settings) -> "CommandSigner":
        ttl = settings.command_ttl if settings.command_ttl is not None else settings.task_queue_timeout
        return cls(load_or_create_signing_key(signing_key_path(settings)), ttl)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    @property
    def public_key_pem(self) -> str:
        return public_key_pem(self._key)

    def seal(self, command: Command | dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
        cmd = command if isinstance(command, Command) else Command.model_validate(command)
        # The protocol version this server speaks travels inside the signed body.
        cmd = cmd.model_copy(update={"expires_at": (now or utcnow()) + timedelta(seconds=self.ttl), "version": PROTOCOL_VERSION})
        body = canonical_json(cmd.model_dump(mode="json"))
        signature = self._key.sign(body.encode())
        return {"v": ENVELOPE_VERSION, "kid": self.key_id, "body": body, "sig": base64.b64encode(signature).decode()}


def is_envelope(payload: Any) -> bool:
    return isinstance(payload, dict) and "body" in payload and "sig" in payload


def claimed_command(payload: Any) -> str:
    """For logs only: what an unverified message claims to be ("name command_id for host N")."""
    try:
        data = json.loads(payload["body"]) if is_envelope(payload) else payload
        return f"{data.get('name')} {data.get('command_id')} for host {data.get('host_id')}"
    except Exception:
        return "unreadable message"


class CommandVerifier:
    """Agent side: opens an envelope meant for ``host_id`` or raises CommandRefused."""

    def __init__(self, public_key: Ed25519PublicKey, host_id: int, clock_skew: float = 60.0):
        self._key = public_key
        self.host_id = host_id
        self.clock_skew = clock_skew
        self.key_id = key_id(public_key)

    def open(self, envelope: Any, now: datetime | None = None) -> Command:
        if not is_envelope(envelope):
            raise CommandRefused("UNSIGNED", "the message is not a signed command envelope")
        body, sig = envelope["body"], envelope["sig"]
        if envelope.get("v") != ENVELOPE_VERSION or not isinstance(body, str) or not isinstance(sig, str):
            raise CommandRefused("MALFORMED", f"unsupported envelope (version {envelope.get('v')!r})")
        try:
            signature = base64.b64decode(sig, validate=True)
            self._key.verify(signature, body.encode())
        except (InvalidSignature, binascii.Error, ValueError):
            raise CommandRefused("BAD_SIGNATURE", f"signature does not verify with the server's key {self.key_id} (envelope says key {envelope.get('kid')!r})") from None
        try:
            command = Command.model_validate(json.loads(body))
        except (ValueError, ValidationError) as exc:
            raise CommandRefused("MALFORMED", f"signed body is not a command: {exc}") from None
        if command.host_id != self.host_id:
            raise CommandRefused("WRONG_HOST", f"command {command.command_id} is for host {command.host_id}, not this host {self.host_id}")
        if command.expires_at is None:
            raise CommandRefused("NO_EXPIRY", f"command {command.command_id} carries no expiry")
        current = now or utcnow()
        if current > as_utc(command.expires_at) + timedelta(seconds=self.clock_skew):
            raise CommandRefused("EXPIRED", f"command {command.command_id} expired at {command.expires_at.isoformat()}")
        return command
