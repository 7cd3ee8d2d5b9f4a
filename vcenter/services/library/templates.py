"""Template library, deploy (linked/full clones with a cloud-init seed), import and export.

Use cases (one transaction each; the file work is an agent command on a host that mounts the
datastore, see workers.agent.templates):
- vm_to_template / template_to_vm: convert a powered-off VM into a template (its images move
  into ``templates/<name>-v<version>-<id>/`` with a manifest) and back.
- deploy: a new VM from a template, as a linked clone (qcow2 overlays whose backing files are
  the template's images; the disk row's ``backing_file`` names the base) or a full clone;
  placement chooses the host when none is given; every deployed VM gets a NoCloud seed disk
  with its own instance id and the machine-id the server issued (VmCustomization).
- delete_template: refused with 409 TEMPLATE_IN_USE naming every VM whose disks still have
  the template's images as backing files.
- import_disk / import_ova / export: see the module docstrings of templates_store.

Task kinds: template.fromVm, template.toVm, template.delete, template.deploy, vm.import,
vm.importOva, vm.export, template.export, template.verify, datastore.browse; their agents'
results and rollbacks are services.operations.library's.
"""

from __future__ import annotations

import math
import re
import uuid as uuidlib
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vcenter.core.clock import utcnow
from vcenter.core.errors import Conflict, Forbidden, Invalid, InvalidState, NotFound
from vcenter.core.ids import new_mac, new_uuid
from vcenter.db.models import (
    Cluster,
    Datastore,
    Host,
    Task,
    Template,
    Upload,
    VirtualDisk,
    VirtualMachine,
    VirtualNic,
    VmCustomization,
)
from vcenter.domain.datastore_paths import PathRefused, safe_file_name, validate_datastore_path
from vcenter.domain.states import ConnectionState, PowerState, TaskState
from vcenter.messaging.commands import BrowseArgs, CaptureArgs, ExportArgs, ImportDiskArgs, ImportOvaArgs, ReleaseArgs, TemplateDirArgs, VerifyArgs
from vcenter.messaging.contracts import DeployArgs
from vcenter.services.access import authz
from vcenter.services.compute import evc, placement
from vcenter.services.library import uploads
from vcenter.services.inventory import inventory
from vcenter.services.tasks.events import record_event
from vcenter.services.tasks.tasks import ensure_idle, send_command, start_task
from vcenter.services.inventory.vm_spec import vm_spec

SEED_SUFFIX = "-seed.iso"
MIB = 1 << 20


class TemplateInUse(Conflict):
    code = "TEMPLATE_IN_USE"


# --- reads --------------------------------------------------------------------------------


def template_read(t: Template) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "version": t.version,
        "datacenter_id": t.datacenter_id,
        "datastore_id": t.datastore_id,
        "dir": t.dir,
        "state": t.state,
        "guest_os": t.guest_os,
        "vcpus": t.vcpus,
        "memory_mib": t.memory_mib,
        "disks": (t.manifest or {}).get("disks", []),
        "origin": t.origin,
        "boot": t.boot,
        "manifest": t.manifest,
        "created_at": t.created_at,
        "updated_at": t.updated_at,
    }


def list_templates(session: Session, name: str | None = None, datacenter_id: int | None = None, latest: bool = False) -> list[Template]:
    query = select(Template).order_by(Template.name, Template.version)
    if name is not None:
        query = query.where(Template.name == name)
    if datacenter_id is not None:
        query = query.where(Template.datacenter_id == datacenter_id)
    rows = list(session.scalars(query))
    if latest:
        newest: dict[tuple[int, str], Template] = {}
        for t in rows:
            newest[(t.datacenter_id, t.name)] = t
        rows = list(newest.values())
    return rows


def get_template(session: Session, template_id: int) -> Template:
    t = session.get(Template, template_id)
    if t is None:
        raise NotFound(f"template {template_id} not found", code="TEMPLATE_NOT_FOUND")
    return t


