"""Host lifecycle as vCenter operators know it: add (with a one-time registration token),
register (the agent presents its libvirt host UUID and certificate, and proves it holds the
certificate's key: vcenter.core.registration), confirm the thumbprint (or trust on first
use), standby, remove (forced only for a dead host; its TLS certificates are revoked), and
import of VMs found on a host.

Vocabulary:
- trust state: awaitingAgent (added, no agent yet) -> awaitingConfirmation (an agent
  registered; the operator compares the thumbprint) -> trusted (the agent holds a credential).
- orphaned VM: in the inventory but not managed: a domain found on a host that the inventory
  did not know, or a VM whose host was removed by force. Nothing is ever deleted silently:
  orphaned VMs wait for an import (or are re-attached when their host comes back).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from sqlalchemy import select
from sqlalchemy.orm import Session

from vcenter.core import registration
from vcenter.core.clock import utcnow
from vcenter.core.errors import Conflict, InvalidState, Unauthorized
from vcenter.core.ids import new_token, token_hash
from vcenter.core.settings import Settings
from vcenter.db.models import Host, VirtualMachine
from vcenter.domain.states import ConnectionState, PowerState
from vcenter.messaging.signing import CommandSigner, load_or_create_signing_key, signing_key_path
from vcenter.services.certificates import host_certificates
from vcenter.services.inventory import inventory
from vcenter.services.tasks.events import record_event


def issue_registration_token(session: Session, host: Host, settings: Settings, user: str) -> str:
    token = new_token()
    host.registration_token_hash = token_hash(token)
    host.registration_expires_at = utcnow() + timedelta(seconds=settings.registration_token_ttl)
    if host.trust_state == "trusted":
        # Re-registration (a reinstalled agent): the old credential stops working now.
        host.agent_token_hash = None
    host.trust_state = "awaitingAgent"
    host.thumbprint = None
    record_event(session, "host.registration_token", f"registration token issued for host {host.name}", username=user, object_type="host", object_id=host.id, object_name=host.name)
    return token


def _nonce_key(settings: Settings) -> bytes:
    # Derived from the command signing key: every API replica shares it already (key_dir), so
    # a nonce one replica issued verifies on another without shared state.
    key = load_or_create_signing_key(signing_key_path(settings))
    return registration.nonce_key(key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()))


def _host_of_token(session: Session, registration_token: str) -> Host:
    host = session.scalar(select(Host).where(Host.registration_token_hash == token_hash(registration_token)))
    if host is None or host.registration_expires_at is None or utcnow() > host.registration_expires_at:
        raise Unauthorized("unknown or expired registration token", code="BAD_REGISTRATION_TOKEN")
    return host


def registration_challenge(session: Session, settings: Settings, registration_token: str) -> dict[str, Any]:
    """A nonce for the agent holding ``registration_token`` to sign (see
    vcenter.core.registration): valid for that token and the host's current trust state."""
    host = _host_of_token(session, registration_token)
    nonce, expires = registration.mint_nonce(_nonce_key(settings), host.registration_token_hash, host.trust_state, utcnow())
    return {"nonce": nonce, "expires_in": float(registration.NONCE_TTL), "expires_at": expires}


def _refused_registration(host: Host, code: str, message: str) -> dict[str, Any]:
    return {"kind": "host.registration_refused", "message": f"host {host.name}: {message}", "object_type": "host", "object_id": host.id, "object_name": host.name, "reason": code}


def register(
    session: Session, settings: Settings, registration_token: str, host_uuid: str, hostname: str, nonce: str, certificate_pem: str, signature: str, thumbprint: str | None = None
) -> dict[str, Any]:
    """An agent presents its one-time token and proves that it holds the key of its
    certificate (a signature over a fresh server nonce, the token and its host UUID). Answers
    its state and, once trusted, its credential (the token is consumed then).

    Once an agent registered with this token, only the same certificate and the same host
    UUID are accepted: the confirmed thumbprint names a key, and only its holder gets the
    credential."""
    host = _host_of_token(session, registration_token)
    try:
        registration.check_nonce(_nonce_key(settings), nonce, host.registration_token_hash, host.trust_state, utcnow())
        proven = registration.check_proof(certificate_pem, signature, registration.signed_message(nonce, registration_token, host_uuid))
    except registration.ProofRefused as exc:
        # No Event per attempt (a flood would fill the audit log): the API's error handler
        # counts refused proofs per source and minute (vcenter.services.access.refusals).
        raise Unauthorized(exc.message, code=exc.code) from None
    if thumbprint is not None and thumbprint.strip().upper() != proven.thumbprint:
        raise Unauthorized("the claimed thumbprint is not the certificate's", code="BAD_REGISTRATION_PROOF")
    other = session.scalar(select(Host).where(Host.host_uuid == host_uuid, Host.id != host.id))
    if other is not None:
        message = f"host UUID {host_uuid} already belongs to host {other.name}"
        raise Conflict(message, code="DUPLICATE_HOST_UUID", audit=_refused_registration(host, "DUPLICATE_HOST_UUID", message))
    if host.thumbprint is not None and host.thumbprint != proven.thumbprint:
        raise Conflict(
            "a different certificate registered with this token first",
            code="THUMBPRINT_MISMATCH",
            audit=_refused_registration(host, "THUMBPRINT_MISMATCH", f"certificate {proven.thumbprint} refused: {host.thumbprint} registered first"),
        )
    if host.thumbprint is not None and host.host_uuid != host_uuid:
        raise Conflict(
            f"this registration is for host UUID {host.host_uuid}",
            code="HOST_UUID_MISMATCH",
            audit=_refused_registration(host, "HOST_UUID_MISMATCH", f"host UUID {host_uuid} refused: the agent registered with {host.host_uuid}"),
        )
    if host.thumbprint is None:
        host.thumbprint = proven.thumbprint
        host.host_uuid = host_uuid
        record_event(
            session,
            "host.registered",
            f"agent on {hostname} registered for host {host.name}; certificate thumbprint {proven.thumbprint}",
            object_type="host",
            object_id=host.id,
            object_name=host.name,
            data={"host_uuid": host_uuid, "thumbprint": proven.thumbprint},
        )
        host.trust_state = "awaitingConfirmation"
        if settings.host_trust_on_first_use:
            host.trust_state = "trusted"
            record_event(session, "host.trusted", f"host {host.name} trusted on first use", object_type="host", object_id=host.id, object_name=host.name, reason="trust_on_first_use")
    if host.trust_state != "trusted":
        return {"host_id": host.id, "trust_state": host.trust_state}
    credential = new_token()
    host.agent_token_hash = token_hash(credential)
    host.registration_token_hash = None
    host.registration_expires_at = None
    # The key that verifies the server's commands travels with the credential: the agent
    # runs only what this key's private half signed (see vcenter.messaging.signing).
    public_key = CommandSigner.from_settings(settings).public_key_pem
    return {"host_id": host.id, "trust_state": "trusted", "agent_token": credential, "command_public_key": public_key}


