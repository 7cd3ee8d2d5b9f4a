"""The agent's identity on its host: a self-signed certificate (its SHA-256 thumbprint is what
the operator confirms) and the credential the server issues once the host is trusted.
Both live in the agent's state directory, readable by root only, with the server's command
public key that came with the credential (it verifies the commands on the host's queue)."""
from __future__ import annotations

import datetime
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

log = logging.getLogger(__name__)


@dataclass
class Credential:
    host_id: int
    token: str


def thumbprint_of(cert_pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem)
    digest = cert.fingerprint(hashes.SHA256()).hex().upper()
    return "SHA256:" + ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def load_or_create_certificate(state_dir: Path, hostname: str) -> str:
    """Return the thumbprint of the agent's certificate, creating key and certificate once."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_path, key_path = state_dir / "agent.crt", state_dir / "agent.key"
    if not cert_path.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64] or "virtcenter-agent")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .sign(key, hashes.SHA256())
        )
        _write_private(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        log.info("agent certificate created in %s", state_dir)
    return thumbprint_of(cert_path.read_bytes())


def load_credential(state_dir: Path) -> Credential | None:
    path = state_dir / "credential.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return Credential(host_id=int(data["host_id"]), token=data["token"])


def save_credential(state_dir: Path, credential: Credential) -> None:
    _write_private(state_dir / "credential.json", json.dumps({"host_id": credential.host_id, "token": credential.token}).encode())


COMMAND_KEY_FILE = "command-key.pub"


def load_command_public_key(state_dir: Path) -> str | None:
    """The server's command public key (PEM) received at registration, if any."""
    path = state_dir / COMMAND_KEY_FILE
    return path.read_text() if path.exists() else None


def save_command_public_key(state_dir: Path, pem: str) -> None:
    _write_private(state_dir / COMMAND_KEY_FILE, pem.encode())
