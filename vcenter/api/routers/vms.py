"""VM routes: inventory of VMs and the long operations on them (each answers 202 + Task)."""

from typing import Annotated, Any

from fastapi import Depends, Body, Query, status

from vcenter.api import v1
from vcenter.api.filters import list_filters
from vcenter.api.deps import CurrentUserInfo, DbDep, RuntimeDep, SettingsDep, requires
from vcenter.core.object_ids import ObjectIdPath, ObjectIdQuery, Offset
from vcenter.domain.states import PowerAction, PowerState
from vcenter.schemas import inventory as s
from vcenter.schemas.placement import MigrationCheckReport
from vcenter.services.inventory import inventory as inv
from vcenter.services.compute import console, evc, migration, vms
from vcenter.services.inventory import hosts
from vcenter.services.inventory.listing import list_rows

router = v1.router(prefix="/api/v1/vms", tags=["vms"])

_FILTERABLE = {"name", "datacenter_id", "cluster_id", "host_id", "folder_id", "pool_id", "power_state", "status", "guest_os", "libvirt_uuid"}
_SORTABLE = {"id", "name", "created_at", "memory_mib", "vcpus", "power_state"}


@router.get("", response_model=s.Page[s.VmRead], summary="List VMs")
def list_vms(
    db: DbDep,
    user: Annotated[CurrentUserInfo, requires("System.View", deferred=True)],
    offset: Offset = 0,
    limit: int = Query(50, ge=1, le=500),
    sort: str | None = Query(None, description="field or -field"),
    filters: dict[str, list[Any]] = Depends(list_filters(inv.KINDS["vm"], _FILTERABLE, choices={"power_state": PowerState})),
) -> Any:
    total, rows = list_rows(db, inv.KINDS["vm"], filters=filters, filterable=_FILTERABLE, sort=sort, sortable=_SORTABLE, offset=offset, limit=limit, restrict=user.visible(db, "vm", inv.KINDS["vm"]))
    return {"total": total, "offset": offset, "limit": limit, "items": rows}


@router.get("/{vm_id}", response_model=s.VmRead, summary="Get a VM")
def get_vm(vm_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("System.View", on="vm")]) -> Any:
    return inv.get(db, "vm", vm_id)


@router.post("", response_model=s.TaskRead, status_code=status.HTTP_202_ACCEPTED, summary="Create a VM on a host (a Task)")
def create_vm(body: s.VmCreate, db: DbDep, user: Annotated[CurrentUserInfo, requires("VirtualMachine.Create", deferred=True)]) -> Any:
    if body.folder_id:
        user.require(db, "folder", body.folder_id)
    if body.pool_id:
        user.require(db, "pool", body.pool_id)
    elif body.cluster_id or body.host_id:
        user.require(db, *(("host", body.host_id) if body.host_id else ("cluster", body.cluster_id)))
    elif not body.folder_id:
        user.require(db, "datacenter", body.datacenter_id)
    _, task = vms.create_vm(db, user.username, body.model_dump())
    return task


@router.patch("/{vm_id}", response_model=s.VmRead, summary="Rename a VM or move it to another folder or pool")
def update_vm(vm_id: ObjectIdPath, body: s.VmUpdate, db: DbDep, user: Annotated[CurrentUserInfo, requires("VirtualMachine.Configure", on="vm")]) -> Any:
    return inv.update_object(db, user.username, "vm", vm_id, body.model_dump(exclude_unset=True))


@router.delete("/{vm_id}", response_model=s.TaskRead, status_code=status.HTTP_202_ACCEPTED, summary="Delete a powered-off VM and its disks (a Task)")
def delete_vm(vm_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("VirtualMachine.Delete", on="vm")]) -> Any:
    return vms.delete_vm(db, user.username, vm_id)


@router.post("/{vm_id}/guest/command", response_model=s.TaskRead, status_code=status.HTTP_202_ACCEPTED, summary="Send a command to the guest through its channel; the reply is the Task's result")
def guest_command(vm_id: ObjectIdPath, body: s.GuestCommand, db: DbDep, user: Annotated[CurrentUserInfo, requires("VirtualMachine.GuestOperations", on="vm")]) -> Any:
    return vms.guest_command(db, user.username, vm_id, body.command, body.argument, body.timeout)


@router.post(
    "/{vm_id}/migrate",
    response_model=s.TaskRead,
    status_code=status.HTTP_202_ACCEPTED,
    summary="VMotion: live-migrate a running VM to a host (or where placement chooses); refused with the failing check's code",
)
def migrate_vm(vm_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("VirtualMachine.Migrate", on="vm")], settings: SettingsDep, body: s.MigrateRequest | None = Body(None)) -> Any:
    return migration.migrate(db, user.username, vm_id, body.host_id if body else None, settings)