def dependents(session: Session, template: Template) -> list[VirtualMachine]:
    """VMs whose disks have this template's images as backing files (linked clones)."""
    prefix = template.dir.rstrip("/") + "/"
    disks = session.scalars(select(VirtualDisk).where(VirtualDisk.datastore_id == template.datastore_id, VirtualDisk.backing_file.is_not(None)))
    vm_ids = sorted({d.vm_id for d in disks if d.backing_file.startswith(prefix)})
    return [session.get(VirtualMachine, i) for i in vm_ids]


def _refuse_in_use(session: Session, template: Template, what: str) -> None:
    users = dependents(session, template)
    if users:
        names = ", ".join(vm.name for vm in users)
        raise TemplateInUse(f"cannot {what} template {template.name} v{template.version}: linked clones depend on it: {names}", details={"vms": [{"id": vm.id, "name": vm.name} for vm in users]})


# --- helpers ------------------------------------------------------------------------------


def _mount_path(datastore: Datastore, host_id: int) -> str | None:
    mount = next((m for m in datastore.mounts if m.host_id == host_id), None)
    return mount.path if mount else None


def _connected(host: Host) -> bool:
    return host.connection_state == ConnectionState.CONNECTED.value and not host.maintenance and not host.standby


def _host_for(session: Session, datastore: Datastore) -> Host:
    for mount in sorted(datastore.mounts, key=lambda m: m.host_id):
        host = session.get(Host, mount.host_id)
        if host is not None and host.connection_state == ConnectionState.CONNECTED.value:
            return host
    raise Conflict(f"no connected host mounts datastore {datastore.name}", code="NO_HOST_FOR_DATASTORE")


def _path_error(exc: PathRefused, field: str) -> Invalid:
    return Invalid(f"{field}: {exc.message}", code=exc.code, details={"field": field})


def dns_label(name: str) -> str:
    label = re.sub(r"[^a-z0-9-]", "-", name.lower()).strip("-")[:63].strip("-")
    return label or "vm"


def _choose_host(session: Session, data: dict[str, Any], datastore_ids: list[int], vcpus: int, memory_mib: int) -> tuple[Host, dict[str, Any] | None]:
    chosen = None
    host_id = data.get("host_id")
    if host_id is None:
        if data.get("cluster_id") is None:
            raise Invalid("host_id: give a host, or a cluster_id to let placement choose", code="INVALID", details={"field": "host_id"})
        inventory.ref(session, "cluster", data["cluster_id"], "cluster_id")
        request = {**data, "vcpus": vcpus, "memory_mib": memory_mib, "disks": [{"datastore_id": d} for d in datastore_ids]}
        host_id, chosen = placement.choose_host(session, data["cluster_id"], request)
    host: Host = inventory.ref(session, "host", host_id, "host_id")
    if host.connection_state != ConnectionState.CONNECTED.value:
        raise Conflict(f"host {host.name} is {host.connection_state}", code="HOST_NOT_CONNECTED")
    for ds_id in datastore_ids:
        ds = session.get(Datastore, ds_id)
        if _mount_path(ds, host.id) is None:
            raise Invalid(f"datastore {ds.name} is not mounted on host {host.name}", code="DATASTORE_NOT_MOUNTED", details={"field": "host_id"})
    return host, chosen


