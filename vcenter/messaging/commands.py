"""The typed arguments and results of every agent command, and the one table that names them.

``COMMANDS`` maps each command name (``contracts.CommandName``) to the model of its arguments
and the model of its result (vcenter.messaging.results; ``NoPayload`` where the result
carries nothing). The server
builds ``Command.args`` only through an arguments model (``.args()``); the agent turns the
arguments it received into that model (``parse_args``) before a handler sees them.

What decides the wire: ``Command.args`` stays a JSON dict (the signature covers it), and an
arguments model here puts on the wire exactly the top-level keys its builder named
(``SentArgs``): a key the server leaves out stays out, and the agent then reads the model's
default, the same default it used when it read the dict. So a command carries the same keys
and values as when it was built by hand. Numbers keep their JSON type (``int | float``, never
a coercion that would turn 120 into 120.0).

Results go the other way (vcenter.messaging.results): the agent builds each through its
model, the server reads it through the same model and stores the dict unchanged.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from vcenter.messaging.contracts import (
    CommandArgs,
    CommandName,
    CreateArgs,
    DeployArgs,
    MigrateArgs,
    OfflineCopyArgs,
    OfflineDefineArgs,
    OfflineDiscardArgs,
    OfflineFinishArgs,
    RelocateArgs,
    SeedFile,
    VmSpec,
)
from vcenter.messaging.results import (
    BackupResult,
    BrowseResult,
    CaptureResult,
    CloneResult,
    CpuBaselineResult,
    CpuCompareResult,
    CreateResult,
    DeleteResult,
    DeployResult,
    ExportResult,
    GuestResult,
    HaStartResult,
    ImportOvaResult,
    ImportResult,
    MigrateResult,
    NoPayload,
    PromoteResult,
    ReleaseResult,
    RelocateResult,
    RestoreResult,
    Result,
    SnapshotCreated,
    SnapshotReverted,
    SnapshotsDeleted,
    TemplateDeleted,
    VerifyResult,
)


class SentArgs(CommandArgs):
    """Arguments whose top-level keys are those the builder named: an optional argument left
    out is absent on the wire (the agent reads its default), never a default written in."""

    model_config = ConfigDict(extra="forbid")

    def args(self) -> dict[str, Any]:
        unsent = set(type(self).model_fields) - self.model_fields_set
        return self.model_dump(mode="json", by_alias=True, exclude=unsent)


class Item(BaseModel):
    """One element of a list argument (a disk, a copy, a move): every key is always sent."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --- VM lifecycle -------------------------------------------------------------------------


class UuidArgs(SentArgs):
    """A command on one domain and nothing else: ``vm.start``, ``vm.stop``, ``vm.reset``,
    ``vm.suspend``, ``vm.resume``, ``vm.promote``, ``console.open``."""

    uuid: str


class ShutdownArgs(SentArgs):
    """``vm.shutdown``: the guest's shutdown, powered off after ``timeout`` seconds."""

    uuid: str
    timeout: int | float = 120


class HaStartArgs(SentArgs):
    """``vm.ha_start``: define the domain if absent (disks on shared datastores), then start."""

    spec: VmSpec


class ReconfigureArgs(SentArgs):
    """``vm.reconfigure`` of a powered-off VM: None leaves that size as it is."""

    uuid: str
    vcpus: int | None = None
    memory_mib: int | None = None


class DeleteArgs(SentArgs):
    """``vm.delete``: undefine the domain and delete these disk files."""

    uuid: str
    disks: list[str] = []


class GuestArgs(SentArgs):
    """``vm.guest``: one line to the guest's heartbeat channel, its reply awaited ``timeout`` s."""

    uuid: str
    line: str
    timeout: int | float = 10


# --- host ---------------------------------------------------------------------------------


class CpuBaselineArgs(SentArgs):
    """``host.cpu_baseline`` of these host CPU definitions (libvirt XML)."""

    cpu_xmls: list[str]


class CpuCompareArgs(SentArgs):
    """``host.cpu_compare``: does this guest CPU definition (a ``CpuSpec`` as stored on the VM)
    run on this host."""

    cpu: dict[str, Any]


class NoArgs(SentArgs):
    """``host.refresh``: a full state report now."""


# --- snapshots, clones, backups -----------------------------------------------------------


class SnapshotCreateArgs(SentArgs):
    uuid: str
    name: str
    description: str = ""


class SnapshotRevertArgs(SentArgs):
    uuid: str
    name: str


