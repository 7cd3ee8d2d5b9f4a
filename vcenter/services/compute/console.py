"""VM consoles: one-time tickets and the signed request that opens a console on a host.

Vocabulary:
- ticket: a random string handed to a logged-in user who holds VirtualMachine.Console on the
  VM; it opens one console session, once, within ``console_ticket_ttl`` seconds. Kept in
  Redis (hashed) with that TTL and taken with GETDEL, so two server replicas agree and a
  second use finds nothing.
- grant: what a ticket stands for (user, VM, its host and libvirt UUID, the host's address,
  its pinned certificate thumbprint and the serials of its standing certificates from the
  cluster CA), read when the ticket is redeemed.
- open request: a ``console.open`` command signed by the server's command key, presented to
  the host agent's console endpoint (workers.agent.console); its command_id is the nonce.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from sqlalchemy.orm import Session

from vcenter.core.clock import utcnow
from vcenter.core.errors import InvalidState
from vcenter.core.ids import new_token, new_uuid, token_hash
from vcenter.core.settings import Settings
from vcenter.db.models import Host, VirtualMachine
from vcenter.messaging.commands import UuidArgs
from vcenter.messaging.contracts import Command
from vcenter.messaging.signing import CommandSigner
from vcenter.services.certificates import host_certificates
from vcenter.services.inventory import inventory
from vcenter.services.tasks.events import record_event

_PREFIX = "vcenter:console:ticket:"


def issue_ticket(session: Session, redis: Any, settings: Settings, username: str, vm_id: int, *, user_id: int) -> dict[str, Any]:
    """A one-time ticket for the console of ``vm_id``, redeemable only by the user ``user_id``
    (by id: a later user of the same name is someone else)."""
    vm: VirtualMachine = inventory.get(session, "vm", vm_id)
    if vm.power_state != "poweredOn" or vm.host_id is None:
        raise InvalidState(f"VM {vm.name} is {vm.power_state}: only a running VM has a console", code="VM_NOT_RUNNING")
    host: Host = inventory.get(session, "host", vm.host_id)
    if not host.address or not host.thumbprint:
        raise InvalidState(f"host {host.name} has no address or no confirmed certificate to reach its console endpoint", code="CONSOLE_UNAVAILABLE")
    ticket = new_token()
    grant = {
        "username": username,
        "user_id": user_id,
        "vm_id": vm.id,
        "vm_name": vm.name,
        "uuid": vm.libvirt_uuid,
        "host_id": host.id,
        "address": host.address,
        "thumbprint": host.thumbprint,
        # the host's certificates from the cluster CA that stand now (its console endpoint
        # serves one once installed; vcenter.dashboard.console checks it against these)
        "certificate_serials": host_certificates.standing_serials(session, host),
    }
    redis.set(_PREFIX + token_hash(ticket), json.dumps(grant), px=max(1, int(settings.console_ticket_ttl * 1000)))
    record_event(session, "vm.console.ticket", f"console ticket for VM {vm.name} issued to {username}", username=username, object_type="vm", object_id=vm.id, object_name=vm.name)
    return {"ticket": ticket, "expires_in": settings.console_ticket_ttl}


def websocket_path(ticket: str) -> str:
    """Where a ticket is redeemed: the console websocket (vcenter.dashboard.console), for the
    dashboard's page and the API's clients alike."""
    return f"/ui/console/ws?ticket={quote(ticket)}"


def redeem(redis: Any, ticket: str) -> dict[str, Any] | None:
    """The grant of ``ticket``, or None when it is unknown, used or expired."""
    if not ticket or len(ticket) > 200:
        return None
    raw = redis.getdel(_PREFIX + token_hash(ticket))
    return json.loads(raw) if raw else None


def open_request(signer: CommandSigner, grant: dict[str, Any]) -> bytes:
    """The line the server sends to the agent's console endpoint."""
    command = Command(command_id=new_uuid(), task_id=None, host_id=grant["host_id"], name="console.open", args=UuidArgs(uuid=grant["uuid"]).args(), issued_at=utcnow())
    return json.dumps(signer.seal(command)).encode() + b"\n"
