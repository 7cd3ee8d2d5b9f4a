"""Live migration (VMotion) between libvirt hosts, peer to peer (mixed into LibvirtDriver,
vcenter.hypervisor.libvirt.driver).

What this module decides:
- How a migration is asked of libvirt (``migration_flags``, ``migration_params``): always live,
  peer to peer, persistent on the target and undefined here, aborted on an I/O error; the
  options add unsafe, copy-storage (non-shared disks, optionally only some of them, landing on
  other paths: ``relocate_disks``), TLS, auto-converge, post-copy, a migration address
  (``tcp://`` unless it has a scheme) and a bandwidth cap.
- Exactly one host runs the VM afterwards. A redelivered command is idempotent: a domain absent
  here and running on the target is success (``already_done``); a definition left here while
  the target runs it is undefined; a migration already running is followed, not started again.
  After a failure or a cancel, the VM is made sure to run here, unless the target runs it
  (libvirt finished and failed afterwards: success).
- What a failure is called (``failure_code``): a message that says the target could not be
  reached is HOST_UNREACHABLE, a domain that is not running VM_NOT_RUNNING, anything else
  MIGRATION_FAILED with libvirt's message.
- Progress: libvirt's job statistics as MigrationProgress (``progress_from_stats``), polled
  every 0.3 s; the completed job's statistics (downtime, total time) come from the
  job-completed event, else from the target's completed-job stats.

Facts measured with libvirt 9.0 / QEMU 7.2 on the lab: see
tests/lab/test_libvirt_migration.py.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import Callable, Collection, Mapping
from typing import Any

import libvirt

from vcenter.hypervisor.base import ConnectionLost, DriverError
from vcenter.hypervisor.libvirt.storage import dir_pool_xml
from vcenter.hypervisor.libvirt.xml import validate_uuid
from vcenter.messaging.contracts import DomainState, MigrationOptions, MigrationProgress

log = logging.getLogger(__name__)

# Another host's LibvirtDriver (the migration target). Not named by its class: driver.py
# composes this mixin, and importing it here would make the two import each other.
Peer = Any

_UNREACHABLE_HINTS = (
    "unable to connect to server",
    "connection refused",
    "no route to host",
    "cannot recv data",
    "connection reset",
    "end of file while reading data",
    "network is unreachable",
    "timed out",
)


def migration_flags(options: MigrationOptions) -> int:
    """The virDomainMigrateFlags of a migration with ``options``."""
    flags = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE | libvirt.VIR_MIGRATE_ABORT_ON_ERROR
    if options.unsafe:
        flags |= libvirt.VIR_MIGRATE_UNSAFE
    if options.copy_storage:
        flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
    if options.tls:
        flags |= libvirt.VIR_MIGRATE_TLS
    if options.auto_converge:
        flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
    if options.postcopy:
        flags |= libvirt.VIR_MIGRATE_POSTCOPY
    return flags


def migration_params(options: MigrationOptions) -> dict[str, object]:
    """The typed parameters of migrateToURI3 that follow from ``options`` alone (the relocated
    definitions of a copy-storage migration to other paths are added by the caller)."""
    params: dict[str, object] = {}
    if options.dest_address:
        addr = options.dest_address
        params[libvirt.VIR_MIGRATE_PARAM_URI] = addr if "://" in addr else f"tcp://{addr}"
    if options.bandwidth_mibps:
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(options.bandwidth_mibps)
    if options.copy_storage and options.copy_disks is not None:
        params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = list(options.copy_disks)
    return params


def job_running(stats: Mapping[str, Any]) -> bool:
    """Whether libvirt's job statistics describe a job that runs (bounded or not)."""
    return stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) in (libvirt.VIR_DOMAIN_JOB_BOUNDED, libvirt.VIR_DOMAIN_JOB_UNBOUNDED)