def confirm(session: Session, host_id: int, thumbprint: str, user: str) -> Host:
    host: Host = inventory.get(session, "host", host_id)
    if host.trust_state != "awaitingConfirmation":
        raise InvalidState(f"host {host.name} is {host.trust_state}, not awaiting confirmation", code="NOT_AWAITING_CONFIRMATION")
    if host.thumbprint != thumbprint.strip():
        raise Conflict("the thumbprint differs from the one the agent presented", code="THUMBPRINT_MISMATCH")
    host.trust_state = "trusted"
    record_event(
        session,
        "host.trusted",
        f"host {host.name}: certificate thumbprint confirmed by {user}",
        username=user,
        object_type="host",
        object_id=host.id,
        object_name=host.name,
        reason="operator_confirmed",
    )
    return host


def set_standby(session: Session, host_id: int, enter: bool, user: str) -> Host:
    """Record entering or leaving standby (powering the host is DPM's)."""
    host: Host = inventory.get(session, "host", host_id)
    if host.standby == enter:
        raise InvalidState(f"host {host.name} is {'already' if enter else 'not'} in standby", code="ALREADY_IN_STANDBY" if enter else "NOT_IN_STANDBY")
    if enter:
        running = session.scalars(select(VirtualMachine.name).where(VirtualMachine.host_id == host.id, VirtualMachine.power_state != PowerState.POWERED_OFF.value)).all()
        if running:
            raise Conflict(f"host {host.name} still runs {', '.join(sorted(running))}: move or power them off first", code="HOST_HAS_RUNNING_VMS", details={"vms": sorted(running)})
    host.standby = enter
    record_event(
        session,
        "host.standby.entered" if enter else "host.standby.exited",
        f"host {host.name} {'entered' if enter else 'left'} standby",
        username=user,
        object_type="host",
        object_id=host.id,
        object_name=host.name,
    )
    return host


def remove(session: Session, host_id: int, force: bool, user: str) -> None:
    host: Host = inventory.get(session, "host", host_id)
    vms = list(session.scalars(select(VirtualMachine).where(VirtualMachine.host_id == host.id)))
    if vms and not force:
        raise Conflict(f"host {host.name} has {len(vms)} VMs; move them first, or force the removal of a dead host", code="HOST_HAS_VMS")
    if vms and host.connection_state == ConnectionState.CONNECTED.value:
        raise Conflict(f"host {host.name} is connected: only a dead host's removal may be forced", code="HOST_IS_ALIVE")
    for vm in vms:
        vm.host_id = None
        vm.status = "orphaned"
        record_event(
            session, "vm.orphaned", f"VM {vm.name} orphaned: its host {host.name} was removed by force", username=user, object_type="vm", object_id=vm.id, object_name=vm.name, reason="host_removed"
        )
    session.flush()
    # Its TLS certificates stop opening other hosts' libvirtd and QEMU (the CRL names them).
    host_certificates.revoke_host(session, host)
    inventory.delete_object(session, user, "host", host.id)


def import_vm(session: Session, vm_id: int, user: str) -> VirtualMachine:
    vm: VirtualMachine = inventory.get(session, "vm", vm_id)
    if vm.status != "orphaned":
        raise InvalidState(f"VM {vm.name} is {vm.status}, not orphaned", code="VM_NOT_ORPHANED")
    if vm.host_id is None:
        raise InvalidState(f"VM {vm.name} is on no host: re-add its host first", code="VM_HAS_NO_HOST")
    vm.status = "ready"
    record_event(session, "vm.imported", f"VM {vm.name} imported into the inventory", username=user, object_type="vm", object_id=vm.id, object_name=vm.name)
    return vm
