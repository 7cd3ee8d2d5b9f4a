"""Inventory use cases: create, read, update, delete of datacenters, folders, clusters, hosts,
datastores, switches, port groups and resource pools. One transaction each (the caller's session);
every change writes an Event.

Deletion is refused (409 with a stable code) while an object still has children, so nothing
is orphaned; an update that carries ``version`` fails with STALE_VERSION when the row moved on.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vcenter.core.errors import Conflict, Invalid, NotFound, StaleVersion
from vcenter.core.ids import token_hash
from vcenter.core.settings import Settings
from vcenter.db.models import (
    Cluster,
    Datacenter,
    Datastore,
    DatastoreMount,
    Folder,
    Host,
    PortGroup,
    PortGroupHost,
    ResourcePool,
    Switch,
    VirtualDisk,
    VirtualMachine,
    VirtualNic,
)
from vcenter.domain.datastore_roots import DatastorePathRefused, check_datastore_path, check_root, overlaps, parse_roots
from vcenter.domain.uplinks import portgroup_bridge, switch_bridge, vlan_refusal
from vcenter.services.inventory.cluster_settings import check_cluster_settings
from vcenter.services.tasks.events import record_event

KINDS: dict[str, Any] = {
    "datacenter": Datacenter,
    "folder": Folder,
    "cluster": Cluster,
    "host": Host,
    "datastore": Datastore,
    "portgroup": PortGroup,
    "switch": Switch,
    "pool": ResourcePool,
    "vm": VirtualMachine,
}


def get(session: Session, kind: str, object_id: int) -> Any:
    row = session.get(KINDS[kind], object_id)
    if row is None:
        raise NotFound(f"{kind} {object_id} not found", code=f"{kind.upper()}_NOT_FOUND")
    return row


def ref(session: Session, kind: str, object_id: int | None, field: str) -> Any:
    """A reference in a request body: unknown ids are the client's mistake (422 naming it)."""
    if object_id is None:
        return None
    row = session.get(KINDS[kind], object_id)
    if row is None:
        raise Invalid(f"{field}: {kind} {object_id} does not exist", code="INVALID_REFERENCE", details={"field": field})
    return row


def check_version(row: Any, version: int | None) -> None:
    """Optimistic locking: a change naming a version the row is no longer at is 409 STALE_VERSION."""
    if version is not None and version != row.version:
        raise StaleVersion(f"{type(row).__name__} {row.id} is at version {row.version}, not {version}")


def flush_unique(session: Session, what: str) -> None:
    """Flush a new row; a unique name already taken is 409 DUPLICATE_NAME naming ``what``."""
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        raise Conflict(f"{what} already exists", code="DUPLICATE_NAME") from exc


def _apply(row: Any, changes: dict[str, Any]) -> dict[str, Any]:
    before = {}
    for field, value in changes.items():
        if field == "version":
            continue
        old = getattr(row, field)
        if old != value:
            before[field] = old
            setattr(row, field, value)
    return before


def _has(session: Session, model: Any, *conditions: Any) -> bool:
    return bool(session.scalar(select(exists().where(*conditions))))


# --- datacenters ---------------------------------------------------------------------------
def create_datacenter(session: Session, user: str, name: str) -> Datacenter:
    dc = Datacenter(name=name)
    session.add(dc)
    flush_unique(session, f"datacenter {name!r}")
    record_event(session, "datacenter.created", f"datacenter {name} created", username=user, object_type="datacenter", object_id=dc.id, object_name=name)
    return dc


def refuse_nulls(row: Any, changes: dict[str, Any]) -> None:
    """A PATCH body's ``null`` means "no value", which a NOT NULL column cannot take: 422, not
    an IntegrityError (500) at the flush. (Absent fields are not in ``changes``.)"""
    columns = row.__table__.columns
    for field, value in changes.items():
        if value is None and field in columns and not columns[field].nullable and field != "version":
            raise Invalid(f"{field}: cannot be null", code="INVALID", details={"field": field})