def relocate_disks(xml: str, paths: Mapping[str, str]) -> str:
    """A domain definition with the source of each disk in ``paths`` (target dev -> new file)
    replaced: where the disks of a copy-storage migration land on the target. A disk in
    ``paths`` that is not a file cannot move (MIGRATION_FAILED); one the domain lacks is
    DISK_NOT_FOUND."""
    root = ET.fromstring(xml)
    found = set()
    for disk in root.findall("devices/disk"):
        target, src = disk.find("target"), disk.find("source")
        dev = target.get("dev") if target is not None else None
        if dev in paths:
            if src is None or disk.get("type") != "file":
                raise DriverError("MIGRATION_FAILED", f"disk {dev} is not a file: it cannot be relocated")
            src.set("file", paths[dev])
            found.add(dev)
    missing = set(paths) - found
    if missing:
        raise DriverError("DISK_NOT_FOUND", f"the domain has no disk {', '.join(sorted(missing))}")
    return ET.tostring(root, encoding="unicode")


def copied_disk_dirs(xml: str, copy_disks: Collection[str] | None, dest_disk_paths: Mapping[str, str] | None) -> set[str]:
    """The directories on the target that a copy-storage migration writes disk images into:
    of each file disk copied (all when ``copy_disks`` is None), the directory of its new path
    when it moves (``dest_disk_paths``), else of its path here."""
    dirs = set()
    for disk in ET.fromstring(xml).findall("devices/disk[@device='disk']"):
        target = disk.find("target")
        src = disk.find("source")
        if target is None or src is None or src.get("file") is None:
            continue
        if copy_disks is not None and target.get("dev") not in copy_disks:
            continue
        dest = (dest_disk_paths or {}).get(target.get("dev")) or src.get("file")
        dirs.add(os.path.dirname(dest))
    return dirs


def failure_code(message: str, libvirt_code: int | None) -> str:
    """The DriverError code of a failed migration (not cancelled) from libvirt's message and
    error code: HOST_UNREACHABLE when the message says the target could not be reached (and
    is not about the migration itself), VM_NOT_RUNNING, else MIGRATION_FAILED."""
    low = message.lower()
    if any(h in low for h in _UNREACHABLE_HINTS) and "migration" not in low.split(":")[0]:
        return "HOST_UNREACHABLE"
    if libvirt_code == libvirt.VIR_ERR_OPERATION_INVALID and "not running" in low:
        return "VM_NOT_RUNNING"
    return "MIGRATION_FAILED"


def _ms(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


def progress_from_stats(stats: dict, postcopy: bool, completed: bool = False) -> MigrationProgress:
    """A MigrationProgress of libvirt's job stats (virDomainGetJobStats typed parameters)."""
    kind = stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE)
    if completed or kind == libvirt.VIR_DOMAIN_JOB_COMPLETED:
        phase = "completed"
    elif kind == libvirt.VIR_DOMAIN_JOB_FAILED:
        phase = "failed"
    elif kind == libvirt.VIR_DOMAIN_JOB_CANCELLED:
        phase = "cancelled"
    elif postcopy:
        phase = "postcopy"
    elif stats.get("memory_iteration", 0) or stats.get("data_processed", 0):
        phase = "precopy"
    else:
        phase = "setup"
    page = stats.get("memory_page_size", 4096)
    constant = stats.get("memory_constant")
    return MigrationProgress(
        phase=phase,
        data_total=stats.get("data_total"),
        data_processed=stats.get("data_processed"),
        data_remaining=stats.get("data_remaining"),
        memory_total=stats.get("memory_total"),
        memory_processed=stats.get("memory_processed"),
        memory_remaining=stats.get("memory_remaining"),
        memory_zero_bytes=None if constant is None else constant * page,
        memory_bps=stats.get("memory_bps"),
        disk_total=stats.get("disk_total"),
        disk_processed=stats.get("disk_processed"),
        disk_remaining=stats.get("disk_remaining"),
        dirty_rate=stats.get("memory_dirty_rate"),
        iteration=stats.get("memory_iteration"),
        elapsed_ms=_ms(stats.get("time_elapsed")),
        downtime_ms=_ms(stats.get("downtime")),
        setup_time_ms=_ms(stats.get("setup_time")),
    )


