"""Clones of VMs and the promotion of a linked clone: validation and Tasks. What the inventory
records when the agent reports is the operations' (vcenter.services.operations.clone, and
vcenter.services.operations.snapshot for promote).

Clones (Task ``vm.clone`` on the SOURCE VM, a saga of two commands):
  copying (``vm.clone`` on the source's host: full copy at one point in time, or linked
  overlays on a frozen base) -> defining (``vm.create`` on the target host: the clone's
  domain, with its own UUID and MAC addresses) -> success; on error the clone row goes away.
The clone VM exists in the inventory from the start with status ``creating``. Every clone gets
a fresh identity: a new libvirt UUID and MAC addresses, no guest address; a source deployed
with a guest customisation (vcenter.services.library.templates) gives its clone a customisation of its
own (new cloud-init instance id, new server-issued machine-id, the clone's hostname): its seed
disk is not copied, the target's agent writes a new one (``vm.deploy`` without images).
Promote (Task ``vm.promote``): a linked clone's disks become standalone images.

Codes: VM_SUSPENDED, VM_NOT_READY, LINKED_CLONE_NEEDS_POWERED_OFF, LINKED_CLONE_UNSUPPORTED,
LINKED_CLONE_OF_LINKED (promote the source first: a chain of bases would hide a template's
dependents), DATASTORE_NOT_MOUNTED, NOT_A_LINKED_CLONE.
"""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

from sqlalchemy.orm import Session

from vcenter.core.errors import Conflict, Invalid, InvalidState
from vcenter.core.ids import new_mac, new_uuid
from vcenter.db.models import Datastore, Host, Task, VirtualDisk, VirtualMachine, VirtualNic, VmCustomization
from vcenter.domain.states import PowerState
from vcenter.messaging.commands import CloneArgs, UuidArgs
from vcenter.services.compute import placement
from vcenter.services.inventory import inventory
from vcenter.services.inventory.vm_data import disk_target, mount_path, ready_vm
from vcenter.services.library.templates import SEED_SUFFIX, dns_label
from vcenter.services.tasks.events import record_event
from vcenter.services.tasks.tasks import start_task


