"""Inventory reads of the vSphere-compatible API: ``GET /api/vcenter/{datacenter, cluster,
host, datastore, network, folder, resource-pool, vm}`` with vSphere's filters, and each
``.../{id}``.

Decisions:
- Every list answers only what the caller may see (our visibility rule, applied in the query:
  vcenter.services.inventory.listing with CurrentUserInfo.visible), so a list never answers 403;
  a get checks System.View on the object its id names (on the datacenter for its hidden
  folders, on the root for group-d1) before reading it: 403
  UNAUTHORIZED, then 404 NOT_FOUND. Lists are in id order.
- Containment filters (``folders`` of every list but the folder list, ``resource_pools`` of the
  VM list) match an object anywhere below one of the folders or pools given, as vSphere's
  "folders that must contain the object" do (so ``folders=group-h<dc>&clusters=...`` finds a
  host in a cluster); ``parent_folders`` and ``parent_resource_pools`` match direct children.
  Datacenters are in group-d1; clusters and hosts in their datacenter's host folder;
  datastores and port groups in its datastore and network folders; a VM in its folder chain
  up to the datacenter's vm folder, and in its pool chain up to its cluster's root pool (a VM
  of a cluster in no pool of ours is in that root pool).
- Lists stop at vSphere's bounds (1000 objects; 4000 VMs): beyond them 400
  UNABLE_TO_ALLOCATE_RESOURCE, narrow the filters, as vSphere answers.
- GET host/{id}, network/{id} and folder/{id} are not vSphere 7/8 operations; we answer their
  Summary (the collection's host_info asks for a host by id).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import Request

from vcenter.api.deps import CurrentUserInfo, DbDep
from vcenter.api.vsphere import filters, ids, shapes
from vcenter.api.vsphere.ids import Ref
from vcenter.api.vsphere.route import router as vsphere_router
from vcenter.api.vsphere.sessions import requires
from vcenter.core.errors import Invalid, NotFound
from vcenter.services.ha import ha
from vcenter.services.inventory import inventory as inv
from vcenter.services.inventory.listing import list_rows

router = vsphere_router(prefix="/api/vcenter")
Viewer = Annotated[CurrentUserInfo, requires("System.View")]

CAP = 1000
VM_CAP = 4000
# Rows read before the filters computed here apply (containment, enumerations).
HARD_LIMIT = 20000


def _too_many(cap: int) -> Invalid:
    return Invalid(f"more than {cap} objects match: narrow the filters", code="UNABLE_TO_ALLOCATE_RESOURCE")


def _read(db: Any, kind: str, restrict: Any, given: dict[str, Any]) -> list[Any]:
    wanted = {k: sorted(v) for k, v in given.items() if v is not None}
    if any(not v for v in wanted.values()):
        return []
    total, rows = list_rows(db, inv.KINDS[kind], filters=wanted, filterable=set(wanted), sort=None, sortable=set(), offset=0, limit=HARD_LIMIT, restrict=restrict)
    if total > HARD_LIMIT:
        raise _too_many(HARD_LIMIT)
    return rows


def visible(db: Any, user: CurrentUserInfo, kind: str, **given: Any) -> list[Any]:
    """The ``kind`` rows the caller may see, filtered in the query (``name`` may over-match a
    ``*``: callers compare names exactly)."""
    return _read(db, kind, user.visible(db, kind, inv.KINDS[kind]), given)


def structure(db: Any, kind: str, **given: Any) -> list[Any]:
    """All ``kind`` rows (to compute containment, never shown)."""
    return _read(db, kind, None, given)


def capped(items: list[dict[str, Any]], cap: int = CAP) -> list[dict[str, Any]]:
    if len(items) > cap:
        raise _too_many(cap)
    return items


def _spec(request: Request, kind: str) -> filters.Filters:
    return filters.read(kind, list(request.query_params.multi_items()))


def folder_chain(folder_id: int | None, category: str, datacenter_id: int, folders: dict[int, Any]) -> set[Ref]:
    """The folders holding an object in our folder ``folder_id`` (None: the datacenter's
    hidden folder of ``category``), up to group-d1."""
    chain = {ids.ROOT, Ref("hidden_folder", datacenter_id, category)}
    seen: set[int] = set()
    while folder_id is not None and folder_id not in seen and folder_id in folders:
        seen.add(folder_id)
        chain.add(Ref("folder", folder_id, category))
        folder_id = folders[folder_id].parent_id
    return chain


def pool_chain(pool_id: int | None, cluster_id: int | None, pools: dict[int, Any]) -> set[int]:
    """The pools holding a VM in our pool ``pool_id`` (None: its cluster's root pool)."""
    if pool_id is None and cluster_id is not None:
        pool_id = next((p.id for p in pools.values() if p.cluster_id == cluster_id and p.parent_id is None), None)
    chain: set[int] = set()
    while pool_id is not None and pool_id not in chain and pool_id in pools:
        chain.add(pool_id)
        pool_id = pools[pool_id].parent_id
    return chain


def _named(rows: Iterable[Any], names: set[str] | None) -> list[Any]:
    return [r for r in rows if filters.matches(r.name, names)]


# --- lists ----------------------------------------------------------------------------------
@router.get("/datacenter", name="vsphere_list_datacenters")
def list_datacenters(request: Request, db: DbDep, user: Viewer) -> Any:
    spec = _spec(request, "datacenter")
    if not filters.contains({ids.ROOT}, spec.folders):
        return []
    rows = _named(visible(db, user, "datacenter", id=spec.of("datacenters"), name=spec.names), spec.names)
    return capped([shapes.datacenter_summary(r) for r in rows])


@router.get("/cluster", name="vsphere_list_clusters")
def list_clusters(request: Request, db: DbDep, user: Viewer) -> Any:
    spec = _spec(request, "cluster")
    rows = _named(visible(db, user, "cluster", id=spec.of("clusters"), name=spec.names, datacenter_id=spec.of("datacenters")), spec.names)
    rows = [r for r in rows if filters.contains({ids.ROOT, Ref("hidden_folder", r.datacenter_id, "host")}, spec.folders)]
    return capped([shapes.cluster_summary(r, ha.config_of(r).enabled) for r in rows])


@router.get("/host", name="vsphere_list_hosts")
def list_hosts(request: Request, db: DbDep, user: Viewer) -> Any:
    spec = _spec(request, "host")
    rows = _named(visible(db, user, "host", id=spec.of("hosts"), name=spec.names, datacenter_id=spec.of("datacenters"), cluster_id=spec.of("clusters")), spec.names)
    states = spec.enums.get("connection_states")
    rows = [
        r
        for r in rows
        if filters.contains({ids.ROOT, Ref("hidden_folder", r.datacenter_id, "host")}, spec.folders)
        and (spec.standalone is None or (r.cluster_id is None) == spec.standalone)
        and filters.matches(shapes.CONNECTION.get(r.connection_state), states)
    ]
    return capped([shapes.host_summary(r) for r in rows])


@router.get("/datastore", name="vsphere_list_datastores")
def list_datastores(request: Request, db: DbDep, user: Viewer) -> Any:
    spec = _spec(request, "datastore")
    rows = _named(visible(db, user, "datastore", id=spec.of("datastores"), name=spec.names, datacenter_id=spec.of("datacenters")), spec.names)
    rows = [
        r for r in rows if filters.contains({ids.ROOT, Ref("hidden_folder", r.datacenter_id, "datastore")}, spec.folders) and filters.matches(shapes.datastore_type(r.kind), spec.enums.get("types"))
    ]
    return capped([shapes.datastore_summary(r) for r in rows])


@router.get("/network", name="vsphere_list_networks")
def list_networks(request: Request, db: DbDep, user: Viewer) -> Any:
    spec = _spec(request, "network")
    if not filters.matches("STANDARD_PORTGROUP", spec.enums.get("types")):
        return []
    rows = _named(visible(db, user, "portgroup", id=spec.of("networks"), name=spec.names, datacenter_id=spec.of("datacenters")), spec.names)
    rows = [r for r in rows if filters.contains({ids.ROOT, Ref("hidden_folder", r.datacenter_id, "network")}, spec.folders)]
    return capped([shapes.network_summary(r) for r in rows])


def _folders(db: Any, user: CurrentUserInfo, datacenters: set[int] | None) -> list[tuple[Ref, str, str, Ref | None, int | None]]:
    """Every folder the caller may see: (ref, name, type, parent, datacenter id)."""
    found: list[tuple[Ref, str, str, Ref | None, int | None]] = []
    if datacenters is None and user.allowed(db, "System.View"):
        found.append((ids.ROOT, ids.ROOT_FOLDER_NAME, "DATACENTER", None, None))
    for dc in visible(db, user, "datacenter", id=datacenters):
        found += [(Ref("hidden_folder", dc.id, c), c, t, None, dc.id) for c, t in ids.FOLDER_TYPE.items()]
    for f in visible(db, user, "folder", datacenter_id=datacenters):
        parent = Ref("folder", f.parent_id, f.kind) if f.parent_id is not None else Ref("hidden_folder", f.datacenter_id, f.kind)
        found.append((Ref("folder", f.id, f.kind), f.name, ids.FOLDER_TYPE.get(f.kind, "VIRTUAL_MACHINE"), parent, f.datacenter_id))
    return found


@router.get("/folder", name="vsphere_list_folders")
def list_folders(request: Request, db: DbDep, user: Viewer) -> Any:
    spec = _spec(request, "folder")
    types = spec.enums.get("type")
    rows = [
        (ref, name, kind)
        for ref, name, kind, parent, _dc in _folders(db, user, spec.of("datacenters"))
        if filters.matches(ref, spec.folders) and filters.matches(name, spec.names) and filters.matches(kind, types) and (spec.parent_folders is None or parent in spec.parent_folders)
    ]
    rows.sort(key=lambda row: (row[0].kind != "root_folder", ids.name_of(row[0])))
    return capped([shapes.folder_summary(ids.name_of(ref), name, kind) for ref, name, kind in rows])


def _clusters_of_hosts(db: Any, hosts: set[int] | None) -> set[int] | None:
    if hosts is None:
        return None
    return {h.cluster_id for h in structure(db, "host", id=hosts) if h.cluster_id is not None}


@router.get("/resource-pool", name="vsphere_list_resource_pools")
def list_resource_pools(request: Request, db: DbDep, user: Viewer) -> Any:
    spec = _spec(request, "resource_pool")
    clusters = spec.of("clusters")
    of_hosts = _clusters_of_hosts(db, spec.of("hosts"))
    if of_hosts is not None:
        clusters = of_hosts if clusters is None else clusters & of_hosts
    if spec.of("datacenters") is not None:
        in_dcs = {c.id for c in structure(db, "cluster", datacenter_id=spec.of("datacenters"))}
        clusters = in_dcs if clusters is None else clusters & in_dcs
    rows = _named(visible(db, user, "pool", id=spec.of("resource_pools"), name=spec.names, cluster_id=clusters, parent_id=spec.of("parent_resource_pools")), spec.names)
    return capped([shapes.pool_summary(r) for r in rows])


@router.get("/vm", name="vsphere_list_vms")
def list_vms(request: Request, db: DbDep, user: Viewer) -> Any:
    spec = _spec(request, "vm")
    rows = _named(
        visible(db, user, "vm", id=spec.of("vms"), name=spec.names, datacenter_id=spec.of("datacenters"), host_id=spec.of("hosts"), cluster_id=spec.of("clusters")),
        spec.names,
    )
    rows = [r for r in rows if filters.matches(shapes.POWER.get(r.power_state), spec.enums.get("power_states"))]
    if spec.folders is not None:
        folders = {f.id: f for f in structure(db, "folder", datacenter_id={r.datacenter_id for r in rows})}
        rows = [r for r in rows if filters.contains(folder_chain(r.folder_id, "vm", r.datacenter_id, folders), spec.folders)]
    if spec.of("resource_pools") is not None:
        pools = {p.id: p for p in structure(db, "pool", cluster_id={r.cluster_id for r in rows if r.cluster_id is not None})}
        rows = [r for r in rows if filters.contains(pool_chain(r.pool_id, r.cluster_id, pools), spec.of("resource_pools"))]
    return capped([shapes.vm_summary(r) for r in rows], VM_CAP)


# --- one object -----------------------------------------------------------------------------
def _one(db: Any, user: CurrentUserInfo, kind: str, raw: str, field: str) -> Any:
    object_id = ids.parse(raw, field, kind)
    user.require(db, kind, object_id)
    return inv.get(db, kind, object_id)


@router.get("/datacenter/{datacenter}", name="vsphere_get_datacenter")
def get_datacenter(datacenter: str, db: DbDep, user: Viewer) -> Any:
    return shapes.datacenter_info(_one(db, user, "datacenter", datacenter, "datacenter"))


@router.get("/cluster/{cluster}", name="vsphere_get_cluster")
def get_cluster(cluster: str, db: DbDep, user: Viewer) -> Any:
    row = _one(db, user, "cluster", cluster, "cluster")
    root = next((p.id for p in structure(db, "pool", cluster_id={row.id}) if p.parent_id is None), None)
    return shapes.cluster_info(row, root)


@router.get("/host/{host}", name="vsphere_get_host")
def get_host(host: str, db: DbDep, user: Viewer) -> Any:
    return shapes.host_summary(_one(db, user, "host", host, "host"))


@router.get("/datastore/{datastore}", name="vsphere_get_datastore")
def get_datastore(datastore: str, db: DbDep, user: Viewer) -> Any:
    return shapes.datastore_info(_one(db, user, "datastore", datastore, "datastore"))


@router.get("/network/{network}", name="vsphere_get_network")
def get_network(network: str, db: DbDep, user: Viewer) -> Any:
    return shapes.network_summary(_one(db, user, "portgroup", network, "network"))


@router.get("/folder/{folder}", name="vsphere_get_folder")
def get_folder(folder: str, db: DbDep, user: Viewer) -> Any:
    ref = ids.parse_folder(folder, "folder")
    if ref.kind == "root_folder":
        if ref.id != 1:
            raise NotFound(f"no folder {folder}", code="FOLDER_NOT_FOUND")
        user.require(db, None, None)
        return shapes.folder_summary(ids.ROOT_FOLDER, ids.ROOT_FOLDER_NAME, "DATACENTER")
    if ref.kind == "hidden_folder":
        user.require(db, "datacenter", ref.id)
        inv.get(db, "datacenter", ref.id)
        return shapes.folder_summary(folder, ref.category or "vm", ids.FOLDER_TYPE[ref.category or "vm"])
    user.require(db, "folder", ref.id)
    row = inv.get(db, "folder", ref.id)
    if row.kind != ref.category:
        raise NotFound(f"no folder {folder}", code="FOLDER_NOT_FOUND")
    return shapes.folder_summary(folder, row.name, ids.FOLDER_TYPE.get(row.kind, "VIRTUAL_MACHINE"))


@router.get("/resource-pool/{resource_pool}", name="vsphere_get_resource_pool")
def get_resource_pool(resource_pool: str, db: DbDep, user: Viewer) -> Any:
    pool = _one(db, user, "pool", resource_pool, "resource_pool")
    children = [ids.object_id("pool", p.id) for p in visible(db, user, "pool", parent_id={pool.id})]
    return shapes.pool_info(pool, children)


@router.get("/vm/{vm}", name="vsphere_get_vm")
def get_vm(vm: str, db: DbDep, user: Viewer) -> Any:
    row = _one(db, user, "vm", vm, "vm")
    datastores = {d.id: d.name for d in structure(db, "datastore", id={d.datastore_id for d in row.disks})} if row.disks else {}
    networks = {p.id: p.name for p in structure(db, "portgroup", id={n.portgroup_id for n in row.nics})} if row.nics else {}
    return shapes.vm_info(row, datastores, networks)
