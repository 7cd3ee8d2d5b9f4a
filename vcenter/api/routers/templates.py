"""Template library, deploy from template, import/export and uploads (each long one a Task);
and the agent routes that move bulk data (seeds, uploads, exports) with the host credential."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Body, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from vcenter.api import v1
from vcenter.api.errors import declare
from vcenter.api.deps import AgentHostId, CurrentUserInfo, DbDep, RuntimeDep, public, requires
from vcenter.api.guards import STREAMED_UPLOAD  # these routes stream bodies under upload_max_bytes
from vcenter.core.object_ids import ObjectIdPath, OptionalObjectIdQuery
from vcenter.schemas import inventory as s
from vcenter.schemas import templates as ts
from vcenter.schemas.agent import SeedFiles
from vcenter.services.library import templates, uploads

router = v1.router(tags=["templates"])
agent_router = v1.router(prefix="/api/v1/agent/hosts/{host_id}", tags=["agent"], dependencies=[public("an agent's own host credential, valid for its host only")])


def binary_download(description: str, headers: dict[str, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route answering a file's bytes: its real media type, a binary
    string (not a JSON document), and the headers it sets."""
    answer: dict[str, Any] = {"description": description, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
    if headers:
        answer["headers"] = {name: {"description": text, "schema": {"type": "string"}} for name, text in headers.items()}
    return {200: answer}


# --- templates ----------------------------------------------------------------------------


@router.get("/api/v1/templates", response_model=list[ts.TemplateRead], summary="List templates (every version; ?latest=true: the newest of each name)")
def list_templates(
    db: DbDep, user: Annotated[CurrentUserInfo, requires("System.View")], name: str | None = Query(None, max_length=80), datacenter_id: OptionalObjectIdQuery = None, latest: bool = Query(False)
) -> list[dict[str, Any]]:
    return [templates.template_read(t) for t in templates.list_templates(db, name, datacenter_id, latest)]


@router.get("/api/v1/templates/{template_id}", response_model=ts.TemplateRead, summary="Get a template with its manifest")
def get_template(template_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("System.View", on="template", param="template_id")]) -> dict[str, Any]:
    return templates.template_read(templates.get_template(db, template_id))


@router.get("/api/v1/templates/{template_id}/dependents", response_model=list[ts.TemplateDependent], summary="The linked clones whose disks have this template's images as backing files")
def dependents(template_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("System.View", on="template", param="template_id")]) -> list[dict[str, Any]]:
    return [{"id": vm.id, "name": vm.name} for vm in templates.dependents(db, templates.get_template(db, template_id))]


@router.post(
    "/api/v1/vms/{vm_id}/template", response_model=s.TaskRead, status_code=status.HTTP_202_ACCEPTED, summary="Convert a powered-off VM to a template (a Task; a name used before gets the next version)"
)
def vm_to_template(vm_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("Template.Create", on="vm", param="vm_id")], body: ts.VmToTemplate | None = Body(None)) -> Any:
    return templates.vm_to_template(db, user.username, vm_id, body.name if body else None)


@router.post(
    "/api/v1/templates/{template_id}/vm", response_model=s.TaskRead, status_code=status.HTTP_202_ACCEPTED, summary="Convert a template back to a VM (a Task); refused while linked clones depend on it"
)
def template_to_vm(template_id: ObjectIdPath, body: ts.TemplateToVm, db: DbDep, user: Annotated[CurrentUserInfo, requires("Template.Create", on="template", param="template_id")]) -> Any:
    return templates.template_to_vm(db, user.username, template_id, body.model_dump())


@router.post(
    "/api/v1/templates/{template_id}/deploy",
    response_model=s.TaskRead,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Deploy a VM from a template: linked or full clone, cloud-init customisation, placement when no host is given (a Task)",
)
def deploy(template_id: ObjectIdPath, body: ts.DeployRequest, db: DbDep, user: Annotated[CurrentUserInfo, requires("Template.Deploy", on="template", param="template_id")]) -> Any:
    _, task = templates.deploy(db, user.username, template_id, body.model_dump(mode="json"))
    return task