def update_object(session: Session, user: str, kind: str, object_id: int, changes: dict[str, Any]) -> Any:
    row = get(session, kind, object_id)
    check_version(row, changes.get("version"))
    refuse_nulls(row, changes)
    for field, ref_kind in (("cluster_id", "cluster"), ("parent_id", "folder" if kind == "folder" else "pool"), ("folder_id", "folder"), ("pool_id", "pool")):
        if changes.get(field) is not None:
            ref(session, ref_kind, changes[field], field)
    if kind == "folder" and changes.get("parent_id") == object_id:
        raise Invalid("parent_id: a folder cannot be its own parent", code="INVALID_REFERENCE", details={"field": "parent_id"})
    if kind == "host" and "cluster_id" in changes and changes["cluster_id"] != row.cluster_id:
        if _has(session, VirtualMachine, VirtualMachine.host_id == row.id):
            raise Conflict(f"host {row.name} has VMs; move them before changing its cluster", code="HOST_HAS_VMS")
    host_ids = changes.pop("host_ids", None)
    if kind == "cluster" and changes.get("settings") is not None:
        check_cluster_settings(changes["settings"])
    if kind == "host" and changes.get("power") is not None:
        from vcenter.power.drivers import make_driver

        try:
            make_driver(changes["power"])
        except ValueError as exc:
            raise Invalid(f"power: {exc}", code="INVALID", details={"field": "power"}) from exc
    before = _apply(row, changes)
    before.pop("power", None)  # holds a credential: never into an event
    if host_ids is not None:
        before["host_ids"] = _set_hosts(session, kind, row, host_ids)
    flush_unique(session, f"{kind} named {getattr(row, 'name', '')!r}")
    if before:
        record_event(
            session,
            f"{kind}.updated",
            f"{kind} {row.name} updated: {', '.join(sorted(before))}",
            username=user,
            object_type=kind,
            object_id=row.id,
            object_name=row.name,
            data={"before": _jsonable(before), "after": _jsonable({k: getattr(row, k, None) for k in before if k != "host_ids"})},
        )
    return row


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if isinstance(v, (int, str, bool, float, list, dict, type(None))) else str(v)) for k, v in values.items()}


def restricting_reference(session: Session, row: Any) -> str | None:
    """The table of a row that still points at ``row`` through a foreign key declared ON DELETE
    RESTRICT (None if none does): the check the database makes at the flush (an
    IntegrityError, a 500), made first, from the schema itself so that a table added later is
    covered too."""
    target = row.__table__
    for table in target.metadata.sorted_tables:
        for fk in table.foreign_keys:
            if fk.column.table is target and (fk.ondelete or "").upper() == "RESTRICT":
                if session.execute(select(fk.parent).where(fk.parent == getattr(row, fk.column.key)).limit(1)).first() is not None:
                    return table.name
    return None


def delete_object(session: Session, user: str, kind: str, object_id: int) -> None:
    row = get(session, kind, object_id)
    blockers = {
        "datacenter": [
            (Cluster, Cluster.datacenter_id == row.id, "DATACENTER_NOT_EMPTY"),
            (Host, Host.datacenter_id == row.id, "DATACENTER_NOT_EMPTY"),
            (VirtualMachine, VirtualMachine.datacenter_id == row.id, "DATACENTER_NOT_EMPTY"),
            (Datastore, Datastore.datacenter_id == row.id, "DATACENTER_NOT_EMPTY"),
            (PortGroup, PortGroup.datacenter_id == row.id, "DATACENTER_NOT_EMPTY"),
            (Switch, Switch.datacenter_id == row.id, "DATACENTER_NOT_EMPTY"),
            (Folder, Folder.datacenter_id == row.id, "DATACENTER_NOT_EMPTY"),
        ],
        "folder": [
            (Folder, Folder.parent_id == row.id, "FOLDER_NOT_EMPTY"),
            (VirtualMachine, VirtualMachine.folder_id == row.id, "FOLDER_NOT_EMPTY"),
        ],
        "cluster": [
            (Host, Host.cluster_id == row.id, "CLUSTER_NOT_EMPTY"),
            (ResourcePool, ResourcePool.cluster_id == row.id, "CLUSTER_NOT_EMPTY"),
        ],
        "host": [(VirtualMachine, VirtualMachine.host_id == row.id, "HOST_HAS_VMS")],
        "datastore": [(VirtualDisk, VirtualDisk.datastore_id == row.id, "DATASTORE_IN_USE")],
        "portgroup": [(VirtualNic, VirtualNic.portgroup_id == row.id, "PORTGROUP_IN_USE")],
        "switch": [(PortGroup, PortGroup.switch_id == row.id, "SWITCH_IN_USE")],
        "pool": [
            (ResourcePool, ResourcePool.parent_id == row.id, "POOL_NOT_EMPTY"),
            (VirtualMachine, VirtualMachine.pool_id == row.id, "POOL_NOT_EMPTY"),
        ],
    }[kind]
    for model, condition, code in blockers:
        if _has(session, model, condition):
            raise Conflict(f"{kind} {row.name} still contains {model.__tablename__}", code=code)
    user_of = restricting_reference(session, row)
    if user_of is not None:  # a backup job, a template...: the database would refuse the delete
        raise Conflict(f"{kind} {row.name} is still used by {user_of}", code=f"{kind.upper()}_IN_USE", details={"used_by": user_of})
    name = row.name
    session.delete(row)
    session.flush()
    record_event(session, f"{kind}.deleted", f"{kind} {name} deleted", username=user, object_type=kind, object_id=object_id, object_name=name)


