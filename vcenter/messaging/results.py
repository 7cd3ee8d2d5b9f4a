"""The typed results of every agent command: what the agent sends back, what the server reads.

``vcenter.messaging.commands.COMMANDS`` names the result model of each command beside its
arguments model. The agent builds a result only through its model and sends ``result()``;
the server reads the fields it needs through the same model (``model_validate`` of the dict
the report carried) and stores the dict itself as the task's result, unchanged.

What decides the wire: ``TaskResult.result`` stays a JSON dict, and ``result()`` writes
exactly the keys the agent set (``exclude_unset``), in the order the fields are declared
here (which is the order the agent wrote them in before the models existed), so a result
carries the same keys, values and order as when it was a hand-built dict. A key the agent did
not set stays out: the shapes of one command (``already_done`` or the full answer) are one
model with every field optional.

Compatibility: every field has a default unless every agent since the command existed has
sent it, so an older agent's result without a newer key still parses (the default is read);
keys a model does not name are kept (``extra="allow"``: a newer agent's). Numbers keep their
JSON type (``int | float`` where the agent sends either, never 3 turned into 3.0).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from vcenter.messaging.contracts import MigrationProgress


class Result(BaseModel):
    """An agent command's result."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def result(self) -> dict[str, Any]:
        """The result as it travels: the keys the agent set, JSON values, wire names."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class NoPayload(Result):
    """A command whose result carries nothing (``{}``): what it changed is the domain's state,
    which rides beside the result in the report."""


class DefinedResult(Result):
    """A command that defines a domain: a redelivered one finds it defined and says only that."""

    already_defined: bool = False


# --- VM lifecycle ---------------------------------------------------------------------------


class CreateResult(DefinedResult):
    """``vm.create``: the disk files of the new domain."""

    disks: list[str] = []


class HaStartResult(Result):
    """``vm.ha_start``: whether this host had to define the domain first; a redelivered
    command finds it running."""

    already_running: bool = False
    defined: bool = False


class DeleteResult(Result):
    """``vm.delete``: the disk files deleted with the domain."""

    deleted_disks: list[str] = []


class GuestResult(Result):
    """``vm.guest``: the guest's reply on its heartbeat channel."""

    reply: Any = None


# --- host -------------------------------------------------------------------------------------


class CpuBaselineResult(Result):
    """``host.cpu_baseline``: libvirt's baseline CPU, its model, the features it lists beyond
    the model, and all its features expanded by libvirt's CPU map."""

    xml: str
    model: str
    model_features: list[str] = []
    features: list[str]


class CpuCompareResult(Result):
    """``host.cpu_compare``: libvirt's verdict and its explanation."""

    compatible: bool
    detail: Any = None


# --- migration and relocation -----------------------------------------------------------------


class MigrationStats(MigrationProgress):
    """libvirt's final job stats of a migration, with the libvirt call's own wall time; every
    field optional as the server reads it (an older agent, or a test's, sends a few)."""

    model_config = ConfigDict(extra="allow")
    phase: str | None = None  # type: ignore[assignment]  # always sent by the agent; optional to read
    call_ms: int | float | None = None

    def result(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)


class MigrateResult(Result):
    """``vm.migrate``: the migration's stats."""

    stats: MigrationStats | None = None


class RelocateResult(Result):
    """``vm.relocate``, one model for its shapes: on the VM's host (``moved``, ``removed``);
    live to another host (``stats`` first); the offline saga's copy (``copied``, ``bytes``,
    ``elapsed_ms``), define (``already_defined`` or ``defined``), finish (``removed``,
    ``not_removed``: files that could not be removed) and discard (``removed``)."""

    stats: MigrationStats | None = None
    moved: list[str] = []
    removed: list[str] = []
    not_removed: list[str] = []
    copied: list[str] = []
    bytes_: int | None = Field(None, alias="bytes")
    elapsed_ms: int | None = None
    already_defined: bool = False
    defined: bool = False


# --- snapshots, clones, backups ---------------------------------------------------------------
# ``checkpoints_dropped``: libvirt may drop the VM's backup checkpoints with a snapshot
# operation (the next backup is full). Declared in each model, last, as the driver writes it.


