"""The lab's certificate authority: X.509 certificates for QEMU's TLS migration streams.

What this module decides:
- One CA per lab (``<lab workdir>/ca``: ca-cert.pem, ca-key.pem), made when the lab comes up.
- Every lab host gets a directory in the layout QEMU's ``tls-creds-x509`` object (and libvirt's
  ``migrate_tls_x509_cert_dir``) reads: ca-cert.pem, server-cert.pem, server-key.pem,
  client-cert.pem, client-key.pem. The target QEMU of a migration is the TLS server and, with
  ``migrate_tls_x509_verify = 1``, checks the source's client certificate; the source QEMU checks
  the target's server certificate against the host address it connects to (libvirt sets
  tls-hostname to it), so both certificates carry the host's address as IP SAN and its name as
  DNS SAN.
- Keys are ECDSA P-256: generating one costs well under a millisecond (RSA-2048: ~50 ms), so
  certificates for every host are made at every ``up`` without slowing it. Key usage and
  extended key usage are the ones QEMU checks (qcrypto_tls_creds_x509 sanity checks): CA with
  keyCertSign, leaves with digitalSignature + keyEncipherment and serverAuth / clientAuth.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca-cert.pem"
CA_KEY = "ca-key.pem"
FILES = ("ca-cert.pem", "server-cert.pem", "server-key.pem", "client-cert.pem", "client-key.pem")
_VALID_DAYS = 3650


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "virtcenter lab"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.timezone.utc)
    # A day back: QEMU rejects a certificate not yet active, and clocks of namespaces are one.
    return builder.not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=_VALID_DAYS))


@dataclass
class LabCA:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, common_name: str = "virtcenter lab CA") -> "LabCA":
        key = _key()
        builder = _validity(x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name)).public_key(key.public_key()).serial_number(x509.random_serial_number()))
        builder = (
            builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        )
        return cls(builder.sign(key, hashes.SHA256()), key)

    @classmethod
    def load_or_create(cls, directory: Path) -> "LabCA":
        """The CA kept in ``directory`` (ca-cert.pem, ca-key.pem), made there when absent."""
        directory = Path(directory)
        cert_file, key_file = directory / CA_CERT, directory / CA_KEY
        if cert_file.exists() and key_file.exists():
            cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
            key = serialization.load_pem_private_key(key_file.read_bytes(), None)
            return cls(cert, key)  # type: ignore[arg-type]
        ca = cls.create()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write(key_file, _key_pem(ca.key), 0o600)
        _write(cert_file, ca.cert_pem)
        return ca

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, name: str, addresses: list[str], server: bool) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) of a server or client certificate for host ``name``."""
        key = _key()
        sans: list[x509.GeneralName] = [x509.DNSName(name)]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
        purpose = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = _validity(x509.CertificateBuilder().subject_name(_name(name)).issuer_name(self.cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number()))
        builder = (
            builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    def install_host(self, directory: Path, name: str, addresses: list[str]) -> Path:
        """Write a host's cert dir (the FILES layout QEMU expects) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True, mode=0o755)
        for role in ("server", "client"):
            cert, key = self.issue(name, addresses, server=role == "server")
            _write(directory / f"{role}-key.pem", key, 0o600)
            _write(directory / f"{role}-cert.pem", cert)
        _write(directory / "ca-cert.pem", self.cert_pem)
        return directory