# --- folders, clusters, pools --------------------------------------------------------------
def create_folder(session: Session, user: str, data: dict[str, Any]) -> Folder:
    ref(session, "datacenter", data["datacenter_id"], "datacenter_id")
    parent = ref(session, "folder", data.get("parent_id"), "parent_id")
    if parent is not None and parent.datacenter_id != data["datacenter_id"]:
        raise Invalid("parent_id: the parent folder is in another datacenter", code="INVALID_REFERENCE", details={"field": "parent_id"})
    folder = Folder(**data)
    session.add(folder)
    flush_unique(session, f"folder {data['name']!r}")
    record_event(session, "folder.created", f"folder {folder.name} created", username=user, object_type="folder", object_id=folder.id, object_name=folder.name)
    return folder


CLUSTER_SETTINGS_SCHEMA = 1


def create_cluster(session: Session, user: str, data: dict[str, Any]) -> Cluster:
    ref(session, "datacenter", data["datacenter_id"], "datacenter_id")
    settings = {"schema": CLUSTER_SETTINGS_SCHEMA, "drs": {}, "dpm": {}, "ha": {}, "evc": {}}
    settings.update(data.get("settings") or {})
    check_cluster_settings(settings)
    cluster = Cluster(name=data["name"], datacenter_id=data["datacenter_id"], settings=settings)
    session.add(cluster)
    flush_unique(session, f"cluster {data['name']!r}")
    # Every cluster has its root resource pool, as in vCenter.
    session.add(ResourcePool(name="Resources", cluster_id=cluster.id, parent_id=None))
    record_event(session, "cluster.created", f"cluster {cluster.name} created", username=user, object_type="cluster", object_id=cluster.id, object_name=cluster.name)
    return cluster


def create_pool(session: Session, user: str, data: dict[str, Any]) -> ResourcePool:
    ref(session, "cluster", data["cluster_id"], "cluster_id")
    parent = ref(session, "pool", data.get("parent_id"), "parent_id")
    if parent is None:
        parent = session.scalar(select(ResourcePool).where(ResourcePool.cluster_id == data["cluster_id"], ResourcePool.parent_id.is_(None)))
        data = {**data, "parent_id": parent.id if parent else None}
    elif parent.cluster_id != data["cluster_id"]:
        raise Invalid("parent_id: the parent pool is in another cluster", code="INVALID_REFERENCE", details={"field": "parent_id"})
    pool = ResourcePool(**data)
    session.add(pool)
    flush_unique(session, f"resource pool {data['name']!r}")
    record_event(session, "pool.created", f"resource pool {pool.name} created", username=user, object_type="pool", object_id=pool.id, object_name=pool.name)
    return pool


# --- hosts ---------------------------------------------------------------------------------
def create_host(session: Session, user: str, data: dict[str, Any]) -> Host:
    """Add a host; its agent registers later with a token from services.inventory.hosts."""
    ref(session, "datacenter", data["datacenter_id"], "datacenter_id")
    cluster = ref(session, "cluster", data.get("cluster_id"), "cluster_id")
    if cluster is not None and cluster.datacenter_id != data["datacenter_id"]:
        raise Invalid("cluster_id: the cluster is in another datacenter", code="INVALID_REFERENCE", details={"field": "cluster_id"})
    host = Host(**data, connection_state="disconnected", trust_state="awaitingAgent")
    session.add(host)
    flush_unique(session, f"host {data['name']!r}")
    record_event(session, "host.added", f"host {host.name} added; waiting for its agent to register", username=user, object_type="host", object_id=host.id, object_name=host.name)
    return host


def host_by_token(session: Session, host_id: int, token: str) -> Host | None:
    host = session.get(Host, host_id)
    if host is None or host.trust_state != "trusted" or host.agent_token_hash is None or host.agent_token_hash != token_hash(token):
        return None
    return host


