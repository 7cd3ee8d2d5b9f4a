"""The cluster CA's key material and what it signs.

What this module decides:
- The CA lives in ``<key_dir>/ca``: ca.key (PKCS#8, mode 0600) and ca.crt. It is made on first
  use, by whichever server process gets there first: the directory is built aside and renamed
  into place, so two processes starting at once end up with one CA.
- The CA certificate: ECDSA P-256, basicConstraints CA with path length 0, keyCertSign and
  cRLSign (critical), valid ``ca_validity_days``; its common name carries a random suffix, so
  the CAs of two servers are told apart in a host's files.
- A host certificate (``sign_host``): the CSR's public key, the SANs the caller decided
  (vcenter.core.host_pki.host_sans), the usages of vcenter.core.host_pki, a random serial,
  valid from an hour back (clocks of hosts differ; QEMU refuses a certificate not yet valid).
- A CRL (``sign_crl``): every revoked serial still within its validity, next update after
  ``crl_validity``.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vcenter.core.host_pki import key_pem, new_key

CA_DIR = "ca"
CA_KEY = "ca.key"
CA_CERT = "ca.crt"
BACKDATE = dt.timedelta(hours=1)

_LEAF_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=True,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)
_CA_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "virtcenter"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass(frozen=True)
class Authority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def sign_host(self, public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey, common_name: str, sans: list[x509.GeneralName], now: dt.datetime, validity: dt.timedelta) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name[:64]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(min(now + validity, self.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_LEAF_USAGE, critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        return builder.sign(self.key, hashes.SHA256())

    def sign_crl(self, revoked: list[tuple[int, dt.datetime]], now: dt.datetime, crl_validity: dt.timedelta) -> str:
        builder = x509.CertificateRevocationListBuilder().issuer_name(self.cert.subject).last_update(now - dt.timedelta(minutes=5)).next_update(now + crl_validity)
        for serial, at in revoked:
            builder = builder.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(at).build())
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        return builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def _new_authority(now: dt.datetime, validity: dt.timedelta) -> Authority:
    key = new_key()
    name = _name(f"virtcenter cluster CA {secrets.token_hex(4)}")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(cert, key)


def load_or_create(key_dir: Path, now: dt.datetime, validity: dt.timedelta) -> Authority:
    """The CA of ``key_dir``, made there on first use (see the module docstring)."""
    directory = Path(key_dir) / CA_DIR
    if not (directory / CA_CERT).exists():
        Path(key_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
        made = _new_authority(now, validity)
        staging = Path(tempfile.mkdtemp(dir=key_dir, prefix=".ca-"))  # mode 0700
        try:
            fd = os.open(staging / CA_KEY, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(key_pem(made.key))
            (staging / CA_CERT).write_text(made.cert_pem)
            try:
                os.rename(staging, directory)  # fails when another process made it first
            except OSError:
                pass
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
    key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{directory / CA_KEY} is not an EC private key")
    return Authority(cert, key)
