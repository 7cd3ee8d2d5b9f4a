"""Host lifecycle as vCenter operators know it: add (with a one-time registration token),
register (the agent presents its libvirt host UUID and certificate thumbprint), confirm the
thumbprint (or trust on first use), standby, remove (forced only for a dead host), and import
of VMs found on a host.

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

from sqlalchemy import select
from sqlalchemy.orm import Session

from vcenter.core.clock import utcnow
from vcenter.core.errors import Conflict, InvalidState, Unauthorized
from vcenter.core.ids import new_token, token_hash
from vcenter.core.settings import Settings
from vcenter.db.models import Host, VirtualMachine
from vcenter.domain.states import ConnectionState, PowerState
from vcenter.messaging.signing import CommandSigner
from vcenter.services import inventory
from vcenter.services.events import record_event


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


def register(session: Session, settings: Settings, registration_token: str, host_uuid: str, thumbprint: str, hostname: str) -> dict[str, Any]:
    """An agent presents its one-time token. Answers its state and, once trusted, its
    credential (the token is consumed then)."""
    host = session.scalar(select(Host).where(Host.registration_token_hash == token_hash(registration_token)))
    if host is None or host.registration_expires_at is None or utcnow() > host.registration_expires_at:
        raise Unauthorized("unknown or expired registration token", code="BAD_REGISTRATION_TOKEN")
    other = session.scalar(select(Host).where(Host.host_uuid == host_uuid, Host.id != host.id))
    if other is not None:
        message = f"host UUID {host_uuid} already belongs to host {other.name}"
        raise Conflict(message, code="DUPLICATE_HOST_UUID", audit={
            "kind": "host.registration_refused", "message": f"host {host.name}: {message}", "object_type": "host",
            "object_id": host.id, "object_name": host.name, "reason": "DUPLICATE_HOST_UUID"})
    if host.thumbprint is not None and host.thumbprint != thumbprint:
        raise Conflict("a different certificate registered with this token first", code="THUMBPRINT_MISMATCH")
    if host.thumbprint is None:
        host.thumbprint = thumbprint
        host.host_uuid = host_uuid
        record_event(session, "host.registered", f"agent on {hostname} registered for host {host.name}; certificate thumbprint {thumbprint}", object_type="host", object_id=host.id, object_name=host.name, data={"host_uuid": host_uuid, "thumbprint": thumbprint})
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
    record_event(session, "host.trusted", f"host {host.name}: certificate thumbprint confirmed by {user}", username=user, object_type="host", object_id=host.id, object_name=host.name, reason="operator_confirmed")
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
    record_event(session, "host.standby.entered" if enter else "host.standby.exited", f"host {host.name} {'entered' if enter else 'left'} standby", username=user, object_type="host", object_id=host.id, object_name=host.name)
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
        record_event(session, "vm.orphaned", f"VM {vm.name} orphaned: its host {host.name} was removed by force", username=user, object_type="vm", object_id=vm.id, object_name=vm.name, reason="host_removed")
    session.flush()
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
