"""Command execution on the host: one function per command name, each idempotent, so a
command redelivered after the agent died (acks_late) leaves exactly one result.

``execute`` reports ``running`` first (the server may answer "do not proceed": the task was
cancelled or already ended), runs the command while a lease keeper renews the task's lease,
and reports the result. The Celery message is acknowledged only after the result reached
the server.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from vcenter.core.clock import as_utc, utcnow
from vcenter.core.release import release
from vcenter.hypervisor.base import ConnectionLost, DriverError
from vcenter.hypervisor.bootimages import with_boot_files
from vcenter.messaging.commands import (
    CpuBaselineArgs,
    CpuCompareArgs,
    DeleteArgs,
    GuestArgs,
    HaStartArgs,
    ReconfigureArgs,
    RelocateStepArgs,
    ShutdownArgs,
    UnknownRelocationStep,
    UuidArgs,
    parse_args,
)
from vcenter.messaging.results import CpuBaselineResult, CpuCompareResult, CreateResult, DeleteResult, GuestResult, HaStartResult, MigrateResult, MigrationStats, NoPayload, RelocateResult, Result
from vcenter.messaging.contracts import (
    PROTOCOL_VERSION,
    Command,
    CommandArgs,
    CreateArgs,
    CpuSpec,
    DomainState,
    MigrateArgs,
    MigrationOptions,
    MigrationProgress,
    OfflineCopyArgs,
    OfflineDefineArgs,
    OfflineDiscardArgs,
    OfflineFinishArgs,
    RelocateArgs,
    TaskProgress,
    TaskResult,
)
from vcenter.messaging.signing import CommandRefused, claimed_command
from workers.agent import datastore_guard
from workers.agent.api_client import PermanentReportError
from workers.agent.command_context import CURRENT_COMMAND
from workers.agent.service import AgentService

log = logging.getLogger(__name__)

# Test hook for the kill-between-call-and-ack test: when this file exists, the agent removes
# it and kills itself right after the hypervisor call, before reporting or acknowledging.
CRASH_FILE_ENV = "VCENTER_AGENT_CRASH_AFTER_CALL_FILE"


def _crash_point() -> None:
    path = os.environ.get(CRASH_FILE_ENV)
    if path and os.path.exists(path):
        os.unlink(path)
        log.warning("test hook: killing the agent between the hypervisor call and the acknowledgement")
        # Its whole process group: the supervisor too (workers.agent.supervisor would start it
        # again at once), so that the test decides when the agent comes back.
        os.killpg(os.getpgid(0), signal.SIGKILL)


def _create(agent: AgentService, args: CreateArgs) -> tuple[DomainState, CreateResult]:
    driver = agent.driver
    spec = with_boot_files(args.spec, agent.settings)
    existing = driver.domain_state(spec.uuid)
    if existing is not None:  # redelivered: already done
        return existing, CreateResult(already_defined=True)
    absent = [f"{d.datastore_path}/{d.file}" for d in spec.disks if not os.path.exists(f"{d.datastore_path}/{d.file}")]
    try:
        driver.create_disks(spec)
        state = driver.define(spec)
    except Exception:
        # Roll back what this attempt created, so a failed create leaves nothing behind.
        try:
            driver.undefine(spec.uuid, absent)
        except Exception:
            log.exception("rollback of %s failed", spec.name)
        raise
    return state, CreateResult(disks=[f"{d.datastore_path}/{d.file}" for d in spec.disks])


# A handler gets its command's arguments as their model and answers with its result model
# (vcenter.messaging.commands.COMMANDS); ``_execute`` puts ``result()`` on the wire.
Handler = Callable[[AgentService, Any], tuple[DomainState | None, Result]]


def _simple(method: str) -> Handler:
    def run(agent: AgentService, args: UuidArgs) -> tuple[DomainState, NoPayload]:
        return getattr(agent.driver, method)(args.uuid), NoPayload()

    return run


def _shutdown(agent: AgentService, args: ShutdownArgs) -> tuple[DomainState, NoPayload]:
    return agent.driver.shutdown(args.uuid, float(args.timeout)), NoPayload()


def _reconfigure(agent: AgentService, args: ReconfigureArgs) -> tuple[DomainState, NoPayload]:
    return agent.driver.reconfigure(args.uuid, args.vcpus, args.memory_mib), NoPayload()


def _delete(agent: AgentService, args: DeleteArgs) -> tuple[DomainState | None, DeleteResult]:
    agent.driver.undefine(args.uuid, list(args.disks))
    return None, DeleteResult(deleted_disks=list(args.disks))


def _guest(agent: AgentService, args: GuestArgs) -> tuple[DomainState | None, GuestResult]:
    reply = agent.guests.command(args.uuid, args.line, float(args.timeout))
    return agent.driver.domain_state(args.uuid), GuestResult(reply=reply)


def _cpu_baseline(agent: AgentService, args: CpuBaselineArgs) -> tuple[None, CpuBaselineResult]:
    """libvirt's baseline of the given host CPUs: its definition, its model, the features it
    lists beyond the model, and all its features expanded by libvirt's CPU map."""
    import xml.etree.ElementTree as ET

    xml = agent.driver.cpu_baseline(list(args.cpu_xmls))
    expanded = ET.fromstring(agent.driver.cpu_baseline(list(args.cpu_xmls), expand_features=True))
    root = ET.fromstring(xml)
    return None, CpuBaselineResult(
        xml=xml,
        model=root.findtext("model") or "",
        model_features=[f.get("name") for f in root.findall("feature") if f.get("policy", "require") == "require"],
        features=sorted(f.get("name") for f in expanded.findall("feature") if f.get("policy", "require") == "require"),
    )