def _new_vm(session: Session, data: dict[str, Any], host: Host, *, vcpus: int, memory_mib: int, guest_os: str, boot: dict[str, Any]) -> VirtualMachine:
    folder = inventory.ref(session, "folder", data.get("folder_id"), "folder_id")
    if folder is not None and (folder.datacenter_id != host.datacenter_id or folder.kind != "vm"):
        raise Invalid("folder_id: not a VM folder of this datacenter", code="INVALID_REFERENCE", details={"field": "folder_id"})
    pool = inventory.ref(session, "pool", data.get("pool_id"), "pool_id")
    if pool is not None and pool.cluster_id != host.cluster_id:
        raise Invalid("pool_id: the pool is not in the host's cluster", code="INVALID_REFERENCE", details={"field": "pool_id"})
    if boot.get("image") == "tiny-linux" and memory_mib < 80:
        raise Invalid("memory_mib: the tiny-linux image needs at least 80 MiB", code="INVALID", details={"field": "memory_mib"})
    vm = VirtualMachine(
        name=data["name"],
        datacenter_id=host.datacenter_id,
        cluster_id=host.cluster_id,
        host_id=host.id,
        folder_id=data.get("folder_id"),
        pool_id=data.get("pool_id"),
        vcpus=vcpus,
        memory_mib=memory_mib,
        guest_os=guest_os,
        power_state=PowerState.POWERED_OFF.value,
        status="creating",
        libvirt_uuid=new_uuid(),
        boot=boot,
        cpu=evc.vm_cpu_for(session.get(Cluster, host.cluster_id) if host.cluster_id else None),
    )
    for index, nic in enumerate(data.get("nics") or []):
        portgroup = inventory.ref(session, "portgroup", nic["portgroup_id"], f"nics[{index}].portgroup_id")
        if host.id not in {m.host_id for m in portgroup.hosts}:
            raise Invalid(f"nics[{index}].portgroup_id: port group {portgroup.name} is not on host {host.name}", code="PORTGROUP_ABSENT", details={"field": f"nics[{index}].portgroup_id"})
        vm.nics.append(VirtualNic(index=index, portgroup_id=portgroup.id, mac=new_mac(), model=nic.get("model", "virtio")))
    return vm


def _boot_of(data: dict[str, Any], default: dict[str, Any] | None) -> dict[str, Any]:
    if data.get("kernel_boot"):
        return {k: str(v) for k, v in data["kernel_boot"].items() if v is not None}
    return dict(default or {})


def _disk_file(vm: VirtualMachine, index: int, ext: str = "qcow2") -> str:
    return f"{safe_file_name(vm.name)}-{vm.libvirt_uuid[:8]}-disk{index}.{ext}"


# --- VM <-> template ----------------------------------------------------------------------


def _next_version(session: Session, datacenter_id: int, name: str) -> int:
    current = session.scalar(select(func.max(Template.version)).where(Template.datacenter_id == datacenter_id, Template.name == name))
    return (current or 0) + 1


def vm_to_template(session: Session, user: str, vm_id: int, name: str | None = None) -> Task:
    vm: VirtualMachine = inventory.get(session, "vm", vm_id)
    ensure_idle(session, "vm", vm.id)
    if vm.status != "ready":
        raise InvalidState(f"VM {vm.name} is {vm.status}", code="VM_NOT_READY")
    if vm.power_state != PowerState.POWERED_OFF.value:
        raise InvalidState(f"VM {vm.name} is {vm.power_state}: power it off first", code="VM_POWERED_ON")
    disks = [d for d in vm.disks if not d.file.endswith(SEED_SUFFIX)]
    seeds = [d for d in vm.disks if d.file.endswith(SEED_SUFFIX)]
    if not disks:
        raise InvalidState(f"VM {vm.name} has no disk to make a template of", code="VM_HAS_NO_DISK")
    if len({d.datastore_id for d in disks}) != 1:
        raise InvalidState(f"VM {vm.name} has disks on several datastores; relocate them to one first", code="TEMPLATE_MULTI_DATASTORE")
    host = session.get(Host, vm.host_id)
    if host is None or host.connection_state != ConnectionState.CONNECTED.value:
        raise Conflict(f"the host of VM {vm.name} is not connected", code="HOST_NOT_CONNECTED")
    datastore = session.get(Datastore, disks[0].datastore_id)
    mount = _mount_path(datastore, host.id)
    name = name or vm.name
    version = _next_version(session, vm.datacenter_id, name)
    boot = {k: v for k, v in (vm.boot or {}).items() if k != "ip"}  # an address is per VM, never per template
    template = Template(
        name=name,
        version=version,
        datacenter_id=vm.datacenter_id,
        datastore_id=datastore.id,
        dir="",
        state="creating",
        guest_os=vm.guest_os,
        vcpus=vm.vcpus,
        memory_mib=vm.memory_mib,
        boot=boot,
        origin={"kind": "vm", "vm_id": vm.id, "vm_name": vm.name, "at": utcnow().isoformat()},
    )
    session.add(template)
    inventory.flush_unique(session, f"template {name!r} v{version}")
    from templates_store.manifest import template_dir

    template.dir = template_dir(name, version, template.id)
    meta = {
        "template_id": template.id,
        "name": name,
        "version": version,
        "guest_os": vm.guest_os,
        "hardware": {"vcpus": vm.vcpus, "memory_mib": vm.memory_mib, "nics": len(vm.nics), "boot": boot},
        "origin": template.origin,
    }
    task = start_task(
        session,
        kind="template.fromVm",
        object_type="vm",
        object_id=vm.id,
        username=user,
        host_id=host.id,
        params={"template_id": template.id},
        command="template.capture",
        command_args=CaptureArgs(
            uuid=vm.libvirt_uuid, datastore_path=mount, dir=template.dir, meta=meta, disks=[{"index": d.index, "file": d.file, "format": d.format} for d in disks], seed_files=[d.file for d in seeds]
        ).args(),
    )
    record_event(
        session, "template.capturing", f"VM {vm.name} being converted to template {name} v{version}", username=user, object_type="template", object_id=template.id, object_name=name, task_id=task.id
    )
    return task


