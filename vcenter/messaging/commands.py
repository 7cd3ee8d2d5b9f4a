"""The typed arguments and results of every agent command, and the one table that names them.

``COMMANDS`` maps each command name (``contracts.CommandName``) to the model of its arguments
and, where the agent answers with data the server reads, the model of its result. The server
builds ``Command.args`` only through an arguments model (``.args()``); the agent turns the
arguments it received into that model (``parse_args``) before a handler sees them.

What decides the wire: ``Command.args`` stays a JSON dict (the signature covers it), and an
arguments model here puts on the wire exactly the top-level keys its builder named
(``SentArgs``): a key the server leaves out stays out, and the agent then reads the model's
default, the same default it used when it read the dict. So a command carries the same keys
and values as when it was built by hand. Numbers keep their JSON type (``int | float``, never
a coercion that would turn 120 into 120.0).

Result models accept any further keys (``extra="allow"``): the server stores the agent's result
dict as the task's result unchanged and reads only the fields named here through the model.
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


class CpuBaselineResult(BaseModel):
    model_config = ConfigDict(extra="allow")
    xml: str
    model: str
    features: list[str]
    model_features: list[str] = []


class CpuCompareArgs(SentArgs):
    """``host.cpu_compare``: does this guest CPU definition (a ``CpuSpec`` as stored on the VM)
    run on this host."""

    cpu: dict[str, Any]


class CpuCompareResult(BaseModel):
    model_config = ConfigDict(extra="allow")
    compatible: bool
    detail: Any = None


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


class SnapshotResult(BaseModel):
    """What a snapshot command changed: libvirt may drop the VM's backup checkpoints with it."""

    model_config = ConfigDict(extra="allow")
    checkpoints_dropped: list[str] | None = None


class SnapshotCreated(SnapshotResult):
    name: str
    parent: str | None = None
    description: str = ""
    memory: bool = False
    state: str | None = None


class SnapshotsDeleted(SnapshotResult):
    deleted: list[str] = []


class PromoteResult(BaseModel):
    model_config = ConfigDict(extra="allow")
    flattened: Any = None


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


class BackupResult(BaseModel):
    model_config = ConfigDict(extra="allow")
    kind: str | None = None
    checkpoint: str | None = None
    files: dict[str, int] = Field(default={}, description="disk target -> bytes on disk")


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


class CaptureResult(BaseModel):
    model_config = ConfigDict(extra="allow")
    manifest: dict[str, Any]


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


class ImportResult(BaseModel):
    model_config = ConfigDict(extra="allow")
    capacity_mib: int | None = None


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


# --- migration and relocation -------------------------------------------------------------


class MigrateResult(BaseModel):
    model_config = ConfigDict(extra="allow")
    stats: dict[str, Any] = {}


class RelocateResult(BaseModel):
    """A relocation step's files: those removed and (finish) those that could not be."""

    model_config = ConfigDict(extra="allow")
    removed: list[str] = []
    not_removed: list[str] = []


RelocateStepArgs = RelocateArgs | OfflineCopyArgs | OfflineDefineArgs | OfflineFinishArgs | OfflineDiscardArgs


class CommandContract(BaseModel):
    """One row of the table: a command's arguments model, its result model (None: the server
    reads nothing of the result but stores it)."""

    model_config = ConfigDict(frozen=True)
    args: type[CommandArgs]
    result: type[BaseModel] | None = None


COMMANDS: dict[str, CommandContract] = {
    "vm.create": CommandContract(args=CreateArgs),
    "vm.start": CommandContract(args=UuidArgs),
    "vm.stop": CommandContract(args=UuidArgs),
    "vm.shutdown": CommandContract(args=ShutdownArgs),
    "vm.reset": CommandContract(args=UuidArgs),
    "vm.ha_start": CommandContract(args=HaStartArgs),
    "vm.suspend": CommandContract(args=UuidArgs),
    "vm.resume": CommandContract(args=UuidArgs),
    "vm.reconfigure": CommandContract(args=ReconfigureArgs),
    "vm.delete": CommandContract(args=DeleteArgs),
    "vm.guest": CommandContract(args=GuestArgs),
    "vm.migrate": CommandContract(args=MigrateArgs, result=MigrateResult),
    # Four shapes: on its host, live to another host, and the offline saga's steps
    # (``offline_step``); ``parse_args`` picks the one that matches.
    "vm.relocate": CommandContract(args=RelocateArgs, result=RelocateResult),
    "host.cpu_baseline": CommandContract(args=CpuBaselineArgs, result=CpuBaselineResult),
    "host.cpu_compare": CommandContract(args=CpuCompareArgs, result=CpuCompareResult),
    "host.refresh": CommandContract(args=NoArgs),
    "vm.snapshot.create": CommandContract(args=SnapshotCreateArgs, result=SnapshotCreated),
    "vm.snapshot.revert": CommandContract(args=SnapshotRevertArgs, result=SnapshotResult),
    "vm.snapshot.delete": CommandContract(args=SnapshotDeleteArgs, result=SnapshotsDeleted),
    "vm.clone": CommandContract(args=CloneArgs),
    "vm.promote": CommandContract(args=UuidArgs, result=PromoteResult),
    "vm.backup": CommandContract(args=BackupArgs, result=BackupResult),
    "vm.restore": CommandContract(args=RestoreArgs),
    "template.capture": CommandContract(args=CaptureArgs, result=CaptureResult),
    "template.release": CommandContract(args=ReleaseArgs),
    "template.delete": CommandContract(args=TemplateDirArgs),
    "template.verify": CommandContract(args=VerifyArgs),
    "datastore.browse": CommandContract(args=BrowseArgs),
    "vm.deploy": CommandContract(args=DeployArgs),
    "vm.import_disk": CommandContract(args=ImportDiskArgs, result=ImportResult),
    "vm.import_ova": CommandContract(args=ImportOvaArgs),
    "vm.export": CommandContract(args=ExportArgs),
    "console.open": CommandContract(args=UuidArgs),
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


def parse_result(name: str, result: dict[str, Any]) -> BaseModel:
    """Command ``name``'s result as the server reads it (its row's result model)."""
    model = COMMANDS[name].result
    if model is None:
        raise KeyError(f"{name} has no result model")
    return model.model_validate(result)


def unmodelled(names: tuple[str, ...]) -> list[str]:
    """Those of ``names`` without a row (a unit test walks ``CommandName``)."""
    return [n for n in names if n not in COMMANDS]


__all__ = ["COMMANDS", "CommandContract", "CommandName", "RelocateStepArgs", "SentArgs", "UnknownRelocationStep", "args_model", "parse_args", "parse_result", "unmodelled"]