@router.delete(
    "/api/v1/templates/{template_id}",
    response_model=s.TaskRead,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Delete a template and its images (a Task); 409 TEMPLATE_IN_USE naming the linked clones that depend on it",
)
def delete_template(template_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("Template.Delete", on="template", param="template_id")]) -> Any:
    return templates.delete_template(db, user.username, template_id)


@router.post(
    "/api/v1/templates/{template_id}/verify",
    response_model=s.TaskRead,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Recompute the template's image checksums against its manifest (a Task; TEMPLATE_CHECKSUM_MISMATCH names changed images)",
)
def verify_template(template_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("Datastore.Browse", on="template", param="template_id")]) -> Any:
    return templates.verify_template(db, user.username, template_id)


@router.post(
    "/api/v1/templates/{template_id}/export",
    response_model=s.TaskRead,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Export a template as an OVA with stream-optimised VMDKs (a Task; the result names the upload to download)",
)
def export_template(template_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("VirtualMachine.Export", on="template", param="template_id")]) -> Any:
    return templates.export(db, user.username, "template", template_id)


@router.post(
    "/api/v1/datastores/{datastore_id}/browse",
    response_model=s.TaskRead,
    status_code=status.HTTP_202_ACCEPTED,
    summary="List a folder of a datastore (a Task run by a host that mounts it; result: entries with sizes and image formats)",
)
def browse(
    datastore_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("Datastore.Browse", on="datastore", param="datastore_id")], body: ts.BrowseRequest | None = Body(None)
) -> Any:
    return templates.browse(db, user.username, datastore_id, body.path if body else "")


# --- VMs: export, import, customisation ------------------------------------------------------


@router.post(
    "/api/v1/vms/{vm_id}/export",
    response_model=s.TaskRead,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Export a powered-off VM as an OVA with stream-optimised VMDKs (a Task; the result names the upload to download)",
)
def export_vm(vm_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("VirtualMachine.Export", on="vm", param="vm_id")]) -> Any:
    return templates.export(db, user.username, "vm", vm_id)


@router.get("/api/v1/vms/{vm_id}/customization", response_model=ts.CustomizationRead, summary="A deployed VM's cloud-init instance id, issued machine-id and hostname (no secrets)")
def customization(vm_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("System.View", on="vm", param="vm_id")]) -> dict[str, Any]:
    return templates.customization_read(db, vm_id)


@router.post(
    "/api/v1/imports/disk",
    response_model=s.TaskRead,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Import a disk image (VMDK, VHD/VHDX, VDI, raw, qcow2) from an upload or a datastore path into a new VM (a Task)",
)
def import_disk(body: ts.ImportDisk, db: DbDep, user: Annotated[CurrentUserInfo, requires("VirtualMachine.Import")]) -> Any:
    _, task = templates.import_disk(db, user.username, body.model_dump(mode="json"))
    return task


@router.post(
    "/api/v1/imports/ova", response_model=s.TaskRead, status_code=status.HTTP_202_ACCEPTED, summary="Import an uploaded OVA appliance into a new VM, hardware from its OVF descriptor (a Task)"
)
def import_ova(body: ts.ImportOva, db: DbDep, user: Annotated[CurrentUserInfo, requires("VirtualMachine.Import")]) -> Any:
    _, task = templates.import_ova(db, user.username, body.model_dump(mode="json"))
    return task


# --- uploads ------------------------------------------------------------------------------


@router.post(
    "/api/v1/uploads",
    response_model=ts.UploadRead,
    status_code=status.HTTP_201_CREATED,
    summary="Upload an image or OVA as the raw request body (streamed; size-limited; ?sha256= is checked)",
    openapi_extra=STREAMED_UPLOAD,
)
async def upload(
    request: Request, runtime: RuntimeDep, user: Annotated[CurrentUserInfo, requires("Datastore.Browse")], filename: str = Query(..., min_length=1, max_length=255), sha256: str | None = Query(None)
) -> dict[str, Any]:
    length = request.headers.get("content-length")
    path, size, digest = await uploads.receive(request.stream(), runtime.settings, declared_length=int(length) if length and length.isascii() and length.isdigit() else None, expected_sha256=sha256)

    def store() -> dict[str, Any]:
        with runtime.transaction() as session:
            return uploads.upload_read(uploads.record(session, user.username, filename, path, size, digest))

    return await run_in_threadpool(store)