def template_to_vm(session: Session, user: str, template_id: int, data: dict[str, Any]) -> Task:
    template = get_template(session, template_id)
    ensure_idle(session, "template", template.id)
    if template.state != "ready":
        raise InvalidState(f"template {template.name} is {template.state}", code="TEMPLATE_NOT_READY")
    _refuse_in_use(session, template, "convert to a VM")
    host, chosen = _choose_host(session, data, [template.datastore_id], template.vcpus, template.memory_mib)
    datastore = session.get(Datastore, template.datastore_id)
    mount = _mount_path(datastore, host.id)
    vm = _new_vm(
        session, {**data, "name": data.get("name") or template.name}, host, vcpus=template.vcpus, memory_mib=template.memory_mib, guest_os=template.guest_os, boot=_boot_of(data, template.boot)
    )
    moves = []
    for d in template.manifest.get("disks", []):
        vm.disks.append(VirtualDisk(index=d["index"], datastore_id=datastore.id, file=_disk_file(vm, d["index"]), capacity_mib=d["capacity_mib"], format="qcow2"))
    session.add(vm)
    inventory.flush_unique(session, f"VM {vm.name!r}")
    for d, disk in zip(template.manifest.get("disks", []), vm.disks):
        moves.append({"from": f"{mount}/{template.dir}/{d['file']}", "to": f"{mount}/{disk.file}"})
    template.state = "converting"
    task = start_task(
        session,
        kind="template.toVm",
        object_type="template",
        object_id=template.id,
        username=user,
        host_id=host.id,
        params={"vm_id": vm.id, **({"placement": chosen} if chosen else {})},
        command="template.release",
        command_args=ReleaseArgs(spec=vm_spec(session, vm, host.id), moves=moves, datastore_path=mount, dir=template.dir).args(),
    )
    record_event(
        session,
        "template.converting",
        f"template {template.name} v{template.version} being converted to VM {vm.name}",
        username=user,
        object_type="template",
        object_id=template.id,
        object_name=template.name,
        task_id=task.id,
    )
    return task


def delete_template(session: Session, user: str, template_id: int) -> Task:
    template = get_template(session, template_id)
    ensure_idle(session, "template", template.id)
    if template.state not in ("ready",):
        raise InvalidState(f"template {template.name} is {template.state}", code="TEMPLATE_NOT_READY")
    _refuse_in_use(session, template, "delete")
    datastore = session.get(Datastore, template.datastore_id)
    host = _host_for(session, datastore)
    template.state = "deleting"
    return start_task(
        session,
        kind="template.delete",
        object_type="template",
        object_id=template.id,
        username=user,
        host_id=host.id,
        command="template.delete",
        command_args=TemplateDirArgs(datastore_path=_mount_path(datastore, host.id), dir=template.dir).args(),
    )


