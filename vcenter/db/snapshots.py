"""Repositories that turn rows into the domain's plain snapshots (vcenter.domain.snapshot).

Vocabulary: ids become strings in snapshots (the domain does not care where they come from).
What counts as running on a host: a VM powered on (or suspended: its memory is reserved for
its resume) there, or a VM whose power-on is in flight there (a pending reservation, so two
power-ons decided at once never take the same last slot). A host offers the datastores it
mounts and the port groups its agent reported present. CPU: a host's reported model and
features (libvirt-expanded); a VM's CPU definition becomes a requirement. A host named as a
dedicated failover host by its cluster's HA admission policy (HA enabled, kind
"failover-hosts") carries ``failover`` (placement and DRS keep it empty).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vcenter.db.models import (
    Cluster,
    ClusterRule,
    DatastoreMount,
    Host,
    ObjectClaim,
    PortGroupHost,
    ResourcePool,
    Task,
    VirtualDisk,
    VirtualMachine,
    VirtualNic,
)
from vcenter.domain.cpu import CpuModel, CpuRequirement
from vcenter.domain.snapshot import Alloc, ClusterSnapshot, HostSnapshot, PendingReservation, PoolNode, Rule, RuleKind, VmSnapshot

OCCUPYING_STATES = ("poweredOn", "suspended")


def host_snapshot(session: Session, host: Host) -> HostSnapshot:
    datastores = session.scalars(select(DatastoreMount.datastore_id).where(DatastoreMount.host_id == host.id)).all()
    portgroups = session.scalars(select(PortGroupHost.portgroup_id).where(PortGroupHost.host_id == host.id, PortGroupHost.present.is_(True))).all()
    return _host_snapshot(host, datastores, portgroups)


def _host_snapshot(host: Host, datastores: Iterable[int], portgroups: Iterable[int]) -> HostSnapshot:
    cores = host.cpu_cores or 0
    cpu = CpuModel(vendor="", model=host.cpu_model or "", features=frozenset(host.cpu_features or [])) if host.cpu_features else None
    return HostSnapshot(
        id=str(host.id),
        name=host.name,
        connection=host.connection_state,
        maintenance=host.maintenance,
        standby=host.standby,
        cpu_mhz=float(cores * (host.cpu_mhz or 0)),
        cores=cores,
        memory_mib=host.memory_mib or 0,
        datastores=frozenset(str(d) for d in datastores),
        port_groups=frozenset(str(p) for p in portgroups),
        cpu=cpu,
    )


def vm_snapshot(vm: VirtualMachine, running_on: int | None) -> VmSnapshot:
    return _vm_snapshot(vm, running_on, (d.datastore_id for d in vm.disks), (n.portgroup_id for n in vm.nics))


def _vm_snapshot(vm: Any, running_on: int | None, datastores: Iterable[int], portgroups: Iterable[int]) -> VmSnapshot:
    """``vm``: a VirtualMachine or a row of its columns (cluster_snapshot's)."""
    cpu = None
    if vm.cpu and vm.cpu.get("features_require"):
        cpu = CpuRequirement(features=frozenset(vm.cpu["features_require"]), name=vm.cpu.get("model", ""))
    return VmSnapshot(
        id=str(vm.id),
        name=vm.name,
        vcpus=vm.vcpus,
        memory_mib=vm.memory_mib,
        cpu_reservation_mhz=float(vm.cpu_reservation_mhz or 0),
        memory_reservation_mib=vm.memory_reservation_mib or 0,
        cpu_limit_mhz=float(vm.cpu_limit_mhz) if vm.cpu_limit_mhz is not None else None,
        memory_limit_mib=vm.memory_limit_mib,
        datastores=frozenset(str(d) for d in datastores),
        port_groups=frozenset(str(p) for p in portgroups),
        cpu=cpu,
        host=str(running_on) if running_on is not None else None,
        pool=_pool_id(vm),
    )


def _pool_id(vm: Any) -> str | None:
    return str(vm.pool_id) if vm.pool_id is not None else None


def rule_snapshot(rule: ClusterRule) -> Rule:
    return Rule(
        name=rule.name,
        kind=RuleKind(rule.kind),
        must=rule.mandatory,
        vms=frozenset(str(v) for v in rule.vm_ids),
        hosts=frozenset(str(h) for h in rule.host_ids),
        vm_group=rule.vm_group,
        host_group=rule.host_group,
        enabled=rule.enabled,
    )


def pool_snapshot(pool: ResourcePool, root_id: int | None) -> PoolNode:
    parent = None if pool.parent_id in (None, root_id) else str(pool.parent_id)
    return PoolNode(
        id=str(pool.id),
        name=pool.name,
        parent=parent,
        cpu=Alloc(
            reservation=float(pool.cpu_reservation_mhz),
            limit=float(pool.cpu_limit_mhz) if pool.cpu_limit_mhz is not None else None,
            shares=float(pool.cpu_shares),
            expandable=pool.expandable_reservation,
        ),
        mem=Alloc(
            reservation=float(pool.memory_reservation_mib),
            limit=float(pool.memory_limit_mib) if pool.memory_limit_mib is not None else None,
            shares=float(pool.memory_shares),
            expandable=pool.expandable_reservation,
        ),
    )


# What _vm_snapshot and the pending reservations read of a VM.
_VM_COLUMNS = tuple(
    getattr(VirtualMachine, name)
    for name in ("id", "name", "host_id", "pool_id", "power_state", "vcpus", "memory_mib", "cpu_reservation_mhz", "memory_reservation_mib", "cpu_limit_mhz", "memory_limit_mib", "cpu")
)


def _grouped(session: Session, query: Any) -> dict[int, list[Any]]:
    """The rows (owner id, value) of ``query``, as owner id -> values in the query's order."""
    grouped: dict[int, list[Any]] = {}
    for owner, value in session.execute(query):
        grouped.setdefault(owner, []).append(value)
    return grouped


def cluster_snapshot(session: Session, cluster_id: int) -> ClusterSnapshot:
    cluster = session.get(Cluster, cluster_id)
    hosts = list(session.scalars(select(Host).where(Host.cluster_id == cluster_id).order_by(Host.id)))
    pools = list(session.scalars(select(ResourcePool).where(ResourcePool.cluster_id == cluster_id).order_by(ResourcePool.id)))
    root = next((p.id for p in pools if p.parent_id is None), None)
    # Power-ons in flight: their VM is already counted on its host.
    starting = set(session.scalars(select(Task.object_id).join(ObjectClaim, ObjectClaim.task_id == Task.id).where(Task.object_type == "vm", Task.kind.in_(("vm.powerOn", "vm.resume")))))
    # Columns, not ORM objects: a cluster's hundreds of VMs, each with its disks, NICs and
    # statistics loaded, cost more than placing them (a power-on reads this snapshot).
    in_cluster = VirtualMachine.cluster_id == cluster_id
    disks = _grouped(session, select(VirtualDisk.vm_id, VirtualDisk.datastore_id).join(VirtualMachine, VirtualMachine.id == VirtualDisk.vm_id).where(in_cluster).order_by(VirtualDisk.index))
    nics = _grouped(session, select(VirtualNic.vm_id, VirtualNic.portgroup_id).join(VirtualMachine, VirtualMachine.id == VirtualNic.vm_id).where(in_cluster).order_by(VirtualNic.index))
    vms, pending = [], []
    for vm in session.execute(select(*_VM_COLUMNS).where(in_cluster).order_by(VirtualMachine.id)):
        running = vm.host_id if vm.power_state in OCCUPYING_STATES else None
        if running is None and vm.id in starting and vm.host_id is not None:
            pending.append(PendingReservation(vm_id=str(vm.id), host_id=str(vm.host_id), memory_mib=vm.memory_mib, vcpus=vm.vcpus, cpu_reservation_mhz=float(vm.cpu_reservation_mhz or 0)))
        snapshot = _vm_snapshot(vm, running, disks.get(vm.id, ()), nics.get(vm.id, ()))
        if vm.pool_id == root:
            snapshot = VmSnapshot(**{**{f: getattr(snapshot, f) for f in snapshot.__slots__}, "pool": None})
        vms.append(snapshot)
    rules = [rule_snapshot(r) for r in session.scalars(select(ClusterRule).where(ClusterRule.cluster_id == cluster_id).order_by(ClusterRule.id))]
    failover = failover_host_ids(cluster)
    on_host = Host.cluster_id == cluster_id
    mounts = _grouped(session, select(DatastoreMount.host_id, DatastoreMount.datastore_id).join(Host, Host.id == DatastoreMount.host_id).where(on_host))
    portgroups = _grouped(session, select(PortGroupHost.host_id, PortGroupHost.portgroup_id).join(Host, Host.id == PortGroupHost.host_id).where(on_host, PortGroupHost.present.is_(True)))
    return ClusterSnapshot(
        hosts=tuple(replace(_host_snapshot(h, mounts.get(h.id, ()), portgroups.get(h.id, ())), failover=str(h.id) in failover) for h in hosts),
        vms=tuple(vms),
        rules=tuple(rules),
        pools=tuple(pool_snapshot(p, root) for p in pools if p.id != root),
        pending=tuple(pending),
        evc=_evc(cluster),
        id=str(cluster_id),
    )


def failover_host_ids(cluster: Cluster | None) -> frozenset[str]:
    """The dedicated failover hosts of the cluster's HA admission policy (validated by
    vcenter.schemas.ha when stored), only while HA is enabled, as services.ha.ha.policy_of reads it."""
    cfg = (cluster.settings or {}).get("ha") if cluster else None
    if not cfg or not cfg.get("enabled"):
        return frozenset()
    admission = cfg.get("admission") or {}
    if admission.get("kind") != "failover-hosts":
        return frozenset()
    return frozenset(str(h) for h in admission.get("failover_hosts") or [])


def _evc(cluster: Cluster | None) -> CpuModel | None:
    evc = (cluster.settings or {}).get("evc") if cluster else None
    if not evc or not evc.get("features"):
        return None
    return CpuModel(vendor=evc.get("vendor", ""), model=evc.get("mode", ""), features=frozenset(evc["features"]))