class SnapshotCreated(Result):
    """``vm.snapshot.create``: the snapshot as libvirt describes it."""

    name: str
    parent: str | None = None
    description: str = ""
    state: str | None = None
    memory: bool = False
    created: str | None = None
    current: bool = False
    already_done: bool = False
    checkpoints_dropped: list[str] | None = None


class SnapshotReverted(Result):
    """``vm.snapshot.revert``."""

    reverted_to: str | None = None
    checkpoints_dropped: list[str] | None = None


class SnapshotsDeleted(Result):
    """``vm.snapshot.delete``: the snapshots deleted (with ``children``, the subtree)."""

    deleted: list[str] = []
    already_done: bool = False
    checkpoints_dropped: list[str] | None = None


SnapshotResult = SnapshotCreated | SnapshotReverted | SnapshotsDeleted


class CloneResult(Result):
    """``vm.clone``: disk target -> the clone's file."""

    files: dict[str, str] = {}
    already_done: bool = False
    elapsed_ms: int | None = None


class PromoteResult(Result):
    """``vm.promote``: the disk targets made standalone."""

    flattened: list[str] | None = None
    checkpoints_dropped: list[str] | None = None


class BackupResult(Result):
    """``vm.backup``: the point's kind (full when an incremental could not be), its
    checkpoint (None for a powered-off VM's copy) and files, and the retention's removals.
    Every field optional: the backup operation reads it before it looks at ``ok``."""

    kind: str | None = None
    checkpoint: str | None = None
    already_done: bool = False
    running: bool | None = None
    mode: str | None = None
    elapsed_ms: int | None = None
    bytes_: int | None = Field(None, alias="bytes")
    files: dict[str, int] = Field(default={}, description="disk target -> bytes on disk")
    retention_removed: list[str] = []


class RestoreResult(Result):
    """``vm.restore``: the disk files written, the snapshots forgotten with the images they
    lived in, and a new VM's seed; a redelivered restore into a new VM finds it defined."""

    already_done: bool = False
    restored: list[str] = []
    snapshots_forgotten: list[str] = []
    elapsed_ms: int | None = None
    seed: str | None = None


# --- templates, import, export ----------------------------------------------------------------


class CaptureResult(Result):
    """``template.capture``: the template's manifest as written in its folder."""

    manifest: dict[str, Any]
    already_done: bool = False


class ReleaseResult(DefinedResult):
    """``template.release``: the VM's disk files (the template's images renamed)."""

    disks: list[str] = []


class TemplateDeleted(Result):
    """``template.delete``: the folder removed (None: it was already gone)."""

    removed: str | None = None


class VerifiedImage(Result):
    file: str
    sha256: str
    ok: bool


class VerifyResult(Result):
    """``template.verify``: each image's checksum (a mismatch is an error, not a result)."""

    disks: list[VerifiedImage] = []
    ok: bool = True


class BrowseEntry(Result):
    """One entry of a datastore folder: images (by their extension) with what qemu-img read
    (``format`` None: it could not read one)."""

    name: str
    kind: str
    size_bytes: int | None = None
    format: str | None = None
    virtual_size: int | None = None
    backing_file: str | None = None


class BrowseResult(Result):
    """``datastore.browse``: one folder, at most ``limit`` entries."""

    path: str = ""
    entries: list[BrowseEntry] = []
    truncated: bool = False


class DeployResult(DefinedResult):
    """``vm.deploy``: the disk files made and what each copy took (ms)."""

    disks: list[str] = []
    mode: str | None = None
    timings: dict[str, int | float] = {}


class ImportResult(DefinedResult):
    """``vm.import_disk``: the source image's format and size, the VM's disk."""

    source_format: str | None = None
    virtual_size: int | None = None
    capacity_mib: int | None = None
    disk: str | None = None


class ImportOvaResult(DefinedResult):
    """``vm.import_ova``: each member's format, the VM's disk files."""

    formats: dict[str, str] = {}
    disks: list[str] = []


class ExportResult(Result):
    """``vm.export``: the OVA pushed to the upload, its checksum and size, how many disks."""

    upload_id: int | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    disks: int | None = None