def verify_template(session: Session, user: str, template_id: int) -> Task:
    """Recompute the template's image checksums on a host mounting its datastore (a Task that
    ends TEMPLATE_CHECKSUM_MISMATCH naming the images that changed)."""
    template = get_template(session, template_id)
    ensure_idle(session, "template", template.id)
    if template.state != "ready":
        raise InvalidState(f"template {template.name} is {template.state}", code="TEMPLATE_NOT_READY")
    datastore = session.get(Datastore, template.datastore_id)
    host = _host_for(session, datastore)
    disks = [{"file": d["file"], "sha256": d["sha256"]} for d in template.manifest.get("disks", [])]
    return start_task(
        session,
        kind="template.verify",
        object_type="template",
        object_id=template.id,
        username=user,
        host_id=host.id,
        command="template.verify",
        command_args=VerifyArgs(datastore_path=_mount_path(datastore, host.id), dir=template.dir, disks=disks).args(),
    )


def browse(session: Session, user: str, datastore_id: int, path: str) -> Task:
    """List a folder of a datastore through an agent of a host that mounts it; the path is
    refused (422 PATH_*) before anything runs when it would leave the datastore."""
    datastore = inventory.get(session, "datastore", datastore_id)
    try:
        rel = validate_datastore_path(path, allow_root=True)
    except PathRefused as exc:
        raise _path_error(exc, "path") from None
    host = _host_for(session, datastore)
    # A read: it claims nothing (browsing runs alongside anything else on the datastore).
    task = Task(kind="datastore.browse", state=TaskState.QUEUED.value, step="queued", object_type="datastore", object_id=datastore.id, username=user, params={}, host_id=host.id)
    session.add(task)
    session.flush()
    send_command(session, task, "datastore.browse", BrowseArgs(datastore_path=_mount_path(datastore, host.id), path=rel).args())
    return task


# --- deploy -------------------------------------------------------------------------------


def deploy(session: Session, user: str, template_id: int, data: dict[str, Any]) -> tuple[VirtualMachine, Task]:
    template = get_template(session, template_id)
    if template.state != "ready":
        raise InvalidState(f"template {template.name} is {template.state}", code="TEMPLATE_NOT_READY")
    mode = data.get("mode") or "linked"
    target_ds_id = data.get("datastore_id") or template.datastore_id
    if mode == "linked" and target_ds_id != template.datastore_id:
        raise Invalid("datastore_id: a linked clone lives on its template's datastore (its backing files are there)", code="LINKED_CLONE_OTHER_DATASTORE", details={"field": "datastore_id"})
    target = inventory.ref(session, "datastore", target_ds_id, "datastore_id")
    vcpus = data.get("vcpus") or template.vcpus
    memory_mib = data.get("memory_mib") or template.memory_mib
    host, chosen = _choose_host(session, data, sorted({template.datastore_id, target.id}), vcpus, memory_mib)
    source = session.get(Datastore, template.datastore_id)
    src_mount, dst_mount = _mount_path(source, host.id), _mount_path(target, host.id)
    vm = _new_vm(session, data, host, vcpus=vcpus, memory_mib=memory_mib, guest_os=template.guest_os, boot=_boot_of(data, template.boot))
    clones = []
    tdisks = template.manifest.get("disks", [])
    for d in tdisks:
        disk = VirtualDisk(
            index=d["index"],
            datastore_id=target.id,
            file=_disk_file(vm, d["index"]),
            capacity_mib=d["capacity_mib"],
            format="qcow2",
            backing_file=f"{template.dir}/{d['file']}" if mode == "linked" else None,
        )
        vm.disks.append(disk)
    seed_index = max([d["index"] for d in tdisks], default=-1) + 1
    vm.disks.append(VirtualDisk(index=seed_index, datastore_id=target.id, file=_disk_file(vm, seed_index, "iso").replace(f"-disk{seed_index}.iso", SEED_SUFFIX), capacity_mib=1, format="raw"))
    session.add(vm)
    inventory.flush_unique(session, f"VM {vm.name!r}")
    custom = dict(data.get("customization") or {})
    hostname = custom.get("hostname") or dns_label(vm.name)
    session.add(VmCustomization(vm_id=vm.id, instance_id=f"i-{uuidlib.uuid4().hex}", machine_id=uuidlib.uuid4().hex, hostname=hostname, spec=custom))
    for d, disk in zip(tdisks, vm.disks):
        clones.append({"index": d["index"], "mode": mode, "source": f"{src_mount}/{template.dir}/{d['file']}", "source_format": d.get("format", "qcow2"), "dest": f"{dst_mount}/{disk.file}"})
    seed_disk = vm.disks[-1]
    task = start_task(
        session,
        kind="template.deploy",
        object_type="vm",
        object_id=vm.id,
        username=user,
        host_id=host.id,
        params={"template_id": template.id, "mode": mode, **({"placement": chosen} if chosen else {})},
        command="vm.deploy",
        command_args=DeployArgs(spec=vm_spec(session, vm, host.id), clones=clones, mode=mode, seed={"path": f"{dst_mount}/{seed_disk.file}"}).args(),
    )
    record_event(
        session,
        "vm.deploying",
        f"VM {vm.name} being deployed from template {template.name} v{template.version} ({mode} clone) on host {host.name}",
        username=user,
        object_type="vm",
        object_id=vm.id,
        object_name=vm.name,
        task_id=task.id,
    )
    return vm, task