# --- datastores and port groups ------------------------------------------------------------
def _hosts_in(session: Session, datacenter_id: int, host_ids: list[int]) -> list[Host]:
    hosts = []
    for host_id in dict.fromkeys(host_ids):
        host = ref(session, "host", host_id, "host_ids")
        if host.datacenter_id != datacenter_id:
            raise Invalid(f"host_ids: host {host_id} is in another datacenter", code="INVALID_REFERENCE", details={"field": "host_ids"})
        hosts.append(host)
    return hosts


def _set_hosts(session: Session, kind: str, row: Any, host_ids: list[int]) -> list[int]:
    hosts = _hosts_in(session, row.datacenter_id, host_ids)
    if kind == "datastore":
        before = sorted(m.host_id for m in row.mounts)
        removed = set(before) - set(host_ids)
        if removed and _has(
            session,
            VirtualDisk,
            VirtualDisk.datastore_id == row.id,
            VirtualDisk.vm_id == VirtualMachine.id,
            VirtualMachine.host_id.in_(removed),
        ):
            raise Conflict("a host to unmount from still runs VMs with disks on this datastore", code="DATASTORE_IN_USE")
        _mountable_on(row.url, [h for h in hosts if h.id not in before])
        row.mounts = [m for m in row.mounts if m.host_id in host_ids] + [DatastoreMount(host_id=h.id, path=row.url) for h in hosts if h.id not in before]
        return before
    if kind == "portgroup":
        _tagged_supported(row.vlan_id if row.switch_id is not None else 0, hosts)
        before = sorted(m.host_id for m in row.hosts)
        row.hosts = [m for m in row.hosts if m.host_id in host_ids] + [PortGroupHost(host_id=h.id, present=False) for h in hosts if h.id not in before]
        return before
    raise Invalid(f"{kind} has no host list", code="INVALID")


def datastore_url(url: str, settings: Settings) -> str:
    """The normal form of a datastore's ``url`` when it lies below one of the server's
    datastore roots (vcenter.domain.datastore_roots), else 422 DATASTORE_PATH_NOT_ALLOWED. The
    server's own folders (keys, uploads) and the agents' state folder are never a datastore:
    a server may run on a hypervisor host."""
    roots = parse_roots(settings.datastore_roots)
    try:
        return check_datastore_path(url, roots, protected=(settings.key_dir, settings.upload_dir, settings.agent_state_dir))
    except DatastorePathRefused as exc:
        raise Invalid(f"url: {exc.message}", code=exc.code, details={"field": "url", "reason": exc.reason, "roots": list(roots)}) from None


def _mountable_on(url: str, hosts: list[Host]) -> None:
    """422 DATASTORE_PATH_NOT_ALLOWED when ``url`` lies outside the datastore roots a host's
    agent reported (a host that has not reported yet is judged by its agent when it does)."""
    for host in hosts:
        if host.datastore_roots is None:
            continue
        roots = []
        for root in host.datastore_roots:
            try:
                roots.append(check_root(str(root)))
            except DatastorePathRefused:
                continue
        try:
            check_datastore_path(url, roots)
        except DatastorePathRefused as exc:
            raise Invalid(
                f"host_ids: host {host.name} provides datastores only below {', '.join(roots) or 'no folder'}: {exc.message}",
                code=exc.code,
                details={"field": "host_ids", "host_id": host.id, "reason": exc.reason, "roots": roots},
            ) from None


def _no_overlap(session: Session, datacenter_id: int, url: str) -> None:
    """409 DATASTORE_PATH_OVERLAPS when ``url`` is, holds or lies inside another datastore of the
    datacenter (whose hosts it shares): a permission on one would reach the other's files."""
    for other in session.scalars(select(Datastore).where(Datastore.datacenter_id == datacenter_id)):
        if overlaps(url, other.url):
            raise Conflict(f"url: {url} overlaps datastore {other.name} at {other.url}", code="DATASTORE_PATH_OVERLAPS", details={"field": "url", "datastore_id": other.id})


def create_datastore(session: Session, user: str, data: dict[str, Any], settings: Settings) -> Datastore:
    ref(session, "datacenter", data["datacenter_id"], "datacenter_id")
    data = {**data, "url": datastore_url(data["url"], settings)}
    _no_overlap(session, data["datacenter_id"], data["url"])
    host_ids = data.pop("host_ids", [])
    hosts = _hosts_in(session, data["datacenter_id"], host_ids)
    _mountable_on(data["url"], hosts)
    datastore = Datastore(**data)
    datastore.mounts = [DatastoreMount(host_id=h.id, path=data["url"]) for h in hosts]
    session.add(datastore)
    flush_unique(session, f"datastore {data['name']!r}")
    record_event(session, "datastore.created", f"datastore {datastore.name} created at {datastore.url}", username=user, object_type="datastore", object_id=datastore.id, object_name=datastore.name)
    return datastore


