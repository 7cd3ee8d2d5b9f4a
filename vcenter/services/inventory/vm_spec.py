"""How a VM row becomes the spec its host's agent defines it from (vcenter.messaging.contracts.
VmSpec): disks at the path the host mounts their datastore on, NICs on the port group's bridge,
boot image, CPU model, and the allocation enforced on the host (shares, quota, soft limit).
Every operation that defines a VM on a host (create, deploy, clone, restore, relocation, HA
restart) builds it here."""

from __future__ import annotations

from sqlalchemy.orm import Session

from vcenter.db.models import Datastore, Host, PortGroup, ResourcePool, VirtualMachine
from vcenter.messaging.contracts import CpuSpec, DiskSpec, NicSpec, ResourceSpec, VmSpec


def vm_spec(session: Session, vm: VirtualMachine, host_id: int) -> VmSpec:
    disks = []
    for disk in vm.disks:
        datastore = session.get(Datastore, disk.datastore_id)
        mount = next((m for m in datastore.mounts if m.host_id == host_id), None)
        path = mount.path if mount else datastore.url
        disks.append(DiskSpec(index=disk.index, datastore_id=disk.datastore_id, datastore_path=path, file=disk.file, capacity_mib=disk.capacity_mib, format=disk.format))
    nics = []
    for nic in vm.nics:
        portgroup = session.get(PortGroup, nic.portgroup_id)
        nics.append(NicSpec(index=nic.index, portgroup=portgroup.name, bridge=portgroup.bridge, mac=nic.mac, model=nic.model))
    boot = vm.boot or {}
    host = session.get(Host, host_id)
    return VmSpec(
        resources=resource_spec(session, vm, host),
        name=vm.name,
        uuid=vm.libvirt_uuid,
        vcpus=vm.vcpus,
        memory_mib=vm.memory_mib,
        guest_os=vm.guest_os,
        disks=disks,
        nics=nics,
        image=boot.get("image"),
        guest_ip=boot.get("ip"),
        cpu=CpuSpec(**vm.cpu) if vm.cpu else None,
    )


NORMAL_POOL_CPU_SHARES = 4000  # vCenter's "normal" shares of a resource pool
SHARES_PER_VCPU = 1000  # vCenter's "normal" shares of a VM, per vCPU


def resource_spec(session: Session, vm: VirtualMachine, host: Host | None) -> ResourceSpec:
    """How a VM's allocation is enforced on its host: CPU shares scaled by its pool's shares,
    its CPU limit as a quota of the host's core speed, its memory limit as a soft limit."""
    pool = session.get(ResourcePool, vm.pool_id) if vm.pool_id else None
    scale = (pool.cpu_shares / NORMAL_POOL_CPU_SHARES) if pool is not None else 1.0
    shares = max(2, int(SHARES_PER_VCPU * vm.vcpus * scale))
    quota = None
    if vm.cpu_limit_mhz is not None and host is not None and host.cpu_mhz:
        quota = max(1000, int(vm.cpu_limit_mhz / host.cpu_mhz * 100_000))
    return ResourceSpec(cpu_shares=shares, cpu_quota_us=quota, memory_soft_limit_mib=vm.memory_limit_mib)