def clone(session: Session, user: str, vm_id: int, data: dict[str, Any]) -> Task:
    """Clone a VM (running or not): full copy, or linked (powered-off source) on a frozen base."""
    vm = ready_vm(session, vm_id)
    linked = bool(data.get("linked"))
    running = vm.power_state == PowerState.POWERED_ON.value
    if linked and running:
        raise InvalidState(f"VM {vm.name} is running: a linked clone freezes its disks, power it off or make a full clone", code="LINKED_CLONE_NEEDS_POWERED_OFF")
    custom = session.get(VmCustomization, vm.id)
    seed_disks = {d.index for d in vm.disks if custom is not None and d.format == "raw" and d.file.endswith(SEED_SUFFIX)}
    data_disks = [d for d in vm.disks if d.index not in seed_disks]
    if linked and any(d.format != "qcow2" for d in data_disks):
        raise Conflict(f"VM {vm.name} has disks that are not qcow2: linked clones need qcow2", code="LINKED_CLONE_UNSUPPORTED")
    if linked and any(d.backing_file for d in data_disks):
        raise Conflict(f"VM {vm.name} is itself a linked clone: promote it first (or make a full clone)", code="LINKED_CLONE_OF_LINKED")
    target_ds = inventory.ref(session, "datastore", data.get("datastore_id"), "datastore_id")
    if linked and target_ds is not None and any(d.datastore_id != target_ds.id for d in vm.disks):
        raise Invalid("datastore_id: a linked clone lives on its base's datastore", code="INVALID", details={"field": "datastore_id"})
    disk_stores = [target_ds.id if target_ds else d.datastore_id for d in data_disks]
    chosen = None
    if data.get("host_id") is not None:
        target: Host = inventory.ref(session, "host", data["host_id"], "host_id")
    elif vm.cluster_id is not None:
        request = {
            "name": data["name"],
            "vcpus": vm.vcpus,
            "memory_mib": vm.memory_mib,
            "disks": [{"datastore_id": i} for i in disk_stores],
            "nics": [{"portgroup_id": n.portgroup_id} for n in vm.nics],
            "cpu": vm.cpu,
            "pool_id": vm.pool_id,
        }
        host_id, chosen = placement.choose_host(session, vm.cluster_id, request)
        target = session.get(Host, host_id)
    else:
        target = session.get(Host, vm.host_id)
    if target.connection_state != "connected":
        raise Conflict(f"host {target.name} is {target.connection_state}", code="HOST_NOT_CONNECTED")
    if target.datacenter_id != vm.datacenter_id:
        raise Invalid("host_id: the host is in another datacenter", code="INVALID_REFERENCE", details={"field": "host_id"})
    for ds_id in set(disk_stores):
        for host in {vm.host_id, target.id}:
            if mount_path(session, ds_id, host) is None:
                name = session.get(Datastore, ds_id).name
                raise Conflict(
                    f"datastore {name} is not mounted on host {session.get(Host, host).name} (the copy runs on the source's host, the clone on the target)",
                    code="DATASTORE_NOT_MOUNTED",
                    details={"field": "datastore_id"},
                )
    boot = {k: v for k, v in (vm.boot or {}).items() if k != "ip"}  # an address is never cloned
    if data.get("ip"):
        boot["ip"] = str(data["ip"])
    new = VirtualMachine(
        name=data["name"],
        datacenter_id=vm.datacenter_id,
        cluster_id=target.cluster_id,
        host_id=target.id,
        folder_id=data.get("folder_id", vm.folder_id),
        pool_id=vm.pool_id if target.cluster_id == vm.cluster_id else None,
        vcpus=vm.vcpus,
        memory_mib=vm.memory_mib,
        cpu_reservation_mhz=vm.cpu_reservation_mhz,
        cpu_limit_mhz=vm.cpu_limit_mhz,
        memory_reservation_mib=vm.memory_reservation_mib,
        memory_limit_mib=vm.memory_limit_mib,
        guest_os=vm.guest_os,
        power_state=PowerState.POWERED_OFF.value,
        status="creating",
        libvirt_uuid=new_uuid(),
        boot=boot,
        cpu=vm.cpu,
    )
    copies = []
    for disk, ds_id in zip(data_disks, disk_stores):
        file = f"{new.name}-{new.libvirt_uuid[:8]}-disk{disk.index}.qcow2"
        src_path = mount_path(session, disk.datastore_id, vm.host_id)
        base = f"{vm.name}-{new.libvirt_uuid[:8]}-base-disk{disk.index}.qcow2" if linked else None
        new.disks.append(VirtualDisk(index=disk.index, datastore_id=ds_id, file=file, capacity_mib=disk.capacity_mib, format="qcow2", backing_file=base))
        copies.append(
            {"index": disk.index, "target": disk_target(disk.index), "path": f"{mount_path(session, ds_id, vm.host_id)}/{file}", "base_path": f"{src_path}/{base}" if base else None, "base_file": base}
        )
    seed = None
    for index in sorted(seed_disks):
        ds_id = disk_stores[0] if disk_stores else vm.disks[index].datastore_id
        file = f"{new.name}-{new.libvirt_uuid[:8]}{SEED_SUFFIX}"
        new.disks.append(VirtualDisk(index=index, datastore_id=ds_id, file=file, capacity_mib=1, format="raw"))
        seed = {"path": f"{mount_path(session, ds_id, target.id)}/{file}"}
    for nic in vm.nics:
        new.nics.append(VirtualNic(index=nic.index, portgroup_id=nic.portgroup_id, mac=new_mac(), model=nic.model))
    session.add(new)
    inventory.flush_unique(session, f"VM {new.name!r}")
    if custom is not None:
        session.add(
            VmCustomization(
                vm_id=new.id, instance_id=f"i-{uuidlib.uuid4().hex}", machine_id=uuidlib.uuid4().hex, hostname=dns_label(new.name), spec=dict(custom.spec or {}, hostname=dns_label(new.name))
            )
        )
    task = start_task(
        session,
        kind="vm.clone",
        object_type="vm",
        object_id=vm.id,
        username=user,
        host_id=vm.host_id,
        params={"clone_vm_id": new.id, "target_host_id": target.id, "linked": linked, "running": running, "copies": copies, "seed": seed, **({"placement": chosen} if chosen else {})},
        command="vm.clone",
        command_args=CloneArgs(uuid=vm.libvirt_uuid, linked=linked, disks=[{k: c[k] for k in ("target", "path", "base_path")} for c in copies]).args(),
    )
    task.step = "copying"
    record_event(
        session,
        "vm.clone.requested",
        f"{'linked' if linked else 'full'} clone {new.name} of VM {vm.name} ({'running' if running else 'powered off'}) requested on host {target.name}",
        username=user,
        object_type="vm",
        object_id=vm.id,
        object_name=vm.name,
        task_id=task.id,
    )
    return task


def promote(session: Session, user: str, vm_id: int) -> Task:
    vm = ready_vm(session, vm_id)
    if not any(d.backing_file for d in vm.disks):
        raise InvalidState(f"VM {vm.name} has no linked disk", code="NOT_A_LINKED_CLONE")
    return start_task(session, kind="vm.promote", object_type="vm", object_id=vm.id, username=user, host_id=vm.host_id, command="vm.promote", command_args=UuidArgs(uuid=vm.libvirt_uuid).args())
