"""Seeding a realistic inventory at scale (``vcenter seed --hosts 2500 --vms 40000``), for
benchmarks and demos of the dashboard: datacenters, clusters of up to 32 hosts, a shared
datastore per cluster mounted by its hosts, port groups on every host, VMs spread over the
hosts (most powered on) with a disk and a NIC each, a few VM folders per datacenter.

Everything goes in with bulk inserts (one statement per few thousand rows), so 40,000 VMs
take seconds. The inventory is invented (the hosts have no agents: they are marked
connected and trusted only so that the dashboard shows them as a running system would); it
is never a test of a feature. Deterministic for a given ``seed``.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from vcenter.core.errors import Conflict
from vcenter.db.models import (
    Cluster,
    Datacenter,
    Datastore,
    DatastoreMount,
    Folder,
    Host,
    PortGroup,
    PortGroupHost,
    VirtualDisk,
    VirtualMachine,
    VirtualNic,
)

_NS = uuid.UUID("6f1c1e7e-2b1e-4c55-9a43-5eed5eed5eed")
_ROLES = ("web", "app", "db", "cache", "batch", "ci", "mq", "search", "proxy", "auth")
_OS = ("debian12", "ubuntu22.04", "rhel9", "win2022", "alpine3")


@dataclass
class SeedResult:
    datacenters: int
    clusters: int
    hosts: int
    datastores: int
    portgroups: int
    vms: int

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def _chunks(rows: Iterable[dict[str, Any]], size: int = 5000) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _bulk(session: Session, model: Any, rows: Iterable[dict[str, Any]]) -> int:
    count = 0
    for chunk in _chunks(rows):
        session.execute(insert(model), chunk)
        count += len(chunk)
    return count


def seed(session: Session, hosts: int, vms: int, datacenters: int = 2, hosts_per_cluster: int = 32, seed: int = 1) -> SeedResult:
    if hosts < 1 or vms < 0 or datacenters < 1 or hosts_per_cluster < 1:
        raise ValueError("hosts >= 1, vms >= 0, datacenters >= 1, hosts_per_cluster >= 1")
    if session.scalar(select(func.count()).select_from(Host)):
        raise Conflict("the inventory already has hosts: seed an empty database", code="SEED_NOT_EMPTY")
    rnd = random.Random(seed)
    datacenters = min(datacenters, hosts)
    _bulk(session, Datacenter, ({"name": f"dc{d + 1:02d}"} for d in range(datacenters)))
    dc_ids = list(session.scalars(select(Datacenter.id).where(Datacenter.name.like("dc%")).order_by(Datacenter.id)))[-datacenters:]

    # Hosts split evenly over datacenters, then into clusters of hosts_per_cluster.
    per_dc = [hosts // datacenters + (1 if d < hosts % datacenters else 0) for d in range(datacenters)]
    cluster_rows, host_plan = [], []
    for d, count in enumerate(per_dc):
        clusters_here = -(-count // hosts_per_cluster)
        for c in range(clusters_here):
            cluster_rows.append({"name": f"cl{c + 1:03d}", "datacenter_id": dc_ids[d], "settings": {"schema": 1, "drs": {"enabled": True, "automation": "manual"}}})
        for h in range(count):
            host_plan.append((d, h // hosts_per_cluster))
    _bulk(session, Cluster, cluster_rows)
    cluster_ids = {(dc, name): cid for cid, dc, name in session.execute(select(Cluster.id, Cluster.datacenter_id, Cluster.name))}

    def host_rows() -> Iterator[dict[str, Any]]:
        for n, (d, c) in enumerate(host_plan):
            cores = rnd.choice((32, 48, 64))
            yield {
                "name": f"esx{n + 1:05d}.dc{d + 1:02d}.example.net",
                "address": f"10.{d + 1}.{(n // 250) % 250}.{n % 250 + 1}",
                "datacenter_id": dc_ids[d],
                "cluster_id": cluster_ids[(dc_ids[d], f"cl{c + 1:03d}")],
                "connection_state": "connected",
                "trust_state": "trusted",
                "hypervisor": "kvm",
                "host_uuid": str(uuid.uuid5(_NS, f"host-{n}")),
                "cpu_model": "Skylake-Server-IBRS",
                "cpu_cores": cores,
                "cpu_mhz": 2600,
                "memory_mib": cores * 8192,
                "libvirt_uri": "qemu+tls://esx/system",
            }

    _bulk(session, Host, host_rows())
    host_rows_db = session.execute(select(Host.id, Host.datacenter_id, Host.cluster_id).order_by(Host.id)).all()

    # One shared datastore per cluster, mounted by each of its hosts.
    _bulk(
        session,
        Datastore,
        (
            {"name": f"ds-{name}", "datacenter_id": dc, "kind": "dir", "url": f"/srv/datastores/{dc}/{name}", "capacity_bytes": 16 * 2**40, "free_bytes": int(16 * 2**40 * rnd.uniform(0.08, 0.7))}
            for (dc, name) in cluster_ids
        ),
    )
    ds_of_cluster = {
        cluster_ids[(dc, name[3:])]: ds_id
        for ds_id, dc, name in session.execute(select(Datastore.id, Datastore.datacenter_id, Datastore.name))
        if name.startswith("ds-") and (dc, name[3:]) in cluster_ids
    }
    _bulk(session, DatastoreMount, ({"datastore_id": ds_of_cluster[cl], "host_id": hid, "path": f"/var/lib/virtcenter/datastores/{ds_of_cluster[cl]}"} for hid, _dc, cl in host_rows_db))

    # Port groups per datacenter, present on every host of it.
    _bulk(session, PortGroup, ({"name": f"vlan{vlan}", "datacenter_id": dc, "vlan_id": vlan, "bridge": f"vcbr{vlan}"} for dc in dc_ids for vlan in (10, 20, 30, 40)))
    pgs: dict[int, list[int]] = {}
    for pg_id, dc in session.execute(select(PortGroup.id, PortGroup.datacenter_id).order_by(PortGroup.id)):
        pgs.setdefault(dc, []).append(pg_id)
    _bulk(session, PortGroupHost, ({"portgroup_id": pg, "host_id": hid, "present": True} for hid, dc, _cl in host_rows_db for pg in pgs.get(dc, [])))

    _bulk(session, Folder, ({"name": role, "kind": "vm", "datacenter_id": dc} for dc in dc_ids for role in _ROLES[:5]))
    folders = {(dc, name): fid for fid, dc, name in session.execute(select(Folder.id, Folder.datacenter_id, Folder.name))}

    # VMs round-robin over the hosts; names unique per datacenter.
    def vm_rows() -> Iterator[dict[str, Any]]:
        for n in range(vms):
            hid, dc, cl = host_rows_db[n % len(host_rows_db)]
            role = _ROLES[n % len(_ROLES)]
            yield {
                "name": f"{role}-{n + 1:06d}",
                "datacenter_id": dc,
                "cluster_id": cl,
                "host_id": hid,
                "folder_id": folders.get((dc, role)),
                "vcpus": rnd.choice((1, 2, 2, 4, 4, 8)),
                "memory_mib": rnd.choice((1024, 2048, 4096, 8192, 16384)),
                "guest_os": rnd.choice(_OS),
                "power_state": "poweredOn" if rnd.random() < 0.85 else "poweredOff",
                "status": "ready",
                "libvirt_uuid": str(uuid.uuid5(_NS, f"vm-{n}")),
            }

    _bulk(session, VirtualMachine, vm_rows())
    placed = session.execute(select(VirtualMachine.id, VirtualMachine.datacenter_id, VirtualMachine.cluster_id).order_by(VirtualMachine.id)).all()
    _bulk(session, VirtualDisk, ({"vm_id": vid, "index": 0, "datastore_id": ds_of_cluster[cl], "file": f"vm-{vid}/disk0.qcow2", "capacity_mib": 20480, "format": "qcow2"} for vid, _dc, cl in placed))
    _bulk(
        session,
        VirtualNic,
        (
            {
                "vm_id": vid,
                "index": 0,
                "portgroup_id": pgs[dc][vid % len(pgs[dc])],
                "mac": f"52:54:{(vid >> 24) & 255:02x}:{(vid >> 16) & 255:02x}:{(vid >> 8) & 255:02x}:{vid & 255:02x}",
                "model": "virtio",
            }
            for vid, dc, _cl in placed
        ),
    )
    return SeedResult(datacenters=len(dc_ids), clusters=len(cluster_rows), hosts=len(host_rows_db), datastores=len(ds_of_cluster), portgroups=sum(len(v) for v in pgs.values()), vms=len(placed))
