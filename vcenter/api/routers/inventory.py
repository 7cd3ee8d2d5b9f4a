"""CRUD routes of the inventory: /api/v1/{datacenters,folders,clusters,hosts,datastores,
switches,portgroups,pools}. List is paged (offset, limit), filtered (equality on declared fields,
``name`` with ``*``) and sorted (``sort=name`` or ``sort=-name``)."""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Path, Query, status

from vcenter.api import v1
from vcenter.api.filters import list_filters
from vcenter.api.deps import CurrentUserInfo, DbDep, SettingsDep, requires
from vcenter.domain.states import ConnectionState
from vcenter.core.object_ids import ObjectIdPath, Offset
from vcenter.schemas import inventory as s
from vcenter.services.inventory import hosts, host_power
from vcenter.services.compute import maintenance_mode
from vcenter.services.inventory import inventory as inv
from vcenter.services.inventory.listing import list_rows

router = v1.router(prefix="/api/v1")


def _crud(
    *,
    path: str,
    kind: str,
    tag: str,
    create_model: type,
    update_model: type,
    read_model: type,
    create: Callable[[Any, str, dict[str, Any]], Any],
    filterable: set[str],
    privileges: tuple[str, str, str],
    parent: Callable[[Any], tuple[str | None, int | None]] = lambda body: (None, None),
    to_read: Callable[[Any], Any] = lambda row: row,
    generic_delete: bool = True,
    choices: dict[str, Any] | None = None,
) -> None:
    """``privileges``: (create, update, delete); creation is checked on ``parent(body)``."""
    sortable = {"id", "name", "created_at"}
    create_privilege, update_privilege, delete_privilege = privileges

    @router.get(f"/{path}", response_model=s.Page[read_model], tags=[tag], summary=f"List {path}", name=f"list_{path}")
    def list_objects(
        db: DbDep,
        user: Annotated[CurrentUserInfo, requires("System.View", deferred=True)],
        settings: SettingsDep,
        offset: Offset = 0,
        limit: int = Query(50, ge=1, le=500),
        sort: str | None = Query(None, description="field or -field"),
        filters: dict[str, list[Any]] = Depends(list_filters(inv.KINDS[kind], filterable, choices=choices)),
    ) -> Any:
        model = inv.KINDS[kind]
        total, rows = list_rows(
            db, model, filters=filters, filterable=filterable, sort=sort, sortable=sortable, offset=offset, limit=min(limit, settings.page_size_max), restrict=user.visible(db, kind, model)
        )
        return {"total": total, "offset": offset, "limit": limit, "items": [to_read(r) for r in rows]}

    # The object's path parameter is named for its kind (/hosts/{host_id}), as on every other
    # route of the same resource; the handlers keep calling it object_id (the alias).
    id_param = f"{kind}_id"
    ObjectId = Annotated[ObjectIdPath, Path(alias=id_param)]

    @router.get(f"/{path}/{{{id_param}}}", response_model=read_model, tags=[tag], summary=f"Get one of {path}", name=f"get_{kind}")
    def get_object(object_id: ObjectId, db: DbDep, user: Annotated[CurrentUserInfo, requires("System.View", on=kind, param=id_param)]) -> Any:
        return to_read(inv.get(db, kind, object_id))

    @router.patch(f"/{path}/{{{id_param}}}", response_model=read_model, tags=[tag], summary=f"Update one of {path}", name=f"update_{kind}")
    def update_object(object_id: ObjectId, body: update_model, db: DbDep, user: Annotated[CurrentUserInfo, requires(update_privilege, on=kind, param=id_param)]) -> Any:  # type: ignore[valid-type]
        return to_read(inv.update_object(db, user.username, kind, object_id, body.model_dump(exclude_unset=True)))

    if generic_delete:

        @router.delete(f"/{path}/{{{id_param}}}", status_code=status.HTTP_204_NO_CONTENT, tags=[tag], summary=f"Delete one of {path}", name=f"delete_{kind}")
        def delete_object(object_id: ObjectId, db: DbDep, user: Annotated[CurrentUserInfo, requires(delete_privilege, on=kind, param=id_param)]) -> None:
            inv.delete_object(db, user.username, kind, object_id)

    if create is not None:

        @router.post(f"/{path}", response_model=read_model, status_code=status.HTTP_201_CREATED, tags=[tag], summary=f"Create one of {path}", name=f"create_{kind}")
        def create_object(body: create_model, db: DbDep, user: Annotated[CurrentUserInfo, requires(create_privilege, deferred=True)]) -> Any:  # type: ignore[valid-type]
            user.require(db, *parent(body))
            return to_read(create(db, user.username, body.model_dump()))


