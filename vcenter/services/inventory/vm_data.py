"""What the commands on a VM's disk files (snapshots, clones, backups, restores) share: the VM
they may start on (``ready_vm``: ready, not suspended, idle, its host connected), a disk's
target name on the host, and where a datastore is mounted on a host.

In inventory because two contexts use them (vcenter.services.protection: snapshots, backups;
vcenter.services.library: clones), and a context stands only on those below it.

Codes: VM_NOT_READY, VM_SUSPENDED, HOST_NOT_CONNECTED (and OBJECT_BUSY from ensure_idle).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from vcenter.core.errors import Conflict, InvalidState
from vcenter.db.models import Datastore, Host, VirtualMachine
from vcenter.domain.states import PowerState
from vcenter.services.inventory import inventory
from vcenter.services.tasks.tasks import ensure_idle


def ready_vm(session: Session, vm_id: int) -> VirtualMachine:
    vm: VirtualMachine = inventory.get(session, "vm", vm_id)
    ensure_idle(session, "vm", vm.id)
    if vm.status != "ready":
        raise InvalidState(f"VM {vm.name} is {vm.status}", code="VM_NOT_READY")
    if vm.power_state == PowerState.SUSPENDED.value:
        raise InvalidState(f"VM {vm.name} is suspended: resume or power it off first", code="VM_SUSPENDED")
    host = session.get(Host, vm.host_id)
    if host is None or host.connection_state != "connected":
        raise Conflict(f"the host of VM {vm.name} is not connected", code="HOST_NOT_CONNECTED")
    return vm


def disk_target(index: int) -> str:
    return "vd" + chr(ord("a") + index)


def mount_path(session: Session, datastore_id: int, host_id: int) -> str | None:
    ds = session.get(Datastore, datastore_id)
    mount = next((m for m in ds.mounts if m.host_id == host_id), None) if ds else None
    return mount.path if mount else None
