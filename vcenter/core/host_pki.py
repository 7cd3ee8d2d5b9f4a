"""Host TLS certificates shared by the server's CA and the agent: the requests, the renewal
decision and the files libvirt and QEMU read.

What this module decides:
- A host's TLS key is ECDSA P-256, made on the host (the agent) and never sent: the host
  sends a certificate signing request (``make_csr``); its self-signature is the proof that
  the sender holds the key (checked by vcenter.services.certificates).
- One certificate per host serves libvirtd's TLS listener, the client side of its
  peer-to-peer migrations and QEMU's TLS migration streams: extended key usage serverAuth and
  clientAuth, key usage digitalSignature + keyEncipherment (critical), the usages QEMU's
  tls-creds-x509 sanity checks and libvirt's virNetTLSContext checks accept. Its SANs name the
  host as the inventory knows it (``host_sans``), never as the request says.
- When a certificate is replaced (``certificate_outdated``): once less than ``renew_before``
  of its life is left (``renew_due``), when it is missing, unreadable or not yet valid, when
  the current CA did not issue it, or when the CRL names it (a host removed and added again).
- Where the files go (``pki_files``): libvirt's default layout (Debian:
  /etc/pki/CA/cacert.pem and cacrl.pem; /etc/pki/libvirt/servercert.pem, clientcert.pem,
  private/serverkey.pem, private/clientkey.pem) and QEMU's tls-creds-x509 directory
  (/etc/pki/qemu: ca-cert.pem, ca-crl.pem, server-cert.pem, server-key.pem, client-cert.pem,
  client-key.pem), which libvirt's ``migrate_tls_x509_cert_dir`` defaults to.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def make_csr(key: ec.EllipticCurvePrivateKey, hostname: str) -> bytes:
    """A CSR (PEM) for ``key``; the subject is informative only: the CA names the host."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64] or "virtcenter-host")])
    return x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def host_sans(name: str, addresses: list[str]) -> list[x509.GeneralName]:
    """The subject alternative names of a host's certificate: its inventory name as a DNS name,
    each address as an IP address (or a DNS name when it is not an IP), without duplicates.
    libvirt and QEMU check the name the peer dialled against these."""
    sans: list[x509.GeneralName] = []
    for value in [name, *addresses]:
        value = value.strip()
        if not value:
            continue
        try:
            general: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(value))
        except ValueError:
            general = x509.DNSName(value.lower())
        if general not in sans:
            sans.append(general)
    return sans


def renew_due(not_before: dt.datetime | None, not_after: dt.datetime | None, now: dt.datetime, renew_before: dt.timedelta) -> bool:
    """Whether a certificate valid from ``not_before`` to ``not_after`` must be replaced now
    (None: there is none)."""
    if not_before is None or not_after is None:
        return True
    return now < not_before or now >= not_after - renew_before


def certificate_validity(pem: bytes) -> tuple[dt.datetime, dt.datetime] | None:
    """(not before, not after) of a PEM certificate, None when it cannot be read."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None
    return cert.not_valid_before_utc, cert.not_valid_after_utc


@dataclass(frozen=True)
class PkiFiles:
    """Every file a host's TLS material is written to, by role."""

    ca: tuple[Path, ...]
    crl: tuple[Path, ...]
    cert: tuple[Path, ...]
    key: tuple[Path, ...]

    def all(self) -> tuple[Path, ...]:
        return self.ca + self.crl + self.cert + self.key


def pki_files(ca_dir: Path, libvirt_dir: Path, qemu_dir: Path) -> PkiFiles:
    """libvirt's and QEMU's file names under the given directories (see the module docstring)."""
    return PkiFiles(
        ca=(ca_dir / "cacert.pem", qemu_dir / "ca-cert.pem"),
        crl=(ca_dir / "cacrl.pem", qemu_dir / "ca-crl.pem"),
        cert=(libvirt_dir / "servercert.pem", libvirt_dir / "clientcert.pem", qemu_dir / "server-cert.pem", qemu_dir / "client-cert.pem"),
        key=(libvirt_dir / "private/serverkey.pem", libvirt_dir / "private/clientkey.pem", qemu_dir / "server-key.pem", qemu_dir / "client-key.pem"),
    )


def crl_outdated(installed_pem: bytes | None, fetched_pem: bytes, now: dt.datetime) -> bool:
    """Whether the fetched CRL must replace the installed one: none (or an unreadable one) is
    installed, another CA issued it, it names other serials, or the installed one has less
    than half of its life left (libvirtd keeps the CRL it loaded, so it is renewed only then,
    not at every fetch: the server signs a fresh one each time)."""
    if installed_pem is None:
        return True
    try:
        old, new = x509.load_pem_x509_crl(installed_pem), x509.load_pem_x509_crl(fetched_pem)
    except ValueError:
        return True
    if old.issuer != new.issuer or {r.serial_number for r in old} != {r.serial_number for r in new}:
        return True
    if old.next_update_utc is None or new.next_update_utc is None:
        return True
    return old.next_update_utc - now < (new.next_update_utc - new.last_update_utc) / 2


def certificate_outdated(cert_pem: bytes | None, ca_pem: bytes, crl_pem: bytes, now: dt.datetime, renew_before: dt.timedelta) -> bool:
    """Whether the host's certificate must be replaced: ``renew_due``, or it is unreadable, was
    not issued by the current CA, or the CA's CRL names it (the host was removed and added
    again: its old certificate was revoked with the old inventory entry)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem) if cert_pem else None
        ca = x509.load_pem_x509_certificate(ca_pem)
        crl = x509.load_pem_x509_crl(crl_pem)
    except ValueError:
        return True
    if cert is None or renew_due(cert.not_valid_before_utc, cert.not_valid_after_utc, now, renew_before):
        return True
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return True
    return crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None


def issued_for(der: bytes, ca_pem: bytes, serials: list[str], address: str, now: dt.datetime) -> bool:
    """Whether a certificate a host presented (DER) is one the cluster CA issued to that host
    and that still stands: signed by the CA, within its validity, one of ``serials`` (the
    host's certificates neither revoked nor superseded, hex as the inventory records them) and
    naming ``address`` (the address the server dialled)."""
    try:
        cert = x509.load_der_x509_certificate(der)
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        return False
    if format(cert.serial_number, "x") not in serials:
        return False
    return any(general in names for general in host_sans(address, []))
