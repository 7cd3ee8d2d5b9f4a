"""The audit of refused credentials: every user token or session, password, agent credential,
registration token and registration proof the API refuses is counted, per source address,
credential kind and minute, in ``refused_credentials``.

Why aggregated and in the database: a flood of guesses must not fill the audit log (one row per
source, kind and minute, however many requests), and the count must hold across API replicas
(an upsert, ``INSERT ... ON CONFLICT DO UPDATE SET count = count + 1``, on SQLite and
PostgreSQL). It runs in a transaction of its own: the request's transaction rolls back with
the error.

Vocabulary:
- credential kind: ``user_token`` (a bearer token or login session: unknown, revoked, expired,
  of a disabled user), ``password`` (a refused login, a locked-out or rate-limited one),
  ``agent`` (a host credential), ``registration`` (a one-time registration token),
  ``registration_proof`` (a valid registration token whose proof of the agent key failed: the
  signature, the certificate or the nonce).
- source: the client address as vcenter.core.audit.request_source holds it; an IPv6 address
  counts as its /64, so that one machine cannot make a row per request from its own prefix.

Not counted: a request that presented no credential at all (a missing ``Authorization``
header): nothing was refused, nothing was guessed.
"""

from __future__ import annotations

import ipaddress
import logging
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from vcenter.core.clock import utcnow
from vcenter.db.models import RefusedCredential

log = logging.getLogger(__name__)

CREDENTIAL_KINDS = ("user_token", "password", "agent", "registration", "registration_proof")

# Error code -> the kind of credential it refuses. NOT_AUTHENTICATED is ambiguous (also "no
# credential at all"), so it counts only when a credential was presented.
_KIND_OF_CODE = {
    "NOT_AUTHENTICATED": "user_token",
    "SESSION_EXPIRED": "user_token",
    "TOKEN_EXPIRED": "user_token",
    "BAD_CREDENTIALS": "password",
    "LOCKED_OUT": "password",
    "LOGIN_RATE_LIMITED": "password",
    "BAD_AGENT_CREDENTIAL": "agent",
    "BAD_REGISTRATION_TOKEN": "registration",
    "BAD_REGISTRATION_PROOF": "registration_proof",
    "BAD_REGISTRATION_NONCE": "registration_proof",
    "REGISTRATION_NONCE_EXPIRED": "registration_proof",
    "REGISTRATION_NONCE_STALE": "registration_proof",
}
_NEEDS_PRESENTED = {"NOT_AUTHENTICATED"}
_SOURCE_MAX = 64
_DETAIL_MAX = 255


def credential_kind(code: str, credential_presented: bool) -> str | None:
    """The kind of credential an error with ``code`` refused, or None (not a refusal of a
    presented credential)."""
    kind = _KIND_OF_CODE.get(code)
    if kind is None or (code in _NEEDS_PRESENTED and not credential_presented):
        return None
    return kind


def source_key(address: str | None) -> str:
    """The source a refusal is counted under: an IPv4 address as is, an IPv6 address as its
    /64 network (an IPv4-mapped one as the IPv4 address), anything else truncated."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return address.strip()[:_SOURCE_MAX] or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def minute_of(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def _insert_for(dialect: str):  # noqa: ANN202 - the dialect's Insert construct
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise ValueError(f"no upsert for database dialect {dialect}")
    return insert


def count_refusal(session: Session, source: str | None, kind: str, detail: str, now: datetime | None = None) -> None:
    """Count one refusal of a ``kind`` credential from ``source`` in the current minute (the
    caller commits)."""
    if kind not in CREDENTIAL_KINDS:
        raise ValueError(f"unknown credential kind {kind!r}")
    now = now or utcnow()
    insert = _insert_for(session.get_bind().dialect.name)
    statement = insert(RefusedCredential).values(minute=minute_of(now), source=source_key(source), credential=kind, count=1, last_at=now, last_detail=detail[:_DETAIL_MAX])
    statement = statement.on_conflict_do_update(
        index_elements=["minute", "source", "credential"], set_={"count": RefusedCredential.count + 1, "last_at": statement.excluded.last_at, "last_detail": statement.excluded.last_detail}
    )
    session.execute(statement)


def record_refusal(sessions: sessionmaker[Session], source: str | None, kind: str, detail: str) -> None:
    """Count one refusal in a short transaction of its own."""
    with sessions() as session:
        count_refusal(session, source, kind, detail)
        session.commit()


def list_refusals(session: Session, offset: int, limit: int, credential: str | None = None, source: str | None = None) -> tuple[int, list[RefusedCredential]]:
    """Refusals newest minute first, optionally of one credential kind or one source."""
    conditions = []
    if credential is not None:
        conditions.append(RefusedCredential.credential == credential)
    if source is not None:
        conditions.append(RefusedCredential.source == source)
    total = session.scalar(select(func.count()).select_from(RefusedCredential).where(*conditions)) or 0
    rows = session.scalars(
        select(RefusedCredential).where(*conditions).order_by(RefusedCredential.minute.desc(), RefusedCredential.last_at.desc(), RefusedCredential.id.desc()).offset(offset).limit(limit)
    ).all()
    return total, list(rows)


def purge(session: Session, before: datetime) -> int:
    """Delete the counts of minutes before ``before`` (the audit log's retention applies)."""
    from sqlalchemy import delete

    result = session.execute(delete(RefusedCredential).where(RefusedCredential.minute < before))
    return result.rowcount or 0
