"""Reads for the operator dashboard: the inventory tree one level at a time, search by name,
an object with what its page shows, and the recent tasks and events.

Vocabulary:
- node: one entry of the tree, ``(kind, id, name, badge)``; ``badge`` is a short state word
  (``poweredOn``, ``maintenance``, ``notResponding``...) or None.
- children: the nodes one level below a node. A datacenter holds its clusters, the hosts in
  no cluster, its datastores and port groups; a cluster holds its hosts; a host its VMs.
  The tree is loaded lazily, so that 40,000 VMs never travel at once.
Read-only: nothing here changes a row.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from vcenter.core.errors import NotFound
from vcenter.db.models import (
    AlarmState,
    Cluster,
    Datacenter,
    Datastore,
    DrsRecommendation,
    Event,
    Host,
    PortGroup,
    Task,
    VirtualDisk,
    VirtualMachine,
    VirtualNic,
)
from vcenter.services.monitoring import alarms
from vcenter.services.inventory import inventory

TREE_KINDS = ("datacenter", "cluster", "host", "vm", "datastore", "portgroup")
SEARCH_KINDS: dict[str, Any] = {"vm": VirtualMachine, "host": Host, "cluster": Cluster, "datastore": Datastore, "portgroup": PortGroup, "datacenter": Datacenter}


@dataclass(frozen=True)
class Node:
    kind: str
    id: int
    name: str
    badge: str | None = None
    expandable: bool = False
    alarm: str | None = None  # the worst triggered alarm on the object: warning | critical


def _badge(connection_state: str, maintenance: bool, standby: bool) -> str | None:
    if connection_state != "connected":
        return connection_state
    if maintenance:
        return "maintenance"
    if standby:
        return "standby"
    return None


def roots(session: Session) -> list[Node]:
    return with_alarms(session, [Node("datacenter", dc.id, dc.name, None, True) for dc in session.scalars(select(Datacenter).order_by(Datacenter.name))])


def with_alarms(session: Session, nodes: list[Node]) -> list[Node]:
    """The nodes with their worst triggered alarm (one query for the whole list)."""
    ids_by_kind: dict[str, set[int]] = {}
    for n in nodes:
        ids_by_kind.setdefault(n.kind, set()).add(n.id)
    worst: dict[tuple[str, int], str] = {}
    for kind, ids in ids_by_kind.items():
        rows = session.execute(select(AlarmState.object_id, AlarmState.status).where(AlarmState.object_type == kind, AlarmState.object_id.in_(ids), AlarmState.status != "ok"))
        for object_id, status in rows:
            if worst.get((kind, object_id)) != "critical":
                worst[(kind, object_id)] = status
    return [replace(n, alarm=worst.get((n.kind, n.id))) if (n.kind, n.id) in worst else n for n in nodes]


def children(session: Session, kind: str, object_id: int, limit: int = 500) -> list[Node]:
    """The nodes one level below (kind, object_id); at most ``limit`` of each kind."""
    return with_alarms(session, _children(session, kind, object_id, limit))


def _children(session: Session, kind: str, object_id: int, limit: int) -> list[Node]:
    # Columns, not ORM rows: a datastore row would load its mounts (thousands of hosts).
    if kind == "datacenter":
        out = [Node("cluster", i, n, None, True) for i, n in session.execute(select(Cluster.id, Cluster.name).where(Cluster.datacenter_id == object_id).order_by(Cluster.name).limit(limit))]
        out += [
            Node("host", i, n, _badge(c, m, sb), True)
            for i, n, c, m, sb in session.execute(
                select(Host.id, Host.name, Host.connection_state, Host.maintenance, Host.standby).where(Host.datacenter_id == object_id, Host.cluster_id.is_(None)).order_by(Host.name).limit(limit)
            )
        ]
        out += [Node("datastore", i, n) for i, n in session.execute(select(Datastore.id, Datastore.name).where(Datastore.datacenter_id == object_id).order_by(Datastore.name).limit(limit))]
        out += [Node("portgroup", i, n) for i, n in session.execute(select(PortGroup.id, PortGroup.name).where(PortGroup.datacenter_id == object_id).order_by(PortGroup.name).limit(limit))]
        return out
    if kind == "cluster":
        return [
            Node("host", i, n, _badge(c, m, sb), True)
            for i, n, c, m, sb in session.execute(
                select(Host.id, Host.name, Host.connection_state, Host.maintenance, Host.standby).where(Host.cluster_id == object_id).order_by(Host.name).limit(limit)
            )
        ]
    if kind == "host":
        rows = session.execute(select(VirtualMachine.id, VirtualMachine.name, VirtualMachine.power_state).where(VirtualMachine.host_id == object_id).order_by(VirtualMachine.name).limit(limit))
        return [Node("vm", i, n, p) for i, n, p in rows]
    return []


def search(session: Session, text: str, limit: int = 25) -> list[Node]:
    """Objects whose name contains ``text`` (case-insensitive), at most ``limit`` per kind."""
    text = text.strip()
    if not text:
        return []
    pattern = "%" + text.lower().replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%"
    out: list[Node] = []
    for kind, model in SEARCH_KINDS.items():
        for row_id, name in session.execute(select(model.id, model.name).where(func.lower(model.name).like(pattern, escape="\\")).order_by(model.name).limit(limit)):
            out.append(Node(kind, row_id, name))
    return out


def get(session: Session, kind: str, object_id: int) -> Any:
    if kind not in TREE_KINDS:
        raise NotFound(f"no page for {kind!r}", code="UNKNOWN_KIND")
    return inventory.get(session, kind, object_id)


def path_of(session: Session, kind: str, row: Any) -> list[Node]:
    """The breadcrumbs from the datacenter down to (and without) the object."""
    out: list[Node] = []
    dc_id = getattr(row, "datacenter_id", None)
    if dc_id is not None:
        dc = session.get(Datacenter, dc_id)
        out.append(Node("datacenter", dc.id, dc.name))
    cluster_id = getattr(row, "cluster_id", None) if kind in ("host", "vm") else None
    if cluster_id is not None:
        cl = session.get(Cluster, cluster_id)
        out.append(Node("cluster", cl.id, cl.name))
    if kind == "vm" and row.host_id is not None:
        host = session.get(Host, row.host_id)
        out.append(Node("host", host.id, host.name))
    return out


def names(session: Session, model: Any, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    return dict(session.execute(select(model.id, model.name).where(model.id.in_(ids))).all())


def summary(session: Session, kind: str, row: Any) -> dict[str, Any]:
    """What the summary and configure tabs show beyond the row's own fields."""
    out: dict[str, Any] = {}
    if kind == "vm":
        out["datastores"] = names(session, Datastore, {d.datastore_id for d in row.disks})
        out["portgroups"] = names(session, PortGroup, {n.portgroup_id for n in row.nics})
        out["host"] = session.get(Host, row.host_id) if row.host_id else None
        out["cluster"] = session.get(Cluster, row.cluster_id) if row.cluster_id else None
        hosts = select(Host).where(Host.cluster_id == row.cluster_id, Host.id != row.host_id) if row.cluster_id else select(Host).where(Host.id == -1)
        out["migrate_targets"] = list(session.scalars(hosts.order_by(Host.name)))
        out["all_datastores"] = list(session.execute(select(Datastore.id, Datastore.name).where(Datastore.datacenter_id == row.datacenter_id).order_by(Datastore.name)))
    elif kind == "host":
        out["vms"] = session.scalar(select(func.count()).select_from(VirtualMachine).where(VirtualMachine.host_id == row.id)) or 0
        out["running"] = session.scalar(select(func.count()).select_from(VirtualMachine).where(VirtualMachine.host_id == row.id, VirtualMachine.power_state == "poweredOn")) or 0
        out["cluster"] = session.get(Cluster, row.cluster_id) if row.cluster_id else None
        out["memory_used_mib"] = session.scalar(select(func.coalesce(func.sum(VirtualMachine.memory_mib), 0)).where(VirtualMachine.host_id == row.id, VirtualMachine.power_state == "poweredOn")) or 0
    elif kind == "cluster":
        hosts = list(session.scalars(select(Host).where(Host.cluster_id == row.id).order_by(Host.name)))
        out["hosts"] = hosts
        out["vms"] = session.scalar(select(func.count()).select_from(VirtualMachine).where(VirtualMachine.cluster_id == row.id)) or 0
        out["host_names"] = {h.id: h.name for h in hosts}
        recs = list(session.scalars(select(DrsRecommendation).where(DrsRecommendation.cluster_id == row.id).order_by(DrsRecommendation.id.desc()).limit(20)))
        out["recommendations"] = recs
        out["vm_names"] = names(session, VirtualMachine, {r.vm_id for r in recs})
        out["cluster_vms"] = list(session.execute(select(VirtualMachine.id, VirtualMachine.name).where(VirtualMachine.cluster_id == row.id).order_by(VirtualMachine.name).limit(500)))
        out["drs"] = (row.settings or {}).get("drs") or {}
    elif kind == "datacenter":
        for name, model in (("clusters", Cluster), ("hosts", Host), ("vms", VirtualMachine), ("datastores", Datastore), ("portgroups", PortGroup)):
            out[name] = session.scalar(select(func.count()).select_from(model).where(model.datacenter_id == row.id)) or 0
    elif kind == "datastore":
        out["hosts"] = names(session, Host, {m.host_id for m in row.mounts})
        out["disks"] = session.scalar(select(func.count()).select_from(VirtualDisk).where(VirtualDisk.datastore_id == row.id)) or 0
    elif kind == "portgroup":
        out["hosts"] = names(session, Host, {h.host_id for h in row.hosts})
        out["nics"] = session.scalar(select(func.count()).select_from(VirtualNic).where(VirtualNic.portgroup_id == row.id)) or 0
    return out