def _migrate(agent: AgentService, args: MigrateArgs) -> tuple[DomainState | None, MigrateResult]:
    """VMotion from this host: libvirt's job stats go to the Task as progress; a cancel the
    server answers with aborts the libvirt job (the VM keeps running here)."""
    command = CURRENT_COMMAND.get()
    options = args.options
    cancel = threading.Event()
    last = [0.0]

    def progress(p: MigrationProgress) -> None:
        now = time.monotonic()
        if now - last[0] < 0.5 and p.phase not in ("completed",):
            return
        last[0] = now
        total = p.memory_total or p.data_total or 0
        done = (p.memory_processed or 0) + (p.memory_zero_bytes or 0) if p.memory_total else (p.data_processed or 0)
        percent = min(99, int(100 * done / total)) if total else 10
        try:
            answer = agent.api.post(
                f"/tasks/{command.task_id}/progress", TaskProgress(command_id=command.command_id, step="migrating", progress=percent, details=p.model_dump(mode="json")).model_dump(), retry_for=2
            )
            if not answer.get("proceed", True):
                cancel.set()
        except (ConnectionError, PermanentReportError) as exc:
            log.warning("migration progress of task %s not reported: %s", command.task_id, exc)

    started = time.monotonic()
    stats = agent.driver.migrate(args.uuid, options, on_progress=progress, cancel=cancel)
    # The libvirt call's own wall time: the rest of a task's duration is ours (queueing,
    # reports, the inventory update).
    return None, MigrateResult(stats=MigrationStats(**stats.model_dump(mode="json"), call_ms=round((time.monotonic() - started) * 1000, 1)))


def _relocate(agent: AgentService, args: RelocateStepArgs) -> tuple[DomainState | None, RelocateResult]:
    """Storage VMotion on this host: every disk copied (block copy + pivot while running, or
    converted while off); the old files are removed only after all disks moved."""
    if isinstance(args, (OfflineCopyArgs, OfflineDefineArgs, OfflineFinishArgs, OfflineDiscardArgs)):
        # a powered-off VM moving to another host: one step of its saga
        from workers.agent import relocation

        return relocation.run(agent, args)
    command = CURRENT_COMMAND.get()
    cancel = threading.Event()
    moves = list(args.moves)
    if args.migrate:
        return _relocate_to_host(agent, args, args.migrate)

    def progress_of(i: int):
        def report(p: MigrationProgress) -> None:
            done = (p.data_processed or 0) / p.data_total if p.data_total else 0.0
            percent = min(99, int(100 * (i + done) / len(moves)))
            try:
                answer = agent.api.post(
                    f"/tasks/{command.task_id}/progress",
                    TaskProgress(command_id=command.command_id, step=f"copying disk {moves[i].target}", progress=percent, details=p.model_dump(mode="json")).model_dump(),
                    retry_for=2,
                )
                if not answer.get("proceed", True):
                    cancel.set()
            except (ConnectionError, PermanentReportError) as exc:
                log.warning("relocation progress not reported: %s", exc)

        return report

    for i, move in enumerate(moves):
        if args.running:
            agent.driver.move_disk(args.uuid, move.target, move.to, move.format, on_progress=progress_of(i), cancel=cancel)
        else:
            agent.driver.move_disk_offline(args.uuid, move.target, move.to, move.format)
    removed = []
    for move in moves:
        if move.from_ != move.to and os.path.exists(move.from_):
            os.unlink(move.from_)
            removed.append(move.from_)
    return agent.driver.domain_state(args.uuid), RelocateResult(moved=[m.to for m in moves], removed=removed)


