"""Agent commands for snapshots, clones, backups and restores (registered into
workers.agent.commands.HANDLERS). Each is idempotent: the driver finds a snapshot, checkpoint
or file already made and answers "already done"; long copies report libvirt's job as the
Task's progress, and a cancel the server answers with aborts the job (the guest runs on)."""

from __future__ import annotations

import logging
import os
import threading
from vcenter.hypervisor.base import DriverError
from vcenter.hypervisor.bootimages import with_boot_files
from vcenter.messaging.commands import BackupArgs, CloneArgs, RestoreArgs, SnapshotCreateArgs, SnapshotDeleteArgs, SnapshotRevertArgs, UuidArgs
from vcenter.messaging.contracts import DomainState, MigrationProgress, TaskProgress
from vcenter.messaging.results import BackupResult, CloneResult, PromoteResult, RestoreResult, SnapshotCreated, SnapshotReverted, SnapshotsDeleted
from workers.agent.api_client import PermanentReportError
from workers.agent.command_context import CURRENT_COMMAND
from workers.agent.service import AgentService

log = logging.getLogger(__name__)


def _ops(agent: AgentService):
    if not hasattr(agent.driver, "backup"):
        raise DriverError("UNSUPPORTED", "this host's hypervisor driver has no snapshots, clones or backups")
    return agent.driver


def _progress(agent: AgentService, step: str, cancel: threading.Event):
    command = CURRENT_COMMAND.get()

    def report(p: MigrationProgress) -> None:
        percent = min(99, int(100 * (p.data_processed or 0) / p.data_total)) if p.data_total else 10
        try:
            answer = agent.api.post(
                f"/tasks/{command.task_id}/progress", TaskProgress(command_id=command.command_id, step=step, progress=percent, details=p.model_dump(mode="json")).model_dump(), retry_for=2
            )
            if not answer.get("proceed", True):
                cancel.set()
        except (ConnectionError, PermanentReportError) as exc:
            log.warning("progress of task %s not reported: %s", command.task_id, exc)

    return report


# The driver answers with a dict; its result model reads it (a key it does not name is kept).
def _snapshot_create(agent: AgentService, args: SnapshotCreateArgs) -> tuple[DomainState | None, SnapshotCreated]:
    result = SnapshotCreated.model_validate(_ops(agent).snapshot_create(args.uuid, args.name, args.description))
    return agent.driver.domain_state(args.uuid), result


def _snapshot_revert(agent: AgentService, args: SnapshotRevertArgs) -> tuple[DomainState | None, SnapshotReverted]:
    result = SnapshotReverted.model_validate(_ops(agent).snapshot_revert(args.uuid, args.name))
    return agent.driver.domain_state(args.uuid), result


def _snapshot_delete(agent: AgentService, args: SnapshotDeleteArgs) -> tuple[DomainState | None, SnapshotsDeleted]:
    result = SnapshotsDeleted.model_validate(_ops(agent).snapshot_delete(args.uuid, args.name, args.children))
    return agent.driver.domain_state(args.uuid), result


def _backup(agent: AgentService, args: BackupArgs) -> tuple[DomainState | None, BackupResult]:
    cancel = threading.Event()
    # The driver reads each disk as the dict it was on the wire (target, path, parent_path).
    result = _ops(agent).backup(args.uuid, [d.model_dump() for d in args.disks], args.incremental_from, args.checkpoint, on_progress=_progress(agent, "copying", cancel), cancel=cancel)
    removed = []
    for path in args.delete_after:
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    return agent.driver.domain_state(args.uuid), BackupResult.model_validate({**result, "retention_removed": removed})


def _clone(agent: AgentService, args: CloneArgs) -> tuple[DomainState | None, CloneResult]:
    cancel = threading.Event()
    result = CloneResult.model_validate(_ops(agent).clone_disks(args.uuid, [d.model_dump() for d in args.disks], args.linked, on_progress=_progress(agent, "copying", cancel), cancel=cancel))
    return agent.driver.domain_state(args.uuid), result


def _promote(agent: AgentService, args: UuidArgs) -> tuple[DomainState | None, PromoteResult]:
    result = PromoteResult.model_validate(_ops(agent).promote(args.uuid, on_progress=_progress(agent, "flattening", threading.Event())))
    return agent.driver.domain_state(args.uuid), result


def _restore(agent: AgentService, args: RestoreArgs) -> tuple[DomainState | None, RestoreResult]:
    """Restore disks from a backup chain; with a spec, define the new VM too (same host)."""
    ops = _ops(agent)
    spec = args.spec
    if spec is not None and agent.driver.domain_state(spec.uuid) is not None:
        return agent.driver.domain_state(spec.uuid), RestoreResult(already_done=True)
    result = RestoreResult.model_validate(ops.restore_disks([d.model_dump() for d in args.disks], replace_uuid=args.replace_uuid))
    if spec is None:
        return agent.driver.domain_state(args.replace_uuid), result
    made = [d.path for d in args.disks]
    try:
        seed = args.seed
        if seed:
            # The new VM's own guest identity (instance id, machine-id, hostname): its seed.
            from templates_store.cloudinit import build_seed_iso

            files = agent.api.get_json(f"/seeds/{spec.uuid}")["files"]
            if not os.path.exists(seed.path):
                build_seed_iso(files, seed.path)
            made.append(seed.path)
            result.seed = seed.path
        state = agent.driver.define(with_boot_files(spec, agent.settings))
    except Exception:
        for path in made:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        raise
    return state, result


HANDLERS = {
    "vm.snapshot.create": _snapshot_create,
    "vm.snapshot.revert": _snapshot_revert,
    "vm.snapshot.delete": _snapshot_delete,
    "vm.backup": _backup,
    "vm.clone": _clone,
    "vm.promote": _promote,
    "vm.restore": _restore,
}
# Long copies that must not hold the host's driver lock (other commands go on meanwhile).
UNLOCKED = ("vm.backup", "vm.clone", "vm.restore", "vm.promote")
