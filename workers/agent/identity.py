"""The agent's identity on its host: a self-signed certificate (its SHA-256 thumbprint is what
the operator confirms; registration proves the agent holds its key) and the credential the
server issues once the host is trusted. Both live in the agent's state directory, readable by root only, with the server's command
public key that came with the credential (it verifies the commands on the host's queue)."""

from __future__ import annotations

import base64
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

from vcenter.core import registration

log = logging.getLogger(__name__)


@dataclass
class Credential:
    host_id: int
    token: str


def thumbprint_of(cert_pem: bytes) -> str:
    return registration.thumbprint(x509.load_pem_x509_certificate(cert_pem))


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


@dataclass
class AgentIdentity:
    """The agent's key and self-signed certificate: what registration proves possession of."""

    key: ec.EllipticCurvePrivateKey
    cert_pem: bytes

    @property
    def thumbprint(self) -> str:
        return thumbprint_of(self.cert_pem)

    def registration_proof(self, nonce: str, registration_token: str, host_uuid: str) -> dict[str, str]:
        """The fields of the register request that prove this identity (see
        vcenter.core.registration): the certificate, the signature, and the thumbprint."""
        message = registration.signed_message(nonce, registration_token, host_uuid)
        signature = self.key.sign(message, ec.ECDSA(hashes.SHA256()))
        return {"certificate": self.cert_pem.decode(), "signature": base64.b64encode(signature).decode(), "thumbprint": self.thumbprint}


def new_identity(hostname: str) -> AgentIdentity:
    """A fresh EC P-256 key and a ten-year self-signed certificate for it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64] or "virtcenter-agent")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return AgentIdentity(key=key, cert_pem=cert.public_bytes(serialization.Encoding.PEM))


def load_or_create_identity(state_dir: Path, hostname: str) -> AgentIdentity:
    """The agent's key and certificate from its state directory, created there once."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_path, key_path = state_dir / "agent.crt", state_dir / "agent.key"
    if not cert_path.exists():
        identity = new_identity(hostname)
        _write_private(key_path, identity.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        cert_path.write_bytes(identity.cert_pem)
        log.info("agent certificate created in %s", state_dir)
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SystemExit(f"{key_path} is not an EC private key")
    return AgentIdentity(key=key, cert_pem=cert_path.read_bytes())


def load_or_create_certificate(state_dir: Path, hostname: str) -> str:
    """Return the thumbprint of the agent's certificate, creating key and certificate once."""
    return load_or_create_identity(state_dir, hostname).thumbprint


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