class SnapshotDeleteArgs(SentArgs):
    """``children``: the snapshot's descendants go too."""

    uuid: str
    name: str
    children: bool = False


class CloneDisk(Item):
    target: str
    path: str
    base_path: str | None


class CloneArgs(SentArgs):
    """``vm.clone``: the clone's disk files, full copies or (``linked``) overlays on a base."""

    uuid: str
    linked: bool = False
    disks: list[CloneDisk]


class BackupDisk(Item):
    target: str
    path: str
    parent_path: str | None


class BackupArgs(SentArgs):
    """``vm.backup`` into the point's files; then the retention's ``delete_after`` files go."""

    uuid: str
    disks: list[BackupDisk]
    incremental_from: str | None = None
    checkpoint: str
    delete_after: list[str] = []


class RestoreDisk(Item):
    source: str
    path: str
    format: str


class RestoreArgs(SentArgs):
    """``vm.restore``: over the stopped VM ``replace_uuid``, or into a new VM ``spec`` (with
    its own ``seed``) defined here."""

    disks: list[RestoreDisk]
    replace_uuid: str | None = None
    spec: VmSpec | None = None
    seed: SeedFile | None = None


# --- templates, import, export ------------------------------------------------------------


class CaptureDisk(Item):
    index: int
    file: str
    format: str = "qcow2"


class TemplateMeta(Item):
    template_id: int
    name: str
    version: int
    guest_os: str
    hardware: dict[str, Any]
    origin: dict[str, Any] | None


class CaptureArgs(SentArgs):
    uuid: str
    datastore_path: str
    dir: str
    meta: TemplateMeta
    disks: list[CaptureDisk]
    seed_files: list[str] = []


class FileMove(Item):
    from_: str = Field(alias="from")
    to: str


class ReleaseArgs(SentArgs):
    spec: VmSpec
    moves: list[FileMove]
    datastore_path: str
    dir: str


class TemplateDirArgs(SentArgs):
    """``template.delete``: a template's folder on a datastore."""

    datastore_path: str
    dir: str


class VerifyDisk(Item):
    file: str
    sha256: str


class VerifyArgs(TemplateDirArgs):
    disks: list[VerifyDisk]


class BrowseArgs(SentArgs):
    datastore_path: str
    path: str = ""
    limit: int = 1000


class UploadRef(Item):
    """An upload the agent pulls from the server (and checks against its digest and size)."""

    id: int
    sha256: str | None
    size_bytes: int | None


class ImportDiskArgs(SentArgs):
    """``vm.import_disk``: from an ``upload``, or from ``path`` on the datastore mounted at
    ``source_datastore_path``; ``format`` None: detected."""

    spec: VmSpec
    dest: str
    format: str | None = None
    upload: UploadRef | None = None
    path: str | None = None
    source_datastore_path: str | None = None


class OvaDisk(Item):
    index: int
    member: str
    dest: str


class ImportOvaArgs(SentArgs):
    spec: VmSpec
    upload: UploadRef
    disks: list[OvaDisk]


class ExportDisk(Item):
    path: str
    format: str = "qcow2"


class ExportHardware(Item):
    """What the OVF descriptor says of the machine."""

    vcpus: int
    memory_mib: int
    guest_os: str = "other"
    nics: int = 0


class ExportArgs(SentArgs):
    """``vm.export``: ``uuid`` None for a template's images."""

    uuid: str | None
    name: str
    hardware: ExportHardware
    disks: list[ExportDisk]
    upload_id: int
    workdir: str


RelocateStepArgs = RelocateArgs | OfflineCopyArgs | OfflineDefineArgs | OfflineFinishArgs | OfflineDiscardArgs


class CommandContract(BaseModel):
    """One row of the table: a command's arguments model and its result model."""

    model_config = ConfigDict(frozen=True)
    args: type[CommandArgs]
    result: type[Result]


