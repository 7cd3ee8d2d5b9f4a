"""A host's TLS certificate from the cluster CA: issuance from the host's CSR, the record of
every certificate issued, revocation and the CRL.

What this module decides:
- Who gets a certificate: a trusted host's agent (the route authenticates its credential),
  for a CSR whose self-signature verifies (proof that the agent holds the key; the key never
  leaves the host) over an ECDSA P-256/P-384 or RSA >= 2048 key. Refusals: BAD_CSR (not a
  CSR, or its signature does not verify), CSR_KEY_UNSUPPORTED.
- What it names: the host's inventory name and address (vcenter.core.host_pki.host_sans);
  names the CSR asks for are ignored, so an agent cannot obtain a certificate for another
  host's address.
- Every issued certificate is a HostCertificate row (serial, expiry). Removing a host
  revokes every one of its certificates that has not expired (reason cessationOfOperation);
  a new certificate for a host (a renewal, or a host that lost its key) revokes the ones
  issued to it before (reason superseded): one valid certificate per host, so a key left on
  a disk or in a backup opens nothing once replaced. The CRL lists the revoked ones until
  they expire.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import select
from sqlalchemy.orm import Session

from vcenter.core.clock import utcnow
from vcenter.core.errors import Invalid
from vcenter.core.host_pki import host_sans
from vcenter.core.settings import Settings
from vcenter.db.models import Host, HostCertificate
from vcenter.services.certificates import authority
from vcenter.services.tasks.events import record_event


class CsrRefused(Invalid):
    code = "BAD_CSR"


def ca(settings: Settings) -> authority.Authority:
    return authority.load_or_create(Path(settings.key_dir), utcnow(), dt.timedelta(days=settings.ca_validity_days))


def checked_public_key(csr_pem: str) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    """The public key of a CSR whose self-signature verifies (proof of possession)."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError:
        raise CsrRefused("not a PEM certificate signing request") from None
    if not csr.is_signature_valid:
        raise CsrRefused("the CSR's signature does not verify: it was not signed with the key it names")
    key = csr.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in ("secp256r1", "secp384r1"):
        return key
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048:
        return key
    raise CsrRefused("the CSR's key must be ECDSA P-256/P-384 or RSA of at least 2048 bits", code="CSR_KEY_UNSUPPORTED")


def issue(session: Session, settings: Settings, host: Host, csr_pem: str) -> dict[str, Any]:
    """Sign ``host``'s CSR; answers the certificate, the CA certificate and when to renew."""
    public_key = checked_public_key(csr_pem)
    now = utcnow()
    authority_ = ca(settings)
    cert = authority_.sign_host(public_key, host.name, host_sans(host.name, [host.address]), now, dt.timedelta(days=settings.host_cert_validity_days))
    revoke_host(session, host, reason="superseded")
    row = HostCertificate(host_id=host.id, host_name=host.name, serial=format(cert.serial_number, "x"), issued_at=now, not_after=cert.not_valid_after_utc)
    session.add(row)
    record_event(
        session,
        "host.certificate_issued",
        f"host {host.name}: TLS certificate {row.serial} issued, valid until {row.not_after.isoformat()}",
        object_type="host",
        object_id=host.id,
        object_name=host.name,
        data={"serial": row.serial, "not_after": row.not_after.isoformat()},
    )
    return {
        "certificate": cert.public_bytes(serialization.Encoding.PEM).decode(),
        "ca_certificate": authority_.cert_pem,
        "serial": row.serial,
        "not_after": row.not_after,
    }


def revoke_host(session: Session, host: Host, reason: str = "cessationOfOperation") -> list[str]:
    """Revoke every unexpired certificate of ``host``; the serials revoked."""
    now = utcnow()
    rows = session.scalars(select(HostCertificate).where(HostCertificate.host_id == host.id, HostCertificate.revoked_at.is_(None), HostCertificate.not_after > now)).all()
    for row in rows:
        row.revoked_at = now
        row.revocation_reason = reason
    if rows:
        serials = [r.serial for r in rows]
        record_event(
            session,
            "host.certificate_revoked",
            f"host {host.name}: TLS certificate(s) {', '.join(serials)} revoked ({reason})",
            object_type="host",
            object_id=host.id,
            object_name=host.name,
            data={"serials": serials},
        )
    return [r.serial for r in rows]


def standing_serials(session: Session, host: Host) -> list[str]:
    """The serials (hex) of ``host``'s certificates neither revoked nor expired: after a
    renewal, only the newest (issue revokes its predecessors)."""
    now = utcnow()
    return list(session.scalars(select(HostCertificate.serial).where(HostCertificate.host_id == host.id, HostCertificate.revoked_at.is_(None), HostCertificate.not_after > now)))


def trust_material(session: Session, settings: Settings) -> dict[str, Any]:
    """The CA certificate and a fresh CRL of every revoked certificate not yet expired."""
    now = utcnow()
    revoked = session.execute(select(HostCertificate.serial, HostCertificate.revoked_at).where(HostCertificate.revoked_at.is_not(None), HostCertificate.not_after > now)).all()
    authority_ = ca(settings)
    crl = authority_.sign_crl([(int(serial, 16), at) for serial, at in revoked], now, dt.timedelta(hours=settings.crl_validity_hours))
    return {"ca_certificate": authority_.cert_pem, "crl": crl}