@router.post(
    "/{vm_id}/relocate",
    response_model=s.TaskRead,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Storage VMotion: move disks to other datastores, while the VM runs, optionally to another host with them (a Task)",
)
def relocate_vm(vm_id: ObjectIdPath, body: s.RelocateRequest, db: DbDep, user: Annotated[CurrentUserInfo, requires("VirtualMachine.Relocate", on="vm")]) -> Any:
    return migration.relocate(db, user.username, vm_id, [m.model_dump() for m in body.disks], body.host_id)


@router.post(
    "/{vm_id}/cpu-check",
    response_model=s.TaskRead,
    status_code=status.HTTP_202_ACCEPTED,
    summary="libvirt's comparison of the VM's CPU definition with a host's CPU, by that host's agent (a Task; result: compatible, detail)",
)
def cpu_check(vm_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("VirtualMachine.Migrate", on="vm")], host: ObjectIdQuery) -> Any:
    return evc.cpu_check(db, user.username, vm_id, host)


@router.get("/{vm_id}/migrate/check", response_model=MigrationCheckReport, summary="The checks of a VMotion to a host, without moving")
def migrate_check(vm_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("System.View", on="vm")], host: ObjectIdQuery) -> Any:
    return migration.check_report(db, vm_id, host)


@router.post(
    "/{vm_id}/console/ticket",
    response_model=s.ConsoleTicket,
    summary="A one-time ticket to attach to the running VM's serial console over a websocket (what `vcenter vm console` and the dashboard open)",
)
def console_ticket(vm_id: ObjectIdPath, db: DbDep, runtime: RuntimeDep, user: Annotated[CurrentUserInfo, requires("VirtualMachine.Console", on="vm")]) -> Any:
    answer = console.issue_ticket(db, runtime.redis, runtime.settings, user.username, vm_id, user_id=user.id)
    return {**answer, "url": console.websocket_path(answer["ticket"])}


@router.post("/{vm_id}/import", response_model=s.VmRead, summary="Import an orphaned VM (found on a host, unknown to the inventory) so it is managed")
def import_vm(vm_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("VirtualMachine.Import", on="vm")]) -> Any:
    return hosts.import_vm(db, vm_id, user.username)


@router.post("/{vm_id}/reconfigure", response_model=s.TaskRead, status_code=status.HTTP_202_ACCEPTED, summary="Change vCPUs and memory of a powered-off VM (a Task)")
def reconfigure_vm(vm_id: ObjectIdPath, body: s.VmReconfigure, db: DbDep, user: Annotated[CurrentUserInfo, requires("VirtualMachine.Configure", on="vm")]) -> Any:
    return vms.reconfigure(db, user.username, vm_id, body.vcpus, body.memory_mib, body.version)


def _power_route(path: str, action: PowerAction, summary: str) -> None:
    privilege = "VirtualMachine.PowerOn" if action in (PowerAction.POWER_ON, PowerAction.RESUME) else "VirtualMachine.PowerOff"

    @router.post(f"/{{vm_id}}/power/{path}", response_model=s.TaskRead, status_code=status.HTTP_202_ACCEPTED, summary=summary, name=f"vm_{path}")
    def power_action(vm_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires(privilege, on="vm")], settings: SettingsDep) -> Any:
        return vms.power(db, user.username, vm_id, action, settings)


_power_route("on", PowerAction.POWER_ON, "Power on (a Task)")
_power_route("off", PowerAction.POWER_OFF, "Power off, hard, like pulling the plug (a Task)")
_power_route("reset", PowerAction.RESET, "Reset, hard (a Task)")
_power_route("suspend", PowerAction.SUSPEND, "Suspend: memory saved to disk, the VM stops (libvirt managed save; a Task)")
_power_route("resume", PowerAction.RESUME, "Resume a suspended VM from its saved memory (a Task)")


@router.post(
    "/{vm_id}/power/shutdown",
    response_model=s.TaskRead,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Guest shutdown; ends GUEST_SHUTDOWN_TIMEOUT if the guest is still running after the timeout (a Task)",
)
def shutdown_vm(
    vm_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("VirtualMachine.PowerOff", on="vm")], settings: SettingsDep, body: s.ShutdownRequest | None = Body(None)
) -> Any:
    return vms.power(db, user.username, vm_id, PowerAction.SHUTDOWN_GUEST, settings, timeout=body.timeout if body else None)