class MigrationOps:
    """Mixin of LibvirtDriver: needs ``_c``, ``_err``, ``is_alive`` (host.py), ``_lookup``,
    ``_get``, ``undefine``, ``domain_state`` (guest.py), ``_pool_target``, ``_disks_of``
    (storage.py), ``_block_progress`` (storagemove.py), ``uri``, ``connect_timeout`` and
    ``domain_type``."""

    _POLL = 0.3  # seconds between looks at a running job

    def _open_peer(self, uri: str) -> Peer:
        """A connection of our own to another host (the migration target), bounded in time."""
        peer = type(self)(uri, connect_timeout=self.connect_timeout, domain_type=self.domain_type)
        try:
            peer.connect()
        except ConnectionLost as e:
            raise DriverError("HOST_UNREACHABLE", f"migration target {uri}: {e.message}") from None
        return peer

    def domain_state_on(self, uri: str, uuid: str) -> DomainState | None:
        """The domain's state on another host (None when not defined there); HOST_UNREACHABLE
        when that host does not answer."""
        peer = self._open_peer(uri)
        try:
            return peer.domain_state(uuid)
        finally:
            peer.close()

    def migrate(self, uuid: str, options: MigrationOptions, on_progress: Callable[[MigrationProgress], None] | None = None, cancel: threading.Event | None = None) -> MigrationProgress:
        """Live-migrate a running domain to ``options.dest_uri``, peer to peer, persistent there
        and undefined here; returns the completed job's stats (downtime, total time).

        Blocks until done, calling ``on_progress`` about every 0.3 s with libvirt's job stats.
        ``cancel`` set: the job is aborted, the domain is made sure to run here, and
        DriverError('MIGRATION_CANCELLED') is raised (a cancel that comes after libvirt finished
        is too late: the result is then success). Idempotent for a redelivered command: a
        domain absent here and running on the target is success with ``already_done``; a
        definition left here while the target runs it is undefined (what UNDEFINE_SOURCE
        would have done); a migration of this domain already in progress (started by an
        earlier delivery; libvirtd drives peer-to-peer migrations itself) is followed, not
        started again.

        Codes: VM_NOT_FOUND, VM_NOT_RUNNING, HOST_UNREACHABLE (the target, from here or from
        the source daemon), MIGRATION_CANCELLED, MIGRATION_FAILED (libvirt's message),
        HYPERVISOR_UNREACHABLE (this host)."""
        uuid = validate_uuid(uuid)
        cancel = cancel or threading.Event()
        peer = self._open_peer(options.dest_uri)
        try:
            followed = False
            while True:
                done = self._migration_already_done(uuid, peer)
                if done is not None:
                    if on_progress:
                        self._safe_progress(on_progress, done)
                    return done
                dom = self._get(uuid)
                if not followed and self._active_job_operation(dom) == libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT:
                    followed = True
                    log.info("migration of %s already in progress: following it", uuid)
                    self._follow_job(dom, on_progress, cancel)
                    continue  # re-evaluate where the domain is now
                return self._migrate_once(dom, uuid, options, peer, on_progress, cancel)
        finally:
            peer.close()

    def _migration_already_done(self, uuid: str, peer: Peer) -> MigrationProgress | None:
        """Success without migrating when the target already runs the domain; raises
        VM_NOT_FOUND / VM_NOT_RUNNING when there is nothing to migrate; None: go ahead."""
        dom = self._lookup(uuid)
        remote = peer._lookup(uuid)
        try:
            remote_running = False
            if remote is not None and remote.isActive():
                # An incoming migration's domain is paused (migration) until it completes.
                st, reason = remote.state()
                remote_running = not (st == libvirt.VIR_DOMAIN_PAUSED and reason == libvirt.VIR_DOMAIN_PAUSED_MIGRATION)
            local_active = dom is not None and dom.isActive()
        except libvirt.libvirtError as e:
            raise self._err(e) from None
        if local_active:
            return None
        if remote_running:
            if dom is not None:
                # Migrated, but the source definition outlived UNDEFINE_SOURCE (an interrupted
                # confirm phase): finish its job. Disks are never touched.
                log.warning("domain %s runs on %s and is still defined here: undefining it", uuid, peer.uri)
                self.undefine(uuid, [])
            progress = self._completed_from(remote) or MigrationProgress(phase="completed")
            return progress.model_copy(update={"already_done": True})
        if dom is None:
            raise DriverError("VM_NOT_FOUND", f"no domain with UUID {uuid} here or on {peer.uri}")
        raise DriverError("VM_NOT_RUNNING", f"domain {uuid} is not running: live migration needs a running VM")

    @staticmethod
    def _active_job_operation(dom: libvirt.virDomain) -> int | None:
        try:
            stats = dom.jobStats(0)
        except libvirt.libvirtError:
            return None
        if job_running(stats):
            return stats.get("operation", libvirt.VIR_DOMAIN_JOB_OPERATION_UNKNOWN)
        return None

    @staticmethod
    def _safe_progress(cb: Callable[[MigrationProgress], None], p: MigrationProgress) -> None:
        try:
            cb(p)
        except Exception:  # a subscriber's bug never breaks the job
            log.exception("progress callback failed")

    def _follow_job(self, dom: libvirt.virDomain, on_progress, cancel: threading.Event) -> None:
        aborted = False
        while self._active_job_operation(dom) is not None:
            if cancel.is_set() and not aborted:
                aborted = True
                try:
                    dom.abortJob()
                except libvirt.libvirtError as e:
                    log.warning("abortJob of followed job: %s", e.get_error_message())
            p = self.job_progress(dom.UUIDString())
            if p is not None and on_progress:
                self._safe_progress(on_progress, p)
            time.sleep(self._POLL)
        if aborted:
            self._ensure_running_here(dom)
            raise DriverError("MIGRATION_CANCELLED", "migration cancelled; the VM runs on the source")

    def _migrate_once(self, dom: libvirt.virDomain, uuid: str, options: MigrationOptions, peer: Peer, on_progress, cancel: threading.Event) -> MigrationProgress:
        flags = migration_flags(options)
        params = migration_params(options)
        if options.copy_storage and options.dest_disk_paths:
            params[libvirt.VIR_MIGRATE_PARAM_DEST_XML], params[libvirt.VIR_MIGRATE_PARAM_PERSIST_XML] = self._relocated_xmls(dom, options.dest_disk_paths)
        downtime_pending = False
        if options.max_downtime_ms:
            try:
                dom.migrateSetMaxDowntime(int(options.max_downtime_ms), 0)
            except libvirt.libvirtError as e:
                if not self.is_alive():
                    raise self._err(e) from None
                downtime_pending = True  # older daemons: only while the job runs
        temp_pools = self._precreate_pools(dom, peer, options) if options.copy_storage else []

        completed: dict[str, object] = {}
        completed_evt = threading.Event()

        def on_job_completed(_conn, _dom, stats, _opaque) -> None:
            completed.update(stats)
            completed_evt.set()

        event_id = None
        try:
            event_id = self._c().domainEventRegisterAny(dom, libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, on_job_completed, None)
        except libvirt.libvirtError as e:
            log.warning("no job-completed events on %s: %s", self.uri, e.get_error_message())

        outcome: dict[str, object] = {}

        def run() -> None:
            try:
                dom.migrateToURI3(options.dest_uri, params, flags)
            except libvirt.libvirtError as e:
                outcome["error"] = e
            except Exception as e:  # noqa: BLE001 - reported below
                outcome["error"] = e

        worker = threading.Thread(target=run, name=f"migrate-{uuid[:8]}", daemon=True)
        t0 = time.monotonic()
        worker.start()
        aborted = False
        postcopy_started = False
        try:
            while worker.is_alive():
                worker.join(self._POLL)
                if not worker.is_alive():
                    break
                if cancel.is_set() and not aborted:
                    aborted = True
                    try:
                        dom.abortJob()
                    except libvirt.libvirtError as e:
                        # Too late (finished meanwhile) or post-copy (cannot be aborted).
                        log.warning("abortJob of %s: %s", uuid, e.get_error_message())
                    continue
                try:
                    stats = dom.jobStats(0)
                except libvirt.libvirtError:
                    continue  # the domain vanished at the very end, or a transient error
                if not job_running(stats):
                    continue  # not started yet, or ended (an aborted job reads all zeros)
                if downtime_pending:
                    try:
                        dom.migrateSetMaxDowntime(int(options.max_downtime_ms or 0), 0)
                        downtime_pending = False
                    except libvirt.libvirtError:
                        pass
                if options.postcopy and not postcopy_started and not aborted and stats.get("memory_iteration", 0) >= options.postcopy_after_iterations:
                    try:
                        dom.migrateStartPostCopy(0)
                        postcopy_started = True
                        log.info("migration of %s switched to post-copy", uuid)
                    except libvirt.libvirtError as e:
                        log.warning("post-copy switch of %s refused: %s", uuid, e.get_error_message())
                        postcopy_started = True  # do not retry every poll
                if on_progress:
                    self._safe_progress(on_progress, progress_from_stats(stats, postcopy_started))
        finally:
            if event_id is not None:
                try:
                    # Give the event a moment: it is sent before the API call returns, but
                    # delivered by the event loop thread.
                    if "error" not in outcome and not worker.is_alive():
                        completed_evt.wait(0.25)
                    self._c().domainEventDeregisterAny(event_id)
                except (libvirt.libvirtError, ConnectionLost):
                    pass
            for pool in temp_pools:
                try:
                    pool.destroy()
                except libvirt.libvirtError:
                    pass
        elapsed_ms = int((time.monotonic() - t0) * 1000)

        err = outcome.get("error")
        if err is not None:
            return self._migration_failed(dom, uuid, peer, err, aborted or cancel.is_set())
        result = None
        log.debug("migration of %s: job-completed event %s; libvirt call %.2fs", uuid, "received" if completed else "missing", time.monotonic() - t0)
        if completed:
            result = progress_from_stats(completed, postcopy_started, completed=True)
        if result is None or result.downtime_ms is None:
            remote = peer._lookup(uuid)
            result = (self._completed_from(remote) if remote is not None else None) or result
        if result is None:
            result = MigrationProgress(phase="completed", elapsed_ms=elapsed_ms)
        if on_progress:
            self._safe_progress(on_progress, result)
        return result

    def _relocated_xmls(self, dom: libvirt.virDomain, paths: dict[str, str]) -> tuple[str, str]:
        """The destination (live) and persistent XML of a copy-storage migration whose copied
        disks land on other paths on the target (``relocate_disks`` of both definitions)."""
        try:
            live = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_MIGRATABLE)
            persistent = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_MIGRATABLE | libvirt.VIR_DOMAIN_XML_INACTIVE)
        except libvirt.libvirtError as e:
            raise self._err(e) from None
        return relocate_disks(live, paths), relocate_disks(persistent, paths)

    def _precreate_pools(self, dom: libvirt.virDomain, peer: Peer, options: MigrationOptions) -> list[libvirt.virStoragePool]:
        """Copy-storage migration: libvirt on the target creates a missing disk image only when
        an active storage pool covers its directory. For each copied disk's directory without
        one, start a transient dir pool there (destroyed after the migration; files stay)."""
        try:
            live = dom.XMLDesc(0)
        except libvirt.libvirtError as e:
            raise self._err(e) from None
        dirs = copied_disk_dirs(live, options.copy_disks, options.dest_disk_paths)
        created = []
        try:
            pools = peer._c().listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
            covered = {os.path.normpath(self._pool_target(p) or "") for p in pools}
            for d in sorted(dirs - covered):
                try:
                    created.append(peer._c().storagePoolCreateXML(dir_pool_xml(f"vc-migrate-{uuidlib.uuid4().hex[:12]}", d), 0))
                except libvirt.libvirtError as e:
                    # No such directory there: the migration will say so with libvirt's words.
                    log.warning("no transient pool on %s for %s: %s", peer.uri, d, e.get_error_message())
        except libvirt.libvirtError as e:
            raise peer._err(e) from None
        return created

    def _ensure_running_here(self, dom: libvirt.virDomain, timeout: float = 15) -> None:
        """After an aborted or failed migration: the domain must run here (libvirt resumes a
        source it paused; we resume it if it stays paused by the migration)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if not dom.isActive():
                    return  # gone: the caller decides what that means
                state, reason = dom.state()
                if state == libvirt.VIR_DOMAIN_RUNNING:
                    return
                if state == libvirt.VIR_DOMAIN_PAUSED and self._active_job_operation(dom) is None and reason in (libvirt.VIR_DOMAIN_PAUSED_MIGRATION, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED):
                    dom.resume()
            except libvirt.libvirtError as e:
                if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return
                if time.monotonic() > deadline:
                    raise self._err(e) from None
            if time.monotonic() > deadline:
                raise DriverError("MIGRATION_FAILED", "the VM did not resume on the source after the migration ended")
            time.sleep(0.1)

    def _migration_failed(self, dom: libvirt.virDomain, uuid: str, peer: Peer, err: object, cancelled: bool) -> MigrationProgress:
        if isinstance(err, libvirt.libvirtError) and not self.is_alive():
            raise self._err(err)
        msg = err.get_error_message() if isinstance(err, libvirt.libvirtError) else str(err)
        msg = msg or str(err)
        # Where is the VM now? Exactly one host must run it.
        local = self._lookup(uuid)
        try:
            remote = peer._lookup(uuid)
            remote_running = remote is not None and remote.isActive() and remote.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        except (libvirt.libvirtError, DriverError):
            remote, remote_running = None, False
        local_active = False
        try:
            local_active = local is not None and local.isActive()
        except libvirt.libvirtError:
            pass
        if not local_active and remote_running:
            # libvirt finished the move and failed afterwards (e.g. the confirm phase): the VM
            # is on the target, which is what was asked.
            log.warning("migration of %s reported %r but the VM runs on the target", uuid, msg)
            if local is not None:
                self.undefine(uuid, [])
            return self._completed_from(remote) or MigrationProgress(phase="completed")
        if local is not None and local_active:
            self._ensure_running_here(local)
        if cancelled:
            raise DriverError("MIGRATION_CANCELLED", f"migration cancelled; the VM runs on the source ({msg})")
        code = failure_code(msg, err.get_error_code() if isinstance(err, libvirt.libvirtError) else None)
        if code == "HOST_UNREACHABLE":
            raise DriverError(code, f"migration target {peer.uri}: {msg}")
        raise DriverError(code, msg)

    def _completed_from(self, dom: libvirt.virDomain | None) -> MigrationProgress | None:
        """Completed-job stats kept by libvirt for ``dom`` (a migrated domain on the target
        keeps them), or None."""
        if dom is None:
            return None
        try:
            stats = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        except libvirt.libvirtError:
            return None
        if stats.get("type") != libvirt.VIR_DOMAIN_JOB_COMPLETED:
            return None
        return progress_from_stats(stats, False, completed=True)

    def job_progress(self, uuid: str) -> MigrationProgress | None:
        """The domain's running job (migration, ...) or, failing that, the first running block
        copy of its disks; None when nothing runs."""
        dom = self._get(uuid)
        try:
            stats = dom.jobStats(0)
        except libvirt.libvirtError as e:
            raise self._err(e) from None
        if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) not in (libvirt.VIR_DOMAIN_JOB_NONE, libvirt.VIR_DOMAIN_JOB_COMPLETED):
            postcopy = False
            try:
                postcopy = dom.state()[1] == libvirt.VIR_DOMAIN_RUNNING_POSTCOPY
            except libvirt.libvirtError:
                pass
            return progress_from_stats(stats, postcopy)
        for target, _src, mirror in self._disks_of(dom):
            if mirror is not None:
                p = self._block_progress(dom, target, mirror.get("ready") == "yes")
                if p is not None:
                    return p
        return None

    def abort_job(self, uuid: str) -> bool:
        """Abort the domain's running job (a migration goes on running here), else every block
        copy of its disks without pivot (the disks stay where they were). True when something
        was aborted; idempotent."""
        dom = self._get(uuid)
        if self._active_job_operation(dom) is not None:
            try:
                dom.abortJob()
                return True
            except libvirt.libvirtError as e:
                if e.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:  # no job (finished)
                    raise self._err(e) from None
        aborted = False
        for target, _src, mirror in self._disks_of(dom):
            if mirror is None:
                continue
            try:
                dom.blockJobAbort(target, 0)
                aborted = True
            except libvirt.libvirtError as e:
                if e.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
                    raise self._err(e) from None
        return aborted
