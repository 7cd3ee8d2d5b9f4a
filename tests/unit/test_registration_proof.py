"""The registration proof's pure decisions (vcenter.core.registration): nonces bound to a
token, a trust state and an expiry; signatures by the certificate's key only (EC as the agent
makes them, Ed25519 too)."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from vcenter.core import registration as reg
from workers.agent.identity import new_identity

KEY = reg.nonce_key(b"server secret")
NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.timezone.utc)


def _code(call) -> str:
    with pytest.raises(reg.ProofRefused) as refused:
        call()
    return refused.value.code


def test_a_nonce_holds_for_its_token_state_and_lifetime_only():
    nonce, expires = reg.mint_nonce(KEY, "hash-a", "awaitingConfirmation", NOW)
    assert expires == int(NOW.timestamp() + reg.NONCE_TTL)
    reg.check_nonce(KEY, nonce, "hash-a", "awaitingConfirmation", NOW + dt.timedelta(seconds=reg.NONCE_TTL - 1))
    assert _code(lambda: reg.check_nonce(KEY, nonce, "hash-a", "awaitingConfirmation", NOW + dt.timedelta(seconds=reg.NONCE_TTL + 1))) == "REGISTRATION_NONCE_EXPIRED"
    assert _code(lambda: reg.check_nonce(KEY, nonce, "hash-a", "trusted", NOW)) == "REGISTRATION_NONCE_STALE"
    assert _code(lambda: reg.check_nonce(KEY, nonce, "hash-b", "awaitingConfirmation", NOW)) == "BAD_REGISTRATION_NONCE"
    assert _code(lambda: reg.check_nonce(reg.nonce_key(b"other server"), nonce, "hash-a", "awaitingConfirmation", NOW)) == "BAD_REGISTRATION_NONCE"
    version, expiry, random, mac = nonce.split(".")
    later = f"{version}.{int(expiry) + 3600}.{random}.{mac}"  # a longer life, unsigned
    assert _code(lambda: reg.check_nonce(KEY, later, "hash-a", "awaitingConfirmation", NOW)) == "BAD_REGISTRATION_NONCE"
    for garbage in ("", "v1", "v2.1.a.b", "v1.١٢.a.b", "v1.-5.a.b", "v1.1.a.b.c"):
        assert _code(lambda: reg.check_nonce(KEY, garbage, "hash-a", "awaitingConfirmation", NOW)) == "BAD_REGISTRATION_NONCE", garbage


def test_the_signature_must_be_by_the_certificates_key_over_the_same_fields():
    agent, other = new_identity("h1"), new_identity("h2")
    proof = agent.registration_proof("n", "token", "uuid")
    message = reg.signed_message("n", "token", "uuid")
    assert reg.check_proof(proof["certificate"], proof["signature"], message).thumbprint == agent.thumbprint == proof["thumbprint"]
    assert _code(lambda: reg.check_proof(proof["certificate"], proof["signature"], reg.signed_message("n", "token", "uuid2"))) == "BAD_REGISTRATION_PROOF"
    stolen = other.registration_proof("n", "token", "uuid")["signature"]
    assert _code(lambda: reg.check_proof(proof["certificate"], stolen, message)) == "BAD_REGISTRATION_PROOF"
    assert _code(lambda: reg.check_proof("garbage", proof["signature"], message)) == "BAD_REGISTRATION_PROOF"
    assert _code(lambda: reg.check_proof(proof["certificate"], "not base64!", message)) == "BAD_REGISTRATION_PROOF"
    assert _code(lambda: reg.signed_message("n\nx", "token", "uuid")) == "BAD_REGISTRATION_PROOF"


def test_an_ed25519_certificate_proves_too():
    key = Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ed")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(1).not_valid_before(NOW).not_valid_after(NOW + dt.timedelta(days=1)).sign(key, None)
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    message = reg.signed_message("n", "t", "u")
    proven = reg.check_proof(pem, base64.b64encode(key.sign(message)).decode(), message)
    assert proven.thumbprint == "SHA256:" + ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))
