"""VM use cases: create, power actions with vCenter's meaning, reconfigure, delete.

Each is one transaction that validates, claims the VM for one Task, and enqueues the host
command through the outbox; the Task ends when the agent reports (``services.orchestration.reports``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from vcenter.core.errors import Conflict, Invalid, InvalidState
from vcenter.core.ids import new_mac, new_uuid
from vcenter.core.settings import Settings
from vcenter.db.models import Cluster, Host, Task, VirtualDisk, VirtualMachine, VirtualNic
from vcenter.domain.states import ConnectionState, PowerAction, PowerState, TaskState, check_power_action
from vcenter.messaging.commands import DeleteArgs, GuestArgs, ReconfigureArgs, ShutdownArgs, UuidArgs
from vcenter.messaging.contracts import CreateArgs
from vcenter.services.compute import evc, placement
from vcenter.services.ha import ha
from vcenter.services.inventory import inventory
from vcenter.services.tasks.events import record_event
from vcenter.services.tasks.tasks import ensure_idle, finish_task, start_task
from vcenter.services.inventory.vm_spec import vm_spec

POWER_COMMANDS = {
    PowerAction.POWER_ON: "vm.start",
    PowerAction.POWER_OFF: "vm.stop",
    PowerAction.SHUTDOWN_GUEST: "vm.shutdown",
    PowerAction.RESET: "vm.reset",
    PowerAction.SUSPEND: "vm.suspend",
    PowerAction.RESUME: "vm.resume",
}


def _usable_host(host: Host | None) -> None:
    if host is None:  # an orphan whose host was removed by force
        raise InvalidState("the VM is on no host (its host was removed): re-add the host first", code="VM_HAS_NO_HOST")
    if host.connection_state != ConnectionState.CONNECTED.value:
        raise Conflict(f"host {host.name} is {host.connection_state}", code="HOST_NOT_CONNECTED")


def create_vm(session: Session, user: str, data: dict[str, Any]) -> tuple[VirtualMachine, Task]:
    chosen = None
    if data.get("host_id") is None:
        if data.get("cluster_id") is None:
            raise Invalid("host_id: give a host, or a cluster_id to let placement choose", code="INVALID", details={"field": "host_id"})
        inventory.ref(session, "cluster", data["cluster_id"], "cluster_id")
        host_id, chosen = placement.choose_host(session, data["cluster_id"], data)
        data = {**data, "host_id": host_id}
    host: Host = inventory.ref(session, "host", data["host_id"], "host_id")
    datacenter_id = data.get("datacenter_id") or host.datacenter_id
    if datacenter_id != host.datacenter_id:
        raise Invalid("host_id: the host is in another datacenter", code="INVALID_REFERENCE", details={"field": "host_id"})
    folder = inventory.ref(session, "folder", data.get("folder_id"), "folder_id")
    if folder is not None and (folder.datacenter_id != datacenter_id or folder.kind != "vm"):
        raise Invalid("folder_id: not a VM folder of this datacenter", code="INVALID_REFERENCE", details={"field": "folder_id"})
    pool = inventory.ref(session, "pool", data.get("pool_id"), "pool_id")
    if pool is not None and pool.cluster_id != host.cluster_id:
        raise Invalid("pool_id: the pool is not in the host's cluster", code="INVALID_REFERENCE", details={"field": "pool_id"})
    _usable_host(host)
    if data.get("kernel_boot") and data["memory_mib"] < 80:
        # The Debian cloud kernel panics below 80 MiB (docs/lab.md).
        raise Invalid("memory_mib: the tiny-linux image needs at least 80 MiB", code="INVALID", details={"field": "memory_mib"})
    vm = VirtualMachine(
        name=data["name"],
        datacenter_id=datacenter_id,
        cluster_id=host.cluster_id,
        host_id=host.id,
        folder_id=data.get("folder_id"),
        pool_id=data.get("pool_id"),
        vcpus=data["vcpus"],
        memory_mib=data["memory_mib"],
        cpu_reservation_mhz=data.get("cpu_reservation_mhz", 0),
        memory_reservation_mib=data.get("memory_reservation_mib", 0),
        cpu_limit_mhz=data.get("cpu_limit_mhz"),
        memory_limit_mib=data.get("memory_limit_mib"),
        guest_os=data["guest_os"],
        power_state=PowerState.POWERED_OFF.value,
        status="creating",
        libvirt_uuid=new_uuid(),
        boot={k: str(v) for k, v in (data.get("kernel_boot") or {}).items() if v is not None},
        cpu=data.get("cpu") or evc.vm_cpu_for(session.get(Cluster, host.cluster_id) if host.cluster_id else None),
    )
    for index, disk in enumerate(data.get("disks", [])):
        datastore = inventory.ref(session, "datastore", disk["datastore_id"], f"disks[{index}].datastore_id")
        if host.id not in {m.host_id for m in datastore.mounts}:
            raise Invalid(
                f"disks[{index}].datastore_id: datastore {datastore.name} is not mounted on host {host.name}", code="DATASTORE_NOT_MOUNTED", details={"field": f"disks[{index}].datastore_id"}
            )
        vm.disks.append(
            VirtualDisk(index=index, datastore_id=datastore.id, file=f"{vm.name}-{vm.libvirt_uuid[:8]}-disk{index}.{disk['format']}", capacity_mib=disk["capacity_mib"], format=disk["format"])
        )
    for index, nic in enumerate(data.get("nics", [])):
        portgroup = inventory.ref(session, "portgroup", nic["portgroup_id"], f"nics[{index}].portgroup_id")
        if host.id not in {m.host_id for m in portgroup.hosts}:
            raise Invalid(f"nics[{index}].portgroup_id: port group {portgroup.name} is not on host {host.name}", code="PORTGROUP_ABSENT", details={"field": f"nics[{index}].portgroup_id"})
        vm.nics.append(VirtualNic(index=index, portgroup_id=portgroup.id, mac=new_mac(), model=nic["model"]))
    session.add(vm)
    inventory.flush_unique(session, f"VM {vm.name!r}")
    task = start_task(
        session,
        kind="vm.create",
        object_type="vm",
        object_id=vm.id,
        username=user,
        host_id=host.id,
        params={"placement": chosen} if chosen else None,
        command="vm.create",
        command_args=CreateArgs(spec=vm_spec(session, vm, host.id)).args(),
    )
    record_event(session, "vm.creating", f"VM {vm.name} being created on host {host.name}", username=user, object_type="vm", object_id=vm.id, object_name=vm.name, task_id=task.id)
    return vm, task


def power(session: Session, user: str, vm_id: int, action: PowerAction, settings: Settings, timeout: float | None = None) -> Task:
    vm: VirtualMachine = inventory.get(session, "vm", vm_id)
    ensure_idle(session, "vm", vm.id)
    if vm.status != "ready":
        raise InvalidState(f"VM {vm.name} is {vm.status}", code="VM_NOT_READY")
    refused = check_power_action(action, PowerState(vm.power_state))
    if refused:
        raise InvalidState(f"cannot {action.value} VM {vm.name}: it is {vm.power_state}", code=refused)
    host = session.get(Host, vm.host_id)
    _usable_host(host)
    admission = placement.admit_power_on(session, vm) if action in (PowerAction.POWER_ON, PowerAction.RESUME) else None
    if action in (PowerAction.POWER_ON, PowerAction.RESUME):
        ha.admit_power_on(session, vm, user)
    if action == PowerAction.SHUTDOWN_GUEST:
        args = ShutdownArgs(uuid=vm.libvirt_uuid, timeout=timeout or settings.guest_shutdown_timeout).args()
    else:
        args = UuidArgs(uuid=vm.libvirt_uuid).args()
    task = start_task(
        session,
        kind=f"vm.{action.value}",
        object_type="vm",
        object_id=vm.id,
        username=user,
        host_id=host.id,
        params={"placement": admission} if admission else None,
        command=POWER_COMMANDS[action],
        command_args=args,
    )
    record_event(session, f"vm.{action.value}.requested", f"{action.value} of VM {vm.name} requested", username=user, object_type="vm", object_id=vm.id, object_name=vm.name, task_id=task.id)
    return task


def reconfigure(session: Session, user: str, vm_id: int, vcpus: int | None, memory_mib: int | None, version: int | None) -> Task:
    vm: VirtualMachine = inventory.get(session, "vm", vm_id)
    inventory.check_version(vm, version)
    ensure_idle(session, "vm", vm.id)
    if vcpus is None and memory_mib is None:
        raise Invalid("give vcpus or memory_mib", code="NOTHING_TO_CHANGE")
    if vm.status != "ready":
        raise InvalidState(f"VM {vm.name} is {vm.status}", code="VM_NOT_READY")
    if vm.power_state != PowerState.POWERED_OFF.value:
        raise InvalidState(f"VM {vm.name} must be powered off to change vCPUs or memory (hot-add is not enabled)", code="VM_POWERED_ON")
    host = session.get(Host, vm.host_id)
    _usable_host(host)
    return start_task(
        session,
        kind="vm.reconfigure",
        object_type="vm",
        object_id=vm.id,
        username=user,
        host_id=host.id,
        params={"vcpus": vcpus, "memory_mib": memory_mib},
        command="vm.reconfigure",
        command_args=ReconfigureArgs(uuid=vm.libvirt_uuid, vcpus=vcpus, memory_mib=memory_mib).args(),
    )


def delete_vm(session: Session, user: str, vm_id: int) -> Task:
    vm: VirtualMachine = inventory.get(session, "vm", vm_id)
    ensure_idle(session, "vm", vm.id)
    if vm.host_id is None:
        return _forget_vm(session, user, vm)
    if vm.power_state != PowerState.POWERED_OFF.value and vm.status == "ready":
        raise InvalidState(f"VM {vm.name} is {vm.power_state}; power it off first", code="VM_POWERED_ON")
    host = session.get(Host, vm.host_id)
    _usable_host(host)
    spec = vm_spec(session, vm, host.id)
    disks = [f"{d.datastore_path}/{d.file}" for d in spec.disks]
    return start_task(
        session, kind="vm.delete", object_type="vm", object_id=vm.id, username=user, host_id=host.id, command="vm.delete", command_args=DeleteArgs(uuid=vm.libvirt_uuid, disks=disks).args()
    )


def _forget_vm(session: Session, user: str, vm: VirtualMachine) -> Task:
    """Delete an orphan whose host was removed by force: no host holds a domain to undefine,
    so only the inventory record goes (its disks stay where the dead host left them; a host
    re-added later reports the domain again, as a new orphan). The Task ends at once."""
    name, vm_id = vm.name, vm.id
    task = start_task(session, kind="vm.delete", object_type="vm", object_id=vm_id, username=user, params={"inventory_only": True})
    finish_task(session, task, TaskState.SUCCESS, result={"inventory_only": True}, object_name=name)
    session.delete(vm)
    record_event(
        session,
        "vm.deleted",
        f"VM {name} removed from the inventory; its host was removed, so no domain or disk was touched",
        username=user,
        object_type="vm",
        object_id=vm_id,
        object_name=name,
        task_id=task.id,
    )
    return task


def guest_command(session: Session, user: str, vm_id: int, command: str, argument: str | None, timeout: float) -> Task:
    """Send a command to the guest through its heartbeat channel (the lab guest's protocol)."""
    vm: VirtualMachine = inventory.get(session, "vm", vm_id)
    if vm.status != "ready" or vm.power_state != PowerState.POWERED_ON.value:
        raise InvalidState(f"VM {vm.name} is not running", code="VM_NOT_RUNNING")
    host = session.get(Host, vm.host_id)
    _usable_host(host)
    line = command if not argument else f"{command} {argument}"
    # Guest operations claim the guest, not the VM: they run alongside a VMotion or a disk
    # move (as in vCenter), one at a time per guest.
    return start_task(
        session,
        kind="vm.guestCommand",
        object_type="guest",
        object_id=vm.id,
        username=user,
        host_id=host.id,
        params={"command": line},
        command="vm.guest",
        command_args=GuestArgs(uuid=vm.libvirt_uuid, line=line, timeout=timeout).args(),
    )