@router.get("/api/v1/uploads", response_model=list[ts.UploadRead], summary="List uploads and exports")
def list_uploads(db: DbDep, user: Annotated[CurrentUserInfo, requires("System.View")]) -> list[dict[str, Any]]:
    return [uploads.upload_read(u) for u in uploads.list_uploads(db)]


@router.get("/api/v1/uploads/{upload_id}", response_model=ts.UploadRead, summary="An upload or export: size, SHA-256, state")
def get_upload(upload_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("System.View")]) -> dict[str, Any]:
    return uploads.upload_read(uploads.get(db, upload_id))


@router.get("/api/v1/uploads/{upload_id}/appliance", response_model=ts.ApplianceRead, summary="The hardware an uploaded OVA's OVF descriptor describes")
@v1.conflicts(True)  # UPLOAD_NOT_READY
def appliance(upload_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("System.View")]) -> dict[str, Any]:
    return templates.read_appliance(db, upload_id)


@router.get(
    "/api/v1/uploads/{upload_id}/content",
    response_class=FileResponse,
    responses=binary_download("the file, as uploaded or exported", {"X-Checksum-SHA256": "the file's SHA-256 (hex; empty while unknown)"}),
    summary="Download an upload or an exported OVA",
)
@v1.conflicts(True)  # UPLOAD_NOT_READY
def download(upload_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("VirtualMachine.Export")]) -> Any:
    row = uploads.ready(db, upload_id)
    return FileResponse(row.path, filename=row.filename, media_type="application/octet-stream", headers={"X-Checksum-SHA256": row.sha256 or ""})


@router.delete("/api/v1/uploads/{upload_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete an upload or export and its file")
def delete_upload(upload_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("Datastore.Browse")]) -> None:
    uploads.delete(db, user.username, upload_id)


# --- agents -------------------------------------------------------------------------------


@agent_router.get("/seeds/{vm_uuid}", response_model=SeedFiles, summary="Agent: the cloud-init NoCloud seed files of a VM on this host", responses=declare(403))
def seed(vm_uuid: str, host_id: AgentHostId, db: DbDep) -> dict[str, Any]:
    return templates.seed_for_agent(db, host_id, vm_uuid)


@agent_router.get(
    "/uploads/{upload_id}/content", response_class=FileResponse, responses={**binary_download("the upload's file"), **declare(403)}, summary="Agent: pull an upload a task of this host needs"
)
@v1.conflicts(True)  # UPLOAD_NOT_READY
def agent_download(upload_id: ObjectIdPath, host_id: AgentHostId, db: DbDep) -> Any:
    return FileResponse(uploads.path_for_agent(db, host_id, upload_id), media_type="application/octet-stream")


@agent_router.put("/uploads/{upload_id}/content", response_model=ts.UploadRead, summary="Agent: push the OVA of an export task of this host", openapi_extra=STREAMED_UPLOAD, responses=declare(403))
async def agent_export(upload_id: ObjectIdPath, request: Request, runtime: RuntimeDep, host_id: AgentHostId) -> dict[str, Any]:
    def check() -> None:
        with runtime.transaction() as session:
            uploads.check_export_target(session, host_id, upload_id)

    await run_in_threadpool(check)
    length = request.headers.get("content-length")
    path, size, digest = await uploads.receive(request.stream(), runtime.settings, declared_length=int(length) if length and length.isascii() and length.isdigit() else None)

    def store() -> dict[str, Any]:
        with runtime.transaction() as session:
            return uploads.upload_read(uploads.store_export(session, upload_id, path, size, digest))

    return await run_in_threadpool(store)