def _about(query: Any, model: Any, kind: str | None, object_id: int | None) -> Any:
    if kind is None:
        return query
    if kind == "host" and model is Task:
        return query.where(or_((Task.object_type == "host") & (Task.object_id == object_id), Task.host_id == object_id))
    return query.where(model.object_type == kind, model.object_id == object_id)


def recent_tasks(session: Session, limit: int = 15, kind: str | None = None, object_id: int | None = None, where: Any = None) -> list[Task]:
    """``where``: a clause restricting the rows to what the user may see (None: all)."""
    query = _about(select(Task), Task, kind, object_id)
    if where is not None:
        query = query.where(where)
    return list(session.scalars(query.order_by(Task.id.desc()).limit(limit)))


def recent_events(session: Session, limit: int = 15, kind: str | None = None, object_id: int | None = None, after_id: int = 0, where: Any = None) -> list[Event]:
    query = _about(select(Event), Event, kind, object_id).where(Event.id > after_id)
    if where is not None:
        query = query.where(where)
    return list(session.scalars(query.order_by(Event.id.desc()).limit(limit)))


TASK_MODEL = Task  # for callers building a visibility clause (the dashboard does not import the database)
EVENT_MODEL = Event


def triggered_alarms(session: Session, kind: str, object_id: int) -> list[dict[str, Any]]:
    """Alarms not green on the object and below it (vcenter.services.monitoring.alarms)."""
    if kind not in ("datacenter", "cluster", "host", "vm", "datastore"):
        return []
    return alarms.triggered(session, kind, object_id, descendants=True)


def task_fingerprint(tasks: list[Task]) -> tuple:
    """Changes whenever a listed task moves (state, step, progress): the live panel's trigger."""
    return tuple((t.id, t.state, t.step, t.progress) for t in tasks)