def seed_for_agent(session: Session, host_id: int, vm_uuid: str) -> dict[str, Any]:
    """The NoCloud seed files of a VM, for the agent of the VM's own host only."""
    from templates_store.cloudinit import render_seed

    vm = session.scalar(select(VirtualMachine).where(VirtualMachine.libvirt_uuid == vm_uuid))
    if vm is None or vm.host_id != host_id:
        raise Forbidden(f"VM {vm_uuid} is not on host {host_id}", code="SEED_NOT_FOR_HOST")
    custom = session.get(VmCustomization, vm.id)
    if custom is None:
        raise NotFound(f"VM {vm.name} has no customisation", code="SEED_NOT_FOUND")
    files = render_seed(custom.spec or {}, instance_id=custom.instance_id, machine_id=custom.machine_id, hostname=custom.hostname, macs=[n.mac for n in vm.nics])
    return {"files": files, "instance_id": custom.instance_id}


def customization_read(session: Session, vm_id: int) -> dict[str, Any]:
    inventory.get(session, "vm", vm_id)
    custom = session.get(VmCustomization, vm_id)
    if custom is None:
        raise NotFound(f"VM {vm_id} has no customisation", code="SEED_NOT_FOUND")
    users = [{"name": u.get("name"), "ssh_authorized_keys": len(u.get("ssh_authorized_keys") or [])} for u in (custom.spec or {}).get("users") or []]
    return {"vm_id": vm_id, "instance_id": custom.instance_id, "machine_id": custom.machine_id, "hostname": custom.hostname, "users": users}


# --- import / export ----------------------------------------------------------------------