def _relocate_to_host(agent: AgentService, args: RelocateArgs, options: MigrationOptions) -> tuple[DomainState | None, RelocateResult]:
    """Storage VMotion to another host: a live migration from this host with the moved disks
    copied to their new paths on the target (the options carry the disks and their paths);
    the old files here are removed only once libvirt completed."""
    _, migrated = _migrate(agent, MigrateArgs(uuid=args.uuid, options=options))
    removed = []
    for move in args.moves:
        # A path naming the same file on both hosts would be a shared datastore: never removed.
        if move.from_ != move.to and os.path.exists(move.from_):
            os.unlink(move.from_)
            removed.append(move.from_)
    return None, RelocateResult(stats=migrated.stats, moved=[m.to for m in args.moves], removed=removed)


def _cpu_compare(agent: AgentService, args: CpuCompareArgs) -> tuple[None, CpuCompareResult]:
    """libvirt's comparison of a guest CPU definition with this host's CPU."""
    from vcenter.hypervisor.libvirt.xml import build_cpu_xml

    ok, detail = agent.driver.compare_cpu(build_cpu_xml(CpuSpec.model_validate(args.cpu)))
    return None, CpuCompareResult(compatible=ok, detail=detail)


def _ha_start(agent: AgentService, args: HaStartArgs) -> tuple[DomainState, HaStartResult]:
    """HA restart on this host: the disks already exist on a shared datastore (never created
    here); define the domain if this host lacks it, then start it. Idempotent: a redelivered
    command finds it running. QEMU's image locks refuse the start while another host still
    holds the disks."""
    driver = agent.driver
    spec = with_boot_files(args.spec, agent.settings)
    missing = [f"{d.datastore_path}/{d.file}" for d in spec.disks if not os.path.exists(f"{d.datastore_path}/{d.file}")]
    if missing:
        raise DriverError("DISK_NOT_FOUND", f"disks not on this host's datastores: {', '.join(missing)}")
    state = driver.domain_state(spec.uuid)
    defined = False
    if state is None:
        driver.define(spec)
        defined = True
        state = driver.domain_state(spec.uuid)
    if state is not None and state.power_state == "poweredOn":
        return state, HaStartResult(already_running=True, defined=defined)
    return driver.start(spec.uuid), HaStartResult(defined=defined)


HANDLERS: dict[str, Handler] = {
    "vm.create": _create,
    "vm.ha_start": _ha_start,
    "vm.start": _simple("start"),
    "vm.stop": _simple("stop"),
    "vm.reset": _simple("reset"),
    "vm.suspend": _simple("suspend"),
    "vm.resume": _simple("resume"),
    "vm.shutdown": _shutdown,
    "vm.reconfigure": _reconfigure,
    "vm.delete": _delete,
    "vm.guest": _guest,
    "host.cpu_baseline": _cpu_baseline,
    "vm.migrate": _migrate,
    "vm.relocate": _relocate,
    "host.cpu_compare": _cpu_compare,
}

from workers.agent import vmdata as _vmdata  # noqa: E402  (snapshots, clones, backups)

HANDLERS.update(_vmdata.HANDLERS)

from workers.agent import templates as _templates  # noqa: E402  (templates, deploy, import/export)

HANDLERS.update(_templates.HANDLERS)


@contextmanager
def _lease_keeper(agent: AgentService, command: Command, step: str) -> Iterator[None]:
    """Renew the task's lease while a long call runs, so the reaper knows we are alive."""
    done = threading.Event()
    period = max(agent.settings.task_lease / 3, 0.2)

    def renew() -> None:
        while not done.wait(period):
            try:
                agent.api.post(f"/tasks/{command.task_id}/progress", TaskProgress(command_id=command.command_id, step=step, progress=10).model_dump(), retry_for=period)
            except (ConnectionError, PermanentReportError) as exc:
                log.warning("lease renewal of task %s failed: %s", command.task_id, exc)

    thread = threading.Thread(target=renew, daemon=True, name=f"lease-{command.task_id}")
    thread.start()
    try:
        yield
    finally:
        done.set()


def _with_reconnect(agent: AgentService, handler: Handler, args: CommandArgs) -> tuple[DomainState | None, Result]:
    """A command that finds the hypervisor connection dead (libvirtd restarted) reconnects and
    runs again, until ``agent_command_reconnect_timeout``: commands are idempotent."""
    deadline = time.monotonic() + agent.settings.agent_command_reconnect_timeout
    while True:
        try:
            return handler(agent, args)
        except ConnectionLost:
            if time.monotonic() > deadline:
                raise
            log.warning("hypervisor connection lost during a command; reconnecting and retrying")
            time.sleep(agent.settings.agent_reconnect_delay)
            try:
                agent.driver.connect()
            except DriverError as exc:
                log.warning("reconnect failed: %s", exc)