_crud(
    path="datacenters",
    kind="datacenter",
    tag="datacenters",
    create_model=s.DatacenterCreate,
    update_model=s.DatacenterUpdate,
    read_model=s.DatacenterRead,
    create=lambda db, user, data: inv.create_datacenter(db, user, data["name"]),
    filterable={"name"},
    privileges=("Datacenter.Create", "Datacenter.Modify", "Datacenter.Delete"),
)
_crud(
    path="folders",
    kind="folder",
    tag="folders",
    create_model=s.FolderCreate,
    update_model=s.FolderUpdate,
    read_model=s.FolderRead,
    create=inv.create_folder,
    filterable={"name", "datacenter_id", "parent_id", "kind"},
    privileges=("Folder.Create", "Folder.Modify", "Folder.Delete"),
    parent=lambda b: ("folder", b.parent_id) if b.parent_id else ("datacenter", b.datacenter_id),
)
_crud(
    path="clusters",
    kind="cluster",
    tag="clusters",
    create_model=s.ClusterCreate,
    update_model=s.ClusterUpdate,
    read_model=s.ClusterRead,
    create=inv.create_cluster,
    filterable={"name", "datacenter_id"},
    privileges=("Cluster.Create", "Cluster.Modify", "Cluster.Delete"),
    parent=lambda b: ("datacenter", b.datacenter_id),
)
_crud(
    path="datastores",
    kind="datastore",
    tag="datastores",
    create_model=s.DatastoreCreate,
    update_model=s.DatastoreUpdate,
    read_model=s.DatastoreRead,
    create=None,
    filterable={"name", "datacenter_id", "kind"},
    to_read=inv.datastore_read,
    privileges=("Datastore.Configure", "Datastore.Configure", "Datastore.Configure"),
    parent=lambda b: ("datacenter", b.datacenter_id),
)
_crud(
    path="switches",
    kind="switch",
    tag="switches",
    create_model=s.SwitchCreate,
    update_model=s.SwitchUpdate,
    read_model=s.SwitchRead,
    create=inv.create_switch,
    filterable={"name", "datacenter_id"},
    to_read=inv.switch_read,
    privileges=("Network.Configure", "Network.Configure", "Network.Configure"),
    parent=lambda b: ("datacenter", b.datacenter_id),
)
_crud(
    path="portgroups",
    kind="portgroup",
    tag="portgroups",
    create_model=s.PortGroupCreate,
    update_model=s.PortGroupUpdate,
    read_model=s.PortGroupRead,
    create=inv.create_portgroup,
    filterable={"name", "datacenter_id", "switch_id", "vlan_id"},
    to_read=inv.portgroup_read,
    privileges=("Network.Configure", "Network.Configure", "Network.Configure"),
    parent=lambda b: ("datacenter", b.datacenter_id),
)
_crud(
    path="pools",
    kind="pool",
    tag="resource pools",
    create_model=s.ResourcePoolCreate,
    update_model=s.ResourcePoolUpdate,
    read_model=s.ResourcePoolRead,
    create=inv.create_pool,
    filterable={"name", "cluster_id", "parent_id"},
    privileges=("Resource.CreatePool", "Resource.CreatePool", "Resource.CreatePool"),
    parent=lambda b: ("pool", b.parent_id) if b.parent_id else ("cluster", b.cluster_id),
)
# Datastores: creation checks the url against the server's datastore roots (a setting): its own route below.
# Hosts: creation returns the agent token once, so it has its own route below.
_crud(
    path="hosts",
    kind="host",
    tag="hosts",
    create_model=s.HostCreate,
    update_model=s.HostUpdate,
    read_model=s.HostRead,
    create=None,
    generic_delete=False,
    filterable={"name", "datacenter_id", "cluster_id", "connection_state", "maintenance", "standby", "trust_state"},
    choices={"connection_state": ConnectionState},
    privileges=("Host.Add", "Host.Configure", "Host.Remove"),
)