def import_disk(session: Session, user: str, data: dict[str, Any]) -> tuple[VirtualMachine, Task]:
    target = inventory.ref(session, "datastore", data["datastore_id"], "datastore_id")
    upload = None
    rel = None
    source_ds = None
    if data.get("upload_id") is not None:
        upload = uploads.ready(session, data["upload_id"])
    elif data.get("path"):
        try:
            rel = validate_datastore_path(data["path"])
        except PathRefused as exc:
            raise _path_error(exc, "path") from None
        source_ds = inventory.ref(session, "datastore", data.get("source_datastore_id") or target.id, "source_datastore_id")
    else:
        raise Invalid("give upload_id, or path (with source_datastore_id) of an image on a datastore", code="INVALID", details={"field": "upload_id"})
    ds_ids = sorted({target.id} | ({source_ds.id} if source_ds else set()))
    host, chosen = _choose_host(session, data, ds_ids, data["vcpus"], data["memory_mib"])
    vm = _new_vm(session, data, host, vcpus=data["vcpus"], memory_mib=data["memory_mib"], guest_os=data.get("guest_os") or "other", boot=_boot_of(data, None))
    vm.disks.append(VirtualDisk(index=0, datastore_id=target.id, file=_disk_file(vm, 0), capacity_mib=1, format="qcow2"))
    session.add(vm)
    inventory.flush_unique(session, f"VM {vm.name!r}")
    dest = f"{_mount_path(target, host.id)}/{vm.disks[0].file}"
    params: dict[str, Any] = {**({"placement": chosen} if chosen else {})}
    if upload is not None:
        args = ImportDiskArgs(spec=vm_spec(session, vm, host.id), dest=dest, format=data.get("format"), upload={"id": upload.id, "sha256": upload.sha256, "size_bytes": upload.size_bytes}).args()
        params["upload_id"] = upload.id
    else:
        args = ImportDiskArgs(spec=vm_spec(session, vm, host.id), dest=dest, format=data.get("format"), path=rel, source_datastore_path=_mount_path(source_ds, host.id)).args()
    task = start_task(session, kind="vm.import", object_type="vm", object_id=vm.id, username=user, host_id=host.id, params=params, command="vm.import_disk", command_args=args)
    record_event(
        session,
        "vm.importing",
        f"VM {vm.name} being imported from {'upload ' + str(upload.id) if upload else rel}",
        username=user,
        object_type="vm",
        object_id=vm.id,
        object_name=vm.name,
        task_id=task.id,
    )
    return vm, task


def read_appliance(session: Session, upload_id: int) -> dict[str, Any]:
    """The hardware of an uploaded OVA, read from its OVF descriptor (422 OVF_*/OVA_* when bad)."""
    from templates_store.ova import read_descriptor
    from templates_store.ovf import OvfError, parse_ovf

    upload = uploads.ready(session, upload_id)
    try:
        _name, descriptor, _manifest = read_descriptor(upload.path)
        return parse_ovf(descriptor).to_dict()
    except OvfError as exc:
        raise Invalid(f"upload {upload_id}: {exc.message}", code=exc.code, details={"field": "upload_id"}) from None


def import_ova(session: Session, user: str, data: dict[str, Any]) -> tuple[VirtualMachine, Task]:
    from templates_store.ova import plain_name

    appliance = read_appliance(session, data["upload_id"])
    disks = [d for d in appliance["disks"] if d.get("file")]
    if not disks:
        raise Invalid("the appliance has no disk file", code="OVF_UNSUPPORTED", details={"field": "upload_id"})
    for d in disks:
        if not plain_name(d["file"]):
            raise Invalid(f"the appliance names disk file {d['file']!r}, which is not a plain file name", code="OVA_INVALID", details={"field": "upload_id"})
    target = inventory.ref(session, "datastore", data["datastore_id"], "datastore_id")
    vcpus = data.get("vcpus") or appliance["vcpus"]
    memory_mib = data.get("memory_mib") or appliance["memory_mib"]
    host, chosen = _choose_host(session, data, [target.id], vcpus, memory_mib)
    name = data.get("name") or re.sub(r"[^A-Za-z0-9_.-]", "-", appliance["name"])[:80]
    vm = _new_vm(session, {**data, "name": name}, host, vcpus=vcpus, memory_mib=memory_mib, guest_os=appliance["guest_os"], boot=_boot_of(data, None))
    for i, d in enumerate(disks):
        vm.disks.append(VirtualDisk(index=i, datastore_id=target.id, file=_disk_file(vm, i), capacity_mib=max(1, math.ceil(d["capacity_bytes"] / MIB)), format="qcow2"))
    session.add(vm)
    inventory.flush_unique(session, f"VM {vm.name!r}")
    mount = _mount_path(target, host.id)
    upload = uploads.ready(session, data["upload_id"])
    task = start_task(
        session,
        kind="vm.importOva",
        object_type="vm",
        object_id=vm.id,
        username=user,
        host_id=host.id,
        params={"upload_id": upload.id, "appliance": appliance, **({"placement": chosen} if chosen else {})},
        command="vm.import_ova",
        command_args=ImportOvaArgs(
            spec=vm_spec(session, vm, host.id),
            upload={"id": upload.id, "sha256": upload.sha256, "size_bytes": upload.size_bytes},
            disks=[{"index": disk.index, "member": d["file"], "dest": f"{mount}/{disk.file}"} for d, disk in zip(disks, vm.disks)],
        ).args(),
    )
    record_event(session, "vm.importing", f"VM {vm.name} being imported from appliance {appliance['name']}", username=user, object_type="vm", object_id=vm.id, object_name=vm.name, task_id=task.id)
    return vm, task


