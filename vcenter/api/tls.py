"""HTTPS for the API: the operator's certificate (``VCENTER_TLS_CERT``/``VCENTER_TLS_KEY``), or,
with ``VCENTER_TLS_SELF_SIGNED=true`` and none configured, a self-signed certificate generated
on first start in ``<key_dir>/tls`` and reused afterwards. Agents trust it by its file
(``VCENTER_API_CA``) or by its SHA-256 thumbprint (``VCENTER_API_THUMBPRINT``), which
`vcenter serve` prints on start. Plain HTTP when neither is set (the local lab).
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vcenter.core.settings import Settings

log = logging.getLogger(__name__)

SELF_SIGNED_DIR = "tls"


def thumbprint(cert_pem: bytes) -> str:
    digest = x509.load_pem_x509_certificate(cert_pem).fingerprint(hashes.SHA256()).hex().upper()
    return "SHA256:" + ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _names(settings: Settings) -> list[str]:
    names = ["localhost", "127.0.0.1", "::1", socket.gethostname()]
    names += [a.strip() for a in settings.api_host.split(",")]
    names += [n.strip() for n in settings.tls_hostnames.split(",")]
    names.append(urlsplit(settings.public_url).hostname or "")
    seen: list[str] = []
    for name in names:
        if name and name not in ("0.0.0.0", "::") and name not in seen:
            seen.append(name)
    return seen


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def create_self_signed(cert_path: Path, key_path: Path, names: list[str], days: int = 825) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (names[0] if names else "virtcenter")[:64]), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "virtcenter (self-signed)")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(_san(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=True,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    # The certificate appears last and atomically: its presence means the pair is complete.
    fd, tmp = tempfile.mkstemp(dir=cert_path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(tmp, 0o644)
    os.replace(tmp, cert_path)


def server_certificate(settings: Settings) -> tuple[Path, Path] | None:
    """(certificate, key) to serve HTTPS with, or None for plain HTTP."""
    if settings.tls_cert or settings.tls_key:
        if not (settings.tls_cert and settings.tls_key):
            raise SystemExit("VCENTER_TLS_CERT and VCENTER_TLS_KEY go together")
        return Path(settings.tls_cert), Path(settings.tls_key)
    if not settings.tls_self_signed:
        return None
    directory = Path(settings.key_dir) / SELF_SIGNED_DIR
    cert_path, key_path = directory / "api.crt", directory / "api.key"
    if not (cert_path.exists() and key_path.exists()):
        names = _names(settings)
        create_self_signed(cert_path, key_path, names)
        log.warning("self-signed API certificate created in %s for %s", cert_path, ", ".join(names))
    return cert_path, key_path