def execute(agent: AgentService, payload: dict[str, Any]) -> dict[str, Any]:
    """Admit the message (the server's signature, this host, not expired, not a replay of a
    command already reported: workers.agent.trust), run it, and remember it once its outcome
    reached the server; a refused message is acknowledged without effect."""
    gate = getattr(agent, "command_gate", None)
    if gate is None:
        log.error("no command public key: every command is refused")
        return {"refused": "NO_COMMAND_KEY"}
    try:
        command = gate.admit(payload)
    except CommandRefused as exc:
        log.error("command refused (%s): %s [claims: %s]", exc.code, exc.message, claimed_command(payload))
        return {"refused": exc.code}
    try:
        outcome = _execute(agent, command)
    except BaseException:
        gate.release(command)
        raise
    # {"ok": ...}: the result was reported (or needed none); anything else ran nothing.
    if "ok" in outcome:
        gate.reported(command)
    else:
        gate.release(command)
    return outcome


def unknown_command(command: Command) -> str:
    return f"this agent (release {release()}, protocol {PROTOCOL_VERSION}) does not know the command {command.name!r} (sent at protocol {command.version}): upgrade the agent"


def _execute(agent: AgentService, command: Command) -> dict[str, Any]:
    if command.host_id != agent.host_id:
        log.error("command %s is for host %s, not this host %s: refused", command.command_id, command.host_id, agent.host_id)
        return {"refused": "WRONG_HOST"}
    if command.name == "host.refresh":
        agent.request_report()
        return {"ok": True}
    if utcnow() - as_utc(command.issued_at) > timedelta(seconds=agent.settings.task_queue_timeout):
        log.warning("command %s (%s) expired before it arrived: refused", command.command_id, command.name)
        return {"refused": "COMMAND_EXPIRED"}
    handler = HANDLERS.get(command.name)
    if handler is None and command.task_id is None:  # no task to fail: say it in the log
        log.error("%s", unknown_command(command))
        return {"refused": "UNKNOWN_COMMAND"}
    task_path = f"/tasks/{command.task_id}"
    answer = agent.api.post(f"{task_path}/progress", TaskProgress(command_id=command.command_id, step=command.name, progress=5).model_dump())
    if not answer.get("proceed"):
        log.info("command %s (%s) not run: %s", command.command_id, command.name, answer.get("reason"))
        return {"skipped": answer.get("reason")}
    log.info("running %s for task %s", command.name, command.task_id)
    domain: DomainState | None = None
    args: CommandArgs | None = None
    try:
        # The arguments as their model; a command that does not fit it fails after the guard
        # below (which reads the dict as it came), as a missing key did: AGENT_ERROR, or
        # INVALID_SPEC for an unknown relocation step.
        if handler is None:  # from a newer server: the task ends with the named error
            raise DriverError("UNKNOWN_COMMAND", unknown_command(command))
        try:
            args = parse_args(command.name, command.args)
            unfit: ValueError | None = None
        except ValueError as exc:  # pydantic's ValidationError is one
            unfit = exc
        # Every host path the command names must lie below this host's datastore roots,
        # checked before anything is touched (workers.agent.datastore_guard).
        datastore_guard.check_command(agent.settings, command.name, command.args)
        if isinstance(unfit, UnknownRelocationStep):
            raise DriverError("INVALID_SPEC", str(unfit)) from None
        if unfit is not None or args is None:
            raise unfit or ValueError("no arguments")
        # Guest commands and migrations wait long; they need not hold the hypervisor lock.
        lock = agent.driver_lock if command.name not in ("vm.guest", "vm.migrate", "vm.relocate", *_vmdata.UNLOCKED, *_templates.UNLOCKED) else contextlib.nullcontext()
        CURRENT_COMMAND.set(command)
        with _lease_keeper(agent, command, command.name), lock:
            domain, result = _with_reconnect(agent, handler, args)
        _crash_point()
        report = TaskResult(command_id=command.command_id, ok=True, result=result.result(), domain=domain)
    except DriverError as exc:
        log.warning("%s for task %s failed: %s", command.name, command.task_id, exc)
        uuid = args.domain_uuid() if args is not None else None
        try:
            domain = agent.driver.domain_state(uuid) if uuid else None
        except DriverError:
            domain = None
        report = TaskResult(command_id=command.command_id, ok=False, error_code=exc.code, error_message=exc.message, domain=domain)
    except Exception as exc:  # an agent bug must still end the task, with a named error
        log.exception("%s for task %s crashed", command.name, command.task_id)
        report = TaskResult(command_id=command.command_id, ok=False, error_code="AGENT_ERROR", error_message=f"{type(exc).__name__}: {exc}")
    # AgentService.post_result: never overtakes a state report listed before this command.
    post_result = getattr(agent, "post_result", None) or agent.api.post
    post_result(f"{task_path}/result", report.model_dump(mode="json"))
    log.info("%s for task %s: %s", command.name, command.task_id, "ok" if report.ok else report.error_code)
    return {"ok": report.ok}