COMMANDS: dict[str, CommandContract] = {
    "vm.create": CommandContract(args=CreateArgs, result=CreateResult),
    "vm.start": CommandContract(args=UuidArgs, result=NoPayload),
    "vm.stop": CommandContract(args=UuidArgs, result=NoPayload),
    "vm.shutdown": CommandContract(args=ShutdownArgs, result=NoPayload),
    "vm.reset": CommandContract(args=UuidArgs, result=NoPayload),
    "vm.ha_start": CommandContract(args=HaStartArgs, result=HaStartResult),
    "vm.suspend": CommandContract(args=UuidArgs, result=NoPayload),
    "vm.resume": CommandContract(args=UuidArgs, result=NoPayload),
    "vm.reconfigure": CommandContract(args=ReconfigureArgs, result=NoPayload),
    "vm.delete": CommandContract(args=DeleteArgs, result=DeleteResult),
    "vm.guest": CommandContract(args=GuestArgs, result=GuestResult),
    "vm.migrate": CommandContract(args=MigrateArgs, result=MigrateResult),
    # Four shapes: on its host, live to another host, and the offline saga's steps
    # (``offline_step``); ``parse_args`` picks the one that matches. One result model for all.
    "vm.relocate": CommandContract(args=RelocateArgs, result=RelocateResult),
    "host.cpu_baseline": CommandContract(args=CpuBaselineArgs, result=CpuBaselineResult),
    "host.cpu_compare": CommandContract(args=CpuCompareArgs, result=CpuCompareResult),
    # Answered by a state report, never by a task result.
    "host.refresh": CommandContract(args=NoArgs, result=NoPayload),
    "vm.snapshot.create": CommandContract(args=SnapshotCreateArgs, result=SnapshotCreated),
    "vm.snapshot.revert": CommandContract(args=SnapshotRevertArgs, result=SnapshotReverted),
    "vm.snapshot.delete": CommandContract(args=SnapshotDeleteArgs, result=SnapshotsDeleted),
    "vm.clone": CommandContract(args=CloneArgs, result=CloneResult),
    "vm.promote": CommandContract(args=UuidArgs, result=PromoteResult),
    "vm.backup": CommandContract(args=BackupArgs, result=BackupResult),
    "vm.restore": CommandContract(args=RestoreArgs, result=RestoreResult),
    "template.capture": CommandContract(args=CaptureArgs, result=CaptureResult),
    "template.release": CommandContract(args=ReleaseArgs, result=ReleaseResult),
    "template.delete": CommandContract(args=TemplateDirArgs, result=TemplateDeleted),
    "template.verify": CommandContract(args=VerifyArgs, result=VerifyResult),
    "datastore.browse": CommandContract(args=BrowseArgs, result=BrowseResult),
    "vm.deploy": CommandContract(args=DeployArgs, result=DeployResult),
    "vm.import_disk": CommandContract(args=ImportDiskArgs, result=ImportResult),
    "vm.import_ova": CommandContract(args=ImportOvaArgs, result=ImportOvaResult),
    "vm.export": CommandContract(args=ExportArgs, result=ExportResult),
    # Presented to the agent's console endpoint: the answer is the console stream, no result.
    "console.open": CommandContract(args=UuidArgs, result=NoPayload),
}

_OFFLINE_STEPS: dict[str, type[CommandArgs]] = {
    "copy": OfflineCopyArgs,
    "define": OfflineDefineArgs,
    "finish": OfflineFinishArgs,
    "discard": OfflineDiscardArgs,
}


class UnknownRelocationStep(ValueError):
    """A ``vm.relocate`` naming an ``offline_step`` the agent does not know (INVALID_SPEC)."""


def args_model(name: str, args: dict[str, Any]) -> type[CommandArgs]:
    """The arguments model of command ``name`` as sent with ``args`` (``vm.relocate``'s offline
    steps have one each); KeyError for a name without a row."""
    if name == "vm.relocate" and args.get("offline_step"):
        step = _OFFLINE_STEPS.get(str(args["offline_step"]))
        if step is None:
            raise UnknownRelocationStep(f"unknown relocation step {args['offline_step']!r}")
        return step
    return COMMANDS[name].args


def parse_args(name: str, args: dict[str, Any]) -> CommandArgs:
    """Command ``name``'s arguments as the agent reads them (pydantic's ValidationError when
    they do not fit the model)."""
    return args_model(name, args).model_validate(args)


def parse_result(name: str, result: dict[str, Any]) -> Result:
    """Command ``name``'s result as the server reads it (its row's result model; pydantic's
    ValidationError when it does not fit)."""
    return COMMANDS[name].result.model_validate(result)


def unmodelled(names: tuple[str, ...]) -> list[str]:
    """Those of ``names`` without a row (a unit test walks ``CommandName``)."""
    return [n for n in names if n not in COMMANDS]


__all__ = ["COMMANDS", "CommandContract", "CommandName", "RelocateStepArgs", "SentArgs", "UnknownRelocationStep", "args_model", "parse_args", "parse_result", "unmodelled"]
