"""Identifiers: libvirt UUIDs, secret tokens and their hashes."""

from __future__ import annotations

import hashlib
import secrets
import uuid


def new_uuid() -> str:
    return str(uuid.uuid4())


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """Tokens are stored hashed: a leaked database gives no usable session."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_mac() -> str:
    # 52:54:00 is the QEMU/KVM locally administered prefix operators recognise.
    tail = secrets.token_bytes(3)
    return "52:54:00:" + ":".join(f"{b:02x}" for b in tail)