def create_switch(session: Session, user: str, data: dict[str, Any]) -> Switch:
    ref(session, "datacenter", data["datacenter_id"], "datacenter_id")
    switch = Switch(**data)
    session.add(switch)
    flush_unique(session, f"switch {data['name']!r}")
    record_event(session, "switch.created", f"switch {switch.name} created with uplinks {', '.join(switch.uplinks)}", username=user, object_type="switch", object_id=switch.id, object_name=switch.name)
    return switch


def switch_read(sw: Switch) -> dict[str, Any]:
    return {**{c: getattr(sw, c) for c in ("id", "name", "datacenter_id", "uplinks", "version", "created_at")}, "bridge": switch_bridge(sw.id)}


def _tagged_supported(vlan_id: int, hosts: list[Host]) -> None:
    """409 VLAN_UNSUPPORTED when a tagged port group would go to a host whose agent reported a
    kernel without 802.1Q (made untagged it would join the untagged segment: never)."""
    for host in hosts:
        code = vlan_refusal(vlan_id, host.vlan_8021q)
        if code:
            raise Conflict(
                f"host_ids: host {host.name} has no 802.1Q in its kernel: VLAN {vlan_id} cannot be carried there (a tagged port group is never made untagged)",
                code=code,
                details={"field": "host_ids", "host_id": host.id, "vlan_id": vlan_id},
            )


def create_portgroup(session: Session, user: str, data: dict[str, Any]) -> PortGroup:
    ref(session, "datacenter", data["datacenter_id"], "datacenter_id")
    switch = ref(session, "switch", data.get("switch_id"), "switch_id")
    if switch is not None and switch.datacenter_id != data["datacenter_id"]:
        raise Invalid("switch_id: the switch is in another datacenter", code="INVALID_REFERENCE", details={"field": "switch_id"})
    if switch is not None and data["vlan_id"] and _has(session, PortGroup, PortGroup.switch_id == switch.id, PortGroup.vlan_id == data["vlan_id"]):
        # One 802.1Q sub-interface per uplink and VLAN: a second port group would fight over it.
        raise Conflict(f"switch {switch.name} already has a port group on VLAN {data['vlan_id']}", code="VLAN_IN_USE", details={"field": "vlan_id"})
    host_ids = data.pop("host_ids", [])
    hosts = _hosts_in(session, data["datacenter_id"], host_ids)
    if switch is not None:
        _tagged_supported(data["vlan_id"], hosts)
    portgroup = PortGroup(**data, bridge="pending")
    portgroup.hosts = [PortGroupHost(host_id=h.id, present=False) for h in hosts]
    session.add(portgroup)
    flush_unique(session, f"port group {data['name']!r}")
    portgroup.bridge = portgroup_bridge(portgroup.id, portgroup.switch_id, portgroup.vlan_id)  # short, a valid Linux interface name
    on = f" on switch {switch.name}" if switch is not None else ""
    record_event(
        session,
        "portgroup.created",
        f"port group {portgroup.name} (VLAN {portgroup.vlan_id}{on}) created",
        username=user,
        object_type="portgroup",
        object_id=portgroup.id,
        object_name=portgroup.name,
    )
    return portgroup


def datastore_read(ds: Datastore) -> dict[str, Any]:
    return {**{c: getattr(ds, c) for c in ("id", "name", "datacenter_id", "kind", "url", "capacity_bytes", "free_bytes", "version", "created_at")}, "host_ids": sorted(m.host_id for m in ds.mounts)}


def portgroup_read(pg: PortGroup) -> dict[str, Any]:
    return {
        **{c: getattr(pg, c) for c in ("id", "name", "datacenter_id", "switch_id", "vlan_id", "bridge", "version", "created_at")},
        "host_ids": sorted(m.host_id for m in pg.hosts),
        "present_on_host_ids": sorted(m.host_id for m in pg.hosts if m.present),
        "errors": [{"host_id": m.host_id, "code": m.error_code, "message": m.error_message or ""} for m in sorted(pg.hosts, key=lambda m: m.host_id) if m.error_code],
    }
