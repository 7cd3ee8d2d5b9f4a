"""The proof an agent gives at registration: that it holds the private key of the certificate
whose thumbprint the operator confirms. Shared by the server (which checks it) and the agent
(which makes it), so both spell the signed message the same way.

Vocabulary:
- nonce: what ``POST /api/v1/agent/register/challenge`` answers. Stateless: ``v1.<expiry
  epoch>.<random>.<mac>``, the MAC (HMAC-SHA256 with a key derived from the server's command
  signing key, so every API replica sharing ``key_dir`` checks it) binding the expiry, the
  registration token's hash and the host's trust state when it was issued. A nonce therefore
  works for one host's token only, expires after ``NONCE_TTL`` seconds, and goes stale when
  the host's trust state moves on: a request signed while the operator had not yet confirmed
  cannot be replayed to fetch the credential after the confirmation, and the request that gets
  the credential consumes the registration token.
- proof: the agent's certificate (PEM) and its signature (base64) over ``signed_message(nonce,
  registration token, host UUID)`` made with the certificate's key (ECDSA P-256/SHA-256 as
  the agent makes it, or Ed25519).

Decisions are pure functions here; the lookups and the answers are vcenter.services.inventory.hosts'.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

NONCE_VERSION = "v1"
NONCE_TTL = 120.0  # seconds: one challenge, one register call
_MESSAGE_PREFIX = b"virtcenter-agent-registration/v1"
_NONCE_KEY_LABEL = b"virtcenter registration nonce key v1"
TRUST_STATES = ("awaitingAgent", "awaitingConfirmation", "trusted")


class ProofRefused(Exception):
    """Why a registration proof does not hold: ``code`` is the API's stable code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def nonce_key(secret_material: bytes) -> bytes:
    """The HMAC key of the nonces, derived from server key material (never that material)."""
    return hashlib.sha256(_NONCE_KEY_LABEL + secret_material).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _mac(key: bytes, expires: int, random: str, token_hash: str, trust_state: str) -> str:
    text = "|".join((NONCE_VERSION, str(expires), random, token_hash, trust_state)).encode()
    return _b64(hmac.new(key, text, hashlib.sha256).digest())


def mint_nonce(key: bytes, token_hash: str, trust_state: str, now: datetime, ttl: float = NONCE_TTL) -> tuple[str, int]:
    """A nonce for the host whose registration token hashes to ``token_hash``; answers the
    nonce and its expiry (epoch seconds)."""
    expires = int(now.timestamp() + ttl)
    random = _b64(secrets.token_bytes(16))
    return f"{NONCE_VERSION}.{expires}.{random}.{_mac(key, expires, random, token_hash, trust_state)}", expires


def check_nonce(key: bytes, nonce: str, token_hash: str, trust_state: str, now: datetime) -> None:
    """Raise ProofRefused unless ``nonce`` was minted by this server for this token and this
    trust state, and has not expired."""
    parts = nonce.split(".")
    if len(parts) != 4 or parts[0] != NONCE_VERSION or not (parts[1].isascii() and parts[1].isdigit()) or len(parts[1]) > 12:
        raise ProofRefused("BAD_REGISTRATION_NONCE", "the nonce is not one this server issued")
    _, expires_text, random, mac = parts
    expires = int(expires_text)

    def minted_for(state: str) -> bool:
        return hmac.compare_digest(_mac(key, expires, random, token_hash, state), mac)

    if not minted_for(trust_state):
        if any(minted_for(state) for state in TRUST_STATES if state != trust_state):
            raise ProofRefused("REGISTRATION_NONCE_STALE", "the host's trust state changed since this nonce was issued: ask for a new one")
        raise ProofRefused("BAD_REGISTRATION_NONCE", "the nonce is not one this server issued for this registration token")
    if now.timestamp() > expires:
        raise ProofRefused("REGISTRATION_NONCE_EXPIRED", "the nonce expired: ask for a new one")


def signed_message(nonce: str, registration_token: str, host_uuid: str) -> bytes:
    """The bytes the agent signs: each field on its own line (none may hold a newline)."""
    fields = (nonce, registration_token, host_uuid)
    if any("\n" in f for f in fields):
        raise ProofRefused("BAD_REGISTRATION_PROOF", "the registration fields hold no newline")
    return b"\n".join((_MESSAGE_PREFIX, *(f.encode() for f in fields)))


def thumbprint(cert: x509.Certificate) -> str:
    """``SHA256:AA:BB:...``: the certificate's SHA-256 fingerprint as operators compare it."""
    digest = cert.fingerprint(hashes.SHA256()).hex().upper()
    return "SHA256:" + ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


@dataclass(frozen=True)
class Proven:
    thumbprint: str


def check_proof(certificate_pem: str, signature_b64: str, message: bytes) -> Proven:
    """The thumbprint of ``certificate_pem`` once ``signature_b64`` verifies over ``message``
    with the certificate's public key; else ProofRefused (BAD_REGISTRATION_PROOF)."""
    try:
        cert = x509.load_pem_x509_certificate(certificate_pem.encode())
    except ValueError:
        raise ProofRefused("BAD_REGISTRATION_PROOF", "the certificate is not a PEM X.509 certificate") from None
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        raise ProofRefused("BAD_REGISTRATION_PROOF", "the signature is not base64") from None
    key = cert.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, Ed25519PublicKey):
            key.verify(signature, message)
        else:
            raise ProofRefused("BAD_REGISTRATION_PROOF", "the certificate's key is neither an EC nor an Ed25519 key")
    except InvalidSignature:
        raise ProofRefused("BAD_REGISTRATION_PROOF", "the signature does not verify with the certificate's key") from None
    return Proven(thumbprint=thumbprint(cert))