@router.post("/datastores", response_model=s.DatastoreRead, status_code=status.HTTP_201_CREATED, tags=["datastores"], summary="Create one of datastores", name="create_datastore")
def create_datastore(body: s.DatastoreCreate, db: DbDep, user: Annotated[CurrentUserInfo, requires("Datastore.Configure", deferred=True)], settings: SettingsDep) -> Any:
    user.require(db, "datacenter", body.datacenter_id)
    return inv.datastore_read(inv.create_datastore(db, user.username, body.model_dump(), settings))


@router.post("/hosts", response_model=s.HostCreated, status_code=status.HTTP_201_CREATED, tags=["hosts"], summary="Add a host; the answer carries its one-time registration token, shown once")
def create_host(body: s.HostCreate, db: DbDep, user: Annotated[CurrentUserInfo, requires("Host.Add", deferred=True)], settings: SettingsDep) -> Any:
    user.require(db, *(("cluster", body.cluster_id) if body.cluster_id else ("datacenter", body.datacenter_id)))
    host = inv.create_host(db, user.username, body.model_dump())
    token = hosts.issue_registration_token(db, host, settings, user.username)
    return {**s.HostRead.model_validate(host).model_dump(), "registration_token": token}


@router.post("/hosts/{host_id}/registration-token", response_model=s.RegistrationToken, tags=["hosts"], summary="Issue a new one-time registration token (re-registers the host's agent)")
def new_registration_token(host_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("Host.Add", on="host")], settings: SettingsDep) -> Any:
    host = inv.get(db, "host", host_id)
    token = hosts.issue_registration_token(db, host, settings, user.username)
    return {"registration_token": token, "expires_at": host.registration_expires_at}


@router.post("/hosts/{host_id}/confirm", response_model=s.HostRead, tags=["hosts"], summary="Confirm the certificate thumbprint the host's agent presented")
def confirm_host(host_id: ObjectIdPath, body: s.ThumbprintConfirm, db: DbDep, user: Annotated[CurrentUserInfo, requires("Host.Add", on="host")]) -> Any:
    return hosts.confirm(db, host_id, body.thumbprint, user.username)


@router.post("/hosts/{host_id}/standby/enter", response_model=s.HostRead, tags=["hosts"], summary="Record that the host enters standby (refused while it runs VMs)")
def enter_standby(host_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("Host.Power", on="host")]) -> Any:
    return hosts.set_standby(db, host_id, True, user.username)


@router.post("/hosts/{host_id}/standby/exit", response_model=s.HostRead, tags=["hosts"], summary="Record that the host left standby")
def exit_standby(host_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("Host.Power", on="host")]) -> Any:
    return hosts.set_standby(db, host_id, False, user.username)


@router.delete("/hosts/{host_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["hosts"], summary="Remove a host; refused while it has VMs unless forced for a dead host (its VMs become orphaned)")
def remove_host(host_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("Host.Remove", on="host")], force: bool = Query(False)) -> None:
    hosts.remove(db, host_id, force, user.username)


@router.post(
    "/hosts/{host_id}/maintenance",
    response_model=s.TaskRead,
    status_code=status.HTTP_202_ACCEPTED,
    tags=["hosts"],
    summary="Enter maintenance: evacuate every running VM (placed together), then mark the host (a Task)",
)
def enter_maintenance(host_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("Host.Maintenance", on="host")], settings: SettingsDep) -> Any:
    return maintenance_mode.enter_maintenance(db, user.username, host_id, settings)


@router.post("/hosts/{host_id}/maintenance/exit", response_model=s.HostRead, tags=["hosts"], summary="Exit maintenance: the host takes VMs again")
def exit_maintenance(host_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("Host.Maintenance", on="host")]) -> Any:
    return maintenance_mode.exit_maintenance(db, user.username, host_id)


@router.post(
    "/hosts/{host_id}/power/off",
    response_model=s.TaskRead,
    status_code=status.HTTP_202_ACCEPTED,
    tags=["hosts"],
    summary="Evacuate the host, then power it off through its power driver into standby (a Task)",
)
def power_off_host(host_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("Host.Power", on="host")], settings: SettingsDep) -> Any:
    return maintenance_mode.enter_maintenance(db, user.username, host_id, settings, standby=True)


@router.post(
    "/hosts/{host_id}/power/on", response_model=s.TaskRead, status_code=status.HTTP_202_ACCEPTED, tags=["hosts"], summary="Power a host in standby on; the Task ends when its agent reports again"
)
def power_on_host(host_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("Host.Power", on="host")]) -> Any:
    return host_power.power_on_host(db, user.username, host_id)