def export(session: Session, user: str, object_type: str, object_id: int) -> Task:
    """Export a powered-off VM or a template as an OVA (an Upload of kind export once done)."""
    if object_type == "vm":
        vm: VirtualMachine = inventory.get(session, "vm", object_id)
        ensure_idle(session, "vm", vm.id)
        if vm.status != "ready" or vm.power_state != PowerState.POWERED_OFF.value:
            raise InvalidState(f"VM {vm.name} must be ready and powered off to export it", code="VM_POWERED_ON")
        host = session.get(Host, vm.host_id)
        if host is None or host.connection_state != ConnectionState.CONNECTED.value:
            raise Conflict(f"the host of VM {vm.name} is not connected", code="HOST_NOT_CONNECTED")
        real = [d for d in vm.disks if not d.file.endswith(SEED_SUFFIX)]
        disks = [{"path": f"{_mount_path(session.get(Datastore, d.datastore_id), host.id)}/{d.file}", "format": d.format} for d in real]
        work_ds = session.get(Datastore, real[0].datastore_id) if real else None
        name, hardware, uuid = vm.name, {"vcpus": vm.vcpus, "memory_mib": vm.memory_mib, "guest_os": vm.guest_os, "nics": len(vm.nics)}, vm.libvirt_uuid
    else:
        template = get_template(session, object_id)
        ensure_idle(session, "template", template.id)
        if template.state != "ready":
            raise InvalidState(f"template {template.name} is {template.state}", code="TEMPLATE_NOT_READY")
        work_ds = session.get(Datastore, template.datastore_id)
        host = _host_for(session, work_ds)
        mount = _mount_path(work_ds, host.id)
        disks = [{"path": f"{mount}/{template.dir}/{d['file']}", "format": d.get("format", "qcow2")} for d in template.manifest.get("disks", [])]
        name, hardware, uuid = f"{template.name}-v{template.version}", {"vcpus": template.vcpus, "memory_mib": template.memory_mib, "guest_os": template.guest_os, "nics": 0}, None
    if not disks or work_ds is None:
        raise InvalidState(f"{object_type} {object_id} has no disk to export", code="VM_HAS_NO_DISK")
    upload = Upload(kind="export", filename=f"{safe_file_name(name)}.ova", path="", state="receiving", username=user)
    session.add(upload)
    session.flush()
    task = start_task(
        session,
        kind=f"{object_type}.export",
        object_type=object_type,
        object_id=object_id,
        username=user,
        host_id=host.id,
        params={"upload_id": upload.id},
        command="vm.export",
        command_args=ExportArgs(uuid=uuid, name=safe_file_name(name), hardware=hardware, disks=disks, upload_id=upload.id, workdir=f"{_mount_path(work_ds, host.id)}/.exports/{upload.id}").args(),
    )
    upload.task_id = task.id
    return task


def _register() -> None:
    authz.register_kind("template", Template)


_register()
