"""Agent side of a powered-off VM's relocation to another host (vcenter.services.compute.relocation's
saga): the ``vm.relocate`` command with ``offline_step``, each step idempotent.

- copy (on the copier, a host mounting both datastores): ``qemu-img convert`` of every old
  file to its new path (a temporary name renamed when complete; an existing new file is an
  earlier delivery's finished copy), progress as the Task's, cancel through the progress
  answer. On failure or cancel every new file of this relocation is removed (their names
  carry the VM's UUID: no other VM has them).
- define (on the target): every disk must already exist here (a missing copy is an error,
  never an empty new disk); the domain is defined if absent, not started.
- finish (on the source): the domain is undefined here (refused while it runs), then the old
  files are removed; files that cannot be removed are named in the result.
- discard (a rollback, on the copier or the target): undefine the domain when asked, remove
  the new files.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from vcenter.hypervisor import images
from vcenter.hypervisor.base import DriverError
from vcenter.hypervisor.bootimages import with_boot_files
from vcenter.messaging.contracts import (
    DomainState,
    MigrationProgress,
    OfflineCopyArgs,
    OfflineDefineArgs,
    OfflineDiscardArgs,
    OfflineFinishArgs,
    TaskProgress,
)
from vcenter.messaging.results import RelocateResult
from workers.agent.api_client import PermanentReportError
from workers.agent.command_context import CURRENT_COMMAND
from workers.agent.service import AgentService

log = logging.getLogger(__name__)


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def _copy(agent: AgentService, args: OfflineCopyArgs) -> tuple[DomainState | None, RelocateResult]:
    command = CURRENT_COMMAND.get()
    copies = args.copies
    cancel = threading.Event()
    sizes = []
    for c in copies:
        if not os.path.exists(c.to) and not os.path.exists(c.from_):
            raise DriverError("DISK_NOT_FOUND", f"{c.from_} does not exist on this host")
        sizes.append(int(images.info(c.to if os.path.exists(c.to) else c.from_)["virtual-size"]))
    total = sum(sizes) or 1
    last = [0.0]

    def reporter(done_before: int, size: int):
        def report(fraction: float) -> None:
            now = time.monotonic()
            if fraction < 1.0 and now - last[0] < 0.5:
                return
            last[0] = now
            done = done_before + int(fraction * size)
            p = MigrationProgress(phase="copying", data_total=total, data_processed=done, data_remaining=total - done)
            try:
                answer = agent.api.post(
                    f"/tasks/{command.task_id}/progress",
                    TaskProgress(command_id=command.command_id, step="copying files", progress=5 + int(75 * done / total), details=p.model_dump(mode="json")).model_dump(),
                    retry_for=2,
                )
                if not answer.get("proceed", True):
                    cancel.set()
            except (ConnectionError, PermanentReportError) as exc:
                log.warning("relocation progress of task %s not reported: %s", command.task_id, exc)

        return report

    started = time.monotonic()
    done = 0
    try:
        for c, size in zip(copies, sizes):
            images.convert(c.from_, c.format, c.to, c.format, on_progress=reporter(done, size), cancel=cancel)
            done += size
            if cancel.is_set():
                raise DriverError("CANCELLED", "cancelled")
    except DriverError as exc:
        for c in copies:
            _unlink(c.to)
        if exc.code == "CANCELLED":
            raise DriverError("MIGRATION_CANCELLED", "the relocation was cancelled while copying; the new files are removed") from None
        raise
    return None, RelocateResult(copied=[c.to for c in copies], bytes_=total, elapsed_ms=int((time.monotonic() - started) * 1000))


def _define(agent: AgentService, args: OfflineDefineArgs) -> tuple[DomainState | None, RelocateResult]:
    spec = with_boot_files(args.spec, agent.settings)
    missing = [f"{d.datastore_path}/{d.file}" for d in spec.disks if not os.path.exists(f"{d.datastore_path}/{d.file}")]
    if missing:
        raise DriverError("DISK_NOT_FOUND", f"disks not on this host's datastores: {', '.join(missing)}")
    state = agent.driver.domain_state(spec.uuid)
    if state is not None:
        return state, RelocateResult(already_defined=True)
    return agent.driver.define(spec), RelocateResult(defined=True)


def _finish(agent: AgentService, args: OfflineFinishArgs) -> tuple[DomainState | None, RelocateResult]:
    state = agent.driver.domain_state(args.uuid)
    if state is not None:
        if state.power_state != "poweredOff":
            raise DriverError("VM_POWERED_ON", f"the VM is {state.power_state} on its old host: not undefined")
        agent.driver.undefine(args.uuid, [])
    removed, not_removed = [], []
    for path in args.remove:
        try:
            if _unlink(path):
                removed.append(path)
        except OSError as exc:
            not_removed.append(f"{path}: {exc.strerror}")
    return None, RelocateResult(removed=removed, not_removed=not_removed)


def _discard(agent: AgentService, args: OfflineDiscardArgs) -> tuple[DomainState | None, RelocateResult]:
    if args.uuid:
        state = agent.driver.domain_state(args.uuid)
        if state is not None and state.power_state == "poweredOff":
            agent.driver.undefine(args.uuid, [])
    removed = [p for p in args.paths if _unlink(p)]
    return None, RelocateResult(removed=removed)


# A step's arguments model (vcenter.messaging.commands.args_model picks it by ``offline_step``).
STEPS: dict[type[Any], Callable[[AgentService, Any], tuple[DomainState | None, RelocateResult]]] = {
    OfflineCopyArgs: _copy,
    OfflineDefineArgs: _define,
    OfflineFinishArgs: _finish,
    OfflineDiscardArgs: _discard,
}


def run(agent: AgentService, args: OfflineCopyArgs | OfflineDefineArgs | OfflineFinishArgs | OfflineDiscardArgs) -> tuple[DomainState | None, RelocateResult]:
    return STEPS[type(args)](agent, args)
