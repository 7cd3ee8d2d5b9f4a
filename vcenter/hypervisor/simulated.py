"""An in-memory HypervisorDriver for demos and scale runs (thousands of VMs, no QEMU).

What this module decides: the same power-state rules and idempotency as the libvirt driver
(define of a known UUID returns it, start of a running / stop of a stopped domain is a no-op,
undefine of a missing one is a no-op), and the same lifecycle events (event, reason,
power_state) that the libvirt driver emits for the same operation. It never stands in for the
real driver in a test that claims a real feature. tests/libvirtd/test_driver_contract.py
runs the same tests against both drivers: where they disagree, this one follows libvirt.

Files, with ``create_files``: disks are real files of their format (raw: a sparse file of the
capacity; qcow2: an empty image as ``qemu-img create`` makes it, see ``qcow2_image``), made under
a temporary name and renamed as the libvirt driver does; undefine deletes them and reports a
file it cannot delete as DISK_DELETE_FAILED.

Knobs for tests and demos: ``set_reachable(False)`` makes every call raise ConnectionLost
until ``connect()`` succeeds again; ``guest_shuts_down`` says whether guests honour a
shutdown request (one that does not makes shutdown wait its timeout out, as libvirt does); ``crash(uuid)`` and ``destroy_externally(uuid)`` imitate a QEMU killed
from outside and ``virsh destroy``; ``existing_bridges`` (None = every bridge exists) drives
PORTGROUP_ABSENT.

VMotion between simulated hosts: every SimulatedDriver registers itself by ``uri`` (default
``sim://<hostname>/system``) in a module-level registry, and ``migrate`` moves the domain to
the driver registered under ``options.dest_uri`` (HOST_UNREACHABLE when there is none or it is
unreachable). ``migration_seconds`` makes a migration or disk move last that long with
progress every 0.1 s (cancel honoured); ``fail_next_migration`` (a message) makes the next
one fail with MIGRATION_FAILED, the VM staying where it was.
"""

from __future__ import annotations

import os
import shutil
import struct
import threading
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from vcenter.domain.states import PowerState, StopReason
from vcenter.hypervisor.base import ConnectionLost, DriverError, LifecycleCallback
from vcenter.hypervisor.libvirt.xml import (
    build_cpu_xml,
    check_bridges,
    compare_feature_sets,
    disk_path,
    disk_target,
    parse_cpu_xml,
    validate_abs_path,
    validate_name,
    validate_spec,
)
from vcenter.messaging.contracts import (
    CpuSpec,
    DiskSpec,
    DomainCounters,
    DomainState,
    HostCounters,
    HostFacts,
    LifecycleEvent,
    MigrationOptions,
    MigrationProgress,
    VmSpec,
)

_ON = PowerState.POWERED_ON.value
_OFF = PowerState.POWERED_OFF.value
_SUSPENDED = PowerState.SUSPENDED.value


# Simulated hosts by URI, for migrate (the last driver created with a URI wins).
_HOSTS: dict[str, "SimulatedDriver"] = {}
_HOSTS_LOCK = threading.Lock()


def simulated_host(uri: str) -> "SimulatedDriver | None":
    with _HOSTS_LOCK:
        return _HOSTS.get(uri)


_DEFAULT_CPU_XML = "<cpu><arch>x86_64</arch><model>qemu64</model></cpu>"

_QCOW2_CLUSTER_BITS = 16


def qcow2_image(capacity_bytes: int) -> bytes:
    """An empty qcow2 (version 3, 64 KiB clusters, 16-bit refcounts) of ``capacity_bytes``,
    laid out as ``qemu-img create -f qcow2`` lays it out: the header, the refcount table, one
    refcount block, then the L1 table (all zero: nothing allocated); the file ends with L1."""
    cluster = 1 << _QCOW2_CLUSTER_BITS
    l1_size = -(-capacity_bytes // (cluster * (cluster // 8)))  # one L2 table maps cluster/8 clusters
    l1_clusters = max(1, -(-l1_size * 8 // cluster))
    refcount_table, refcount_block, l1_table = cluster, 2 * cluster, 3 * cluster
    used_clusters = 3 + l1_clusters
    header = struct.pack(
        ">IIQIIQIIQQIIQQQQII",
        0x514649FB,
        3,  # magic "QFI\xfb", version
        0,
        0,  # no backing file
        _QCOW2_CLUSTER_BITS,
        capacity_bytes,
        0,  # no encryption
        l1_size,
        l1_table,
        refcount_table,
        1,  # refcount table: one cluster
        0,
        0,  # no snapshots
        0,
        0,
        0,  # incompatible, compatible, autoclear features
        4,
        104,
    )  # refcount order (16 bits), header length
    image = bytearray(l1_table + l1_size * 8)
    image[: len(header)] = header  # followed by zeros: the end of header extensions
    struct.pack_into(">Q", image, refcount_table, refcount_block)
    for i in range(used_clusters):
        struct.pack_into(">H", image, refcount_block + 2 * i, 1)
    return bytes(image)


@dataclass
class _Dom:
    spec: VmSpec
    power: str = _OFF
    vcpus: int = 1
    memory_mib: int = 64
    cpu_time_ns: int = 0


class SimulatedDriver:
    def __init__(
        self,
        hostname: str = "sim-host",
        cpu_cores: int = 16,
        memory_mib: int = 65536,
        host_uuid: str | None = None,
        create_files: bool = False,
        existing_bridges: set[str] | None = None,
        guest_shuts_down: bool = True,
        declared_cpu_xml: str | None = None,
        pool_capacity_bytes: int = 1 << 40,
        uri: str | None = None,
        migration_seconds: float = 0.0,
    ):
        self.hostname = hostname
        self.uri = uri or f"sim://{hostname}/system"
        self.migration_seconds = migration_seconds
        self.fail_next_migration: str | None = None
        self._jobs: dict[str, tuple[MigrationProgress, threading.Event]] = {}
        self.cpu_cores = cpu_cores
        self.memory_mib = memory_mib
        self.host_uuid = host_uuid or str(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, hostname))
        # False: disks are bookkeeping only (scale runs must not write thousands of files).
        self.create_files = create_files
        self.existing_bridges = existing_bridges
        self.guest_shuts_down = guest_shuts_down
        # No CPU map here: models compare by name, features only as named in the XML.
        self._cpu_declared = declared_cpu_xml is not None
        self.declared_cpu_xml = declared_cpu_xml or _DEFAULT_CPU_XML
        parse_cpu_xml(self.declared_cpu_xml)
        self.pool_capacity_bytes = pool_capacity_bytes
        self._pools: dict[str, str] = {}
        self._disk_sizes: dict[str, int] = {}
        self._lock = threading.RLock()
        self._doms: dict[str, _Dom] = {}
        self._disks: set[str] = set()
        self._callbacks: list[LifecycleCallback] = []
        self._connected = False
        self._reachable = True
        with _HOSTS_LOCK:
            _HOSTS[self.uri] = self

    # --- connection -----------------------------------------------------------------
    def connect(self) -> None:
        with self._lock:
            if not self._reachable:
                raise ConnectionLost("simulated hypervisor unreachable")
            self._connected = True

    def close(self) -> None:
        with self._lock:
            self._connected = False

    def is_alive(self) -> bool:
        return self._connected and self._reachable

    def set_reachable(self, reachable: bool) -> None:
        with self._lock:
            self._reachable = reachable
            if not reachable:
                self._connected = False

    def _check(self) -> None:
        if not self.is_alive():
            raise ConnectionLost("not connected to the simulated hypervisor")

    # --- events ---------------------------------------------------------------------
    def subscribe_lifecycle(self, callback: LifecycleCallback) -> None:
        with self._lock:
            self._callbacks.append(callback)

    def _emit(self, dom: _Dom, event: str, reason: str, power: str | None) -> None:
        ev = LifecycleEvent(uuid=dom.spec.uuid, name=dom.spec.name, event=event, reason=reason, power_state=power, at=datetime.now(timezone.utc))
        # Called outside the lock so that a subscriber may call back into the driver.
        for cb in list(self._callbacks):
            try:
                cb(ev)
            except Exception:  # a subscriber's bug must not break the driver
                pass

    # --- queries --------------------------------------------------------------------
    def host_facts(self) -> HostFacts:
        self._check()
        cpu = parse_cpu_xml(self.declared_cpu_xml)
        return HostFacts(
            hostname=self.hostname,
            host_uuid=self.host_uuid,
            cpu_model=cpu.model if self._cpu_declared else "simulated",
            cpu_features=sorted(cpu.require - cpu.disable),
            cpu_cores=self.cpu_cores,
            cpu_mhz=2000,
            memory_mib=self.memory_mib,
            cpu_xml=self.declared_cpu_xml,
            hypervisor="simulated",
            libvirt_version=None,
        )

    # --- CPU definitions (no CPU map: a model is its name, features are what the XML names) ---
    def host_cpu_xml(self) -> str:
        self._check()
        return self.declared_cpu_xml

    def compare_cpu(self, cpu_xml: str) -> tuple[bool, str]:
        self._check()
        guest, host = parse_cpu_xml(cpu_xml), parse_cpu_xml(self.declared_cpu_xml)
        if guest.model is not None and guest.model != host.model:
            return False, f"incompatible: host CPU model {host.model} is not {guest.model} (simulated: no CPU map)"
        host_features = host.require - host.disable
        wanted = ((host_features if guest.model is None else set()) | guest.require) - guest.disable
        return compare_feature_sets(wanted, guest.vendor, host_features, host.vendor)

    def cpu_baseline(self, cpu_xmls: list[str], expand_features: bool = False) -> str:
        self._check()
        if not cpu_xmls:
            raise DriverError("INVALID_SPEC", "baseline of no CPUs")
        cpus = [parse_cpu_xml(x) for x in cpu_xmls]
        models = {c.model for c in cpus}
        vendors = {c.vendor for c in cpus if c.vendor}
        if len(vendors) > 1:
            raise DriverError("CPU_INCOMPATIBLE", "CPU vendors do not match")
        features = set.intersection(*[c.require - c.disable for c in cpus])
        return build_cpu_xml(CpuSpec(model=models.pop() if len(models) == 1 else "qemu64", vendor=vendors.pop() if vendors else None, features_require=sorted(features)))

    # --- storage pools --------------------------------------------------------------
    def ensure_pool(self, name: str, path: str) -> None:
        self._check()
        validate_name(name)
        path = os.path.normpath(validate_abs_path(path, "pool path"))
        with self._lock:
            existing = self._pools.get(name)
            if existing is not None and existing != path:
                raise DriverError("POOL_CONFLICT", f"pool {name!r} is defined on {existing}, not {path}")
            other = next((n for n, p in self._pools.items() if p == path and n != name), None)
            if other is not None:
                raise DriverError("POOL_CONFLICT", f"Storage source conflict with pool: {other!r}")
            if self.create_files:
                os.makedirs(path, exist_ok=True)
            self._pools[name] = path

    def pool_usage(self, name: str) -> tuple[int, int]:
        self._check()
        with self._lock:
            path = self._pools.get(name)
            if path is None:
                raise DriverError("DATASTORE_ABSENT", f"no storage pool {name!r}")
            if self.create_files and os.path.isdir(path):
                st = os.statvfs(path)
                return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
            used = sum(size for p, size in self._disk_sizes.items() if os.path.dirname(p) == path)
            return self.pool_capacity_bytes, max(0, self.pool_capacity_bytes - used)

    def remove_pool(self, name: str) -> None:
        self._check()
        with self._lock:
            self._pools.pop(name, None)

    @staticmethod
    def _state(d: _Dom) -> DomainState:
        return DomainState(uuid=d.spec.uuid, name=d.spec.name, power_state=d.power, vcpus=d.vcpus, memory_mib=d.memory_mib, cpu_time_ns=d.cpu_time_ns)

    def host_counters(self) -> HostCounters:
        """Simulated counters: a running domain's resident memory is half its memory, its CPU
        time advances as the simulation sets it; the host's CPU is idle."""
        self._check()
        with self._lock:
            domains = [DomainCounters(uuid=d.spec.uuid, vcpus=d.vcpus, memory_mib=d.memory_mib, cpu_time_ns=d.cpu_time_ns, rss_kib=d.memory_mib * 512) for d in self._doms.values() if d.power == _ON]
        used = sum(d.memory_mib for d in domains)
        now_ns = time.monotonic_ns()
        return HostCounters(
            cpus=self.cpu_cores,
            cpu_mhz=2000,
            cpu_busy_ns=0,
            cpu_total_ns=now_ns * self.cpu_cores,
            memory_total_kib=self.memory_mib * 1024,
            memory_available_kib=max(0, self.memory_mib - used) * 1024,
            domains=domains,
        )

    def list_domains(self) -> list[DomainState]:
        self._check()
        with self._lock:
            return [self._state(d) for d in self._doms.values()]

    def domain_state(self, uuid: str) -> DomainState | None:
        self._check()
        with self._lock:
            d = self._doms.get(_norm(uuid))
            return None if d is None else self._state(d)

    def _get(self, uuid: str) -> _Dom:
        d = self._doms.get(_norm(uuid))
        if d is None:
            raise DriverError("VM_NOT_FOUND", f"no domain with UUID {uuid}")
        return d

    # --- disks ----------------------------------------------------------------------
    def create_disks(self, spec: VmSpec) -> list[str]:
        self._check()
        paths = []
        for disk in spec.disks:
            path = disk_path(disk.datastore_path, disk.file)
            paths.append(path)
            if self.create_files and not os.path.exists(path):
                if not os.path.isdir(disk.datastore_path):
                    raise DriverError("DATASTORE_ABSENT", f"datastore directory {disk.datastore_path} does not exist")
                _write_disk(path, disk.format, disk.capacity_mib * 1024 * 1024)
            with self._lock:
                self._disks.add(path)
                self._disk_sizes[path] = disk.capacity_mib * 1024 * 1024
        return paths

    # --- lifecycle ------------------------------------------------------------------
    def define(self, spec: VmSpec) -> DomainState:
        self._check()
        validate_spec(spec)
        key = _norm(spec.uuid)
        with self._lock:
            d = self._doms.get(key)
            if d is not None:
                if d.spec.name != spec.name:
                    raise DriverError("VM_UUID_CONFLICT", f"UUID {spec.uuid} is already defined as {d.spec.name!r}")
                return self._state(d)
            if any(o.spec.name == spec.name for o in self._doms.values()):
                raise DriverError("VM_NAME_CONFLICT", f"a domain named {spec.name!r} exists")
            check_bridges(spec, exists=self._bridge_exists)
            if self._cpu_declared and spec.cpu is not None and spec.cpu.model is not None:
                ok, detail = self.compare_cpu(build_cpu_xml(spec.cpu))
                if not ok:
                    raise DriverError("CPU_INCOMPATIBLE", f"declared host CPU: {detail}")
            d = _Dom(spec=spec.model_copy(update={"uuid": key}), vcpus=spec.vcpus, memory_mib=spec.memory_mib)
            self._doms[key] = d
            state = self._state(d)
        self._emit(d, "defined", "added", None)
        return state

    def _bridge_exists(self, bridge: str) -> bool:
        return self.existing_bridges is None or bridge in self.existing_bridges

    def _transition(self, uuid: str, allowed_from: set[str], to: str, event: str, reason: str, noop_in: set[str], error: str) -> DomainState:
        """Move ``uuid`` to ``to``; a no-op in ``noop_in``; DriverError(error) otherwise."""
        self._check()
        with self._lock:
            d = self._get(uuid)
            if d.power in noop_in:
                return self._state(d)
            if d.power not in allowed_from:
                raise DriverError(error, f"domain {uuid} is {d.power}")
            d.power = to
            state = self._state(d)
        self._emit(d, event, reason, to)
        return state

    def start(self, uuid: str) -> DomainState:
        return self._transition(uuid, {_OFF, _SUSPENDED}, _ON, "started", "started", {_ON}, "LIBVIRT_ERROR")

    def stop(self, uuid: str) -> DomainState:
        self._check()
        with self._lock:
            d = self._get(uuid)
            if d.power == _SUSPENDED:  # discard the saved memory, as managedSaveRemove does
                d.power = _OFF
                return self._state(d)
        return self._transition(uuid, {_ON}, _OFF, "stopped", StopReason.DESTROYED.value, {_OFF}, "LIBVIRT_ERROR")

    def shutdown(self, uuid: str, timeout: float) -> DomainState:
        self._check()
        with self._lock:
            d = self._get(uuid)
            if d.power != _ON:
                return self._state(d)
        if not self.guest_shuts_down:
            # The guest ignores the request (as a firmware-only one does): wait as long as the
            # libvirt driver does; something else may have powered it off meanwhile.
            time.sleep(timeout)
            with self._lock:
                d = self._get(uuid)
                if d.power != _ON:
                    return self._state(d)
            raise DriverError("GUEST_SHUTDOWN_TIMEOUT", f"guest of {uuid} still running after {timeout:g}s")
        return self._transition(uuid, {_ON}, _OFF, "stopped", StopReason.SHUTDOWN.value, {_OFF}, "LIBVIRT_ERROR")

    def reset(self, uuid: str) -> DomainState:
        self._check()
        with self._lock:
            d = self._get(uuid)
            if d.power != _ON:
                raise DriverError("VM_POWERED_OFF", f"domain {uuid} is not running")
            return self._state(d)

    def suspend(self, uuid: str) -> DomainState:
        return self._transition(uuid, {_ON}, _SUSPENDED, "stopped", StopReason.SAVED.value, {_SUSPENDED}, "VM_POWERED_OFF")

    def resume(self, uuid: str) -> DomainState:
        return self._transition(uuid, {_SUSPENDED}, _ON, "started", "started", {_ON}, "VM_POWERED_OFF")

    def reconfigure(self, uuid: str, vcpus: int | None, memory_mib: int | None) -> DomainState:
        self._check()
        with self._lock:
            d = self._get(uuid)
            if d.power == _ON:
                raise DriverError("VM_POWERED_ON", f"domain {uuid} is running")
            if d.power == _SUSPENDED:
                raise DriverError("VM_SUSPENDED", f"domain {uuid} is suspended")
            if vcpus is not None:
                if not 1 <= vcpus <= 256:
                    raise DriverError("INVALID_SPEC", f"vcpus {vcpus} out of range 1..256")
                d.vcpus = vcpus
            if memory_mib is not None:
                if not 16 <= memory_mib <= 1024 * 1024:
                    raise DriverError("INVALID_SPEC", f"memory {memory_mib} MiB out of range")
                d.memory_mib = memory_mib
            return self._state(d)

    def undefine(self, uuid: str, delete_disks: list[str]) -> None:
        self._check()
        paths = [validate_abs_path(p, "disk path") for p in delete_disks]
        key = _norm(uuid)
        with self._lock:
            d = self._doms.pop(key, None)
            for p in paths:
                self._disks.discard(p)
                self._disk_sizes.pop(p, None)
        if d is not None:
            if d.power == _ON:
                self._emit(d, "stopped", StopReason.DESTROYED.value, _OFF)
            self._emit(d, "undefined", "removed", None)
        if self.create_files:
            for p in paths:
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    raise DriverError("DISK_DELETE_FAILED", f"{p}: {e}") from None

    # --- VMotion and Storage VMotion ------------------------------------------------------
    def _peer(self, uri: str) -> "SimulatedDriver":
        peer = simulated_host(uri)
        if peer is None or not peer._reachable:
            raise DriverError("HOST_UNREACHABLE", f"migration target {uri} does not answer")
        return peer

    def domain_state_on(self, uri: str, uuid: str) -> DomainState | None:
        self._check()
        peer = self._peer(uri)
        with peer._lock:
            d = peer._doms.get(_norm(uuid))
            return None if d is None else peer._state(d)

    def _run_job(self, key: str, total: int, kind: str, on_progress: Callable[[MigrationProgress], None] | None, cancel: threading.Event | None) -> MigrationProgress:
        """A job of ``migration_seconds`` with progress every 0.1 s; raises MIGRATION_CANCELLED."""
        cancel = cancel or threading.Event()
        steps = max(1, int(self.migration_seconds / 0.1)) if self.migration_seconds > 0 else 1
        t0 = time.monotonic()
        p = MigrationProgress(phase="setup", data_total=total, data_processed=0, data_remaining=total)
        self._jobs[key] = (p, cancel)
        try:
            for i in range(1, steps + 1):
                if self.migration_seconds > 0:
                    cancel.wait(self.migration_seconds / steps)
                if cancel.is_set():
                    raise DriverError("MIGRATION_CANCELLED", f"{kind} cancelled; the VM stays where it was")
                done = total * i // steps
                fields = dict(data_total=total, data_processed=done, data_remaining=total - done, elapsed_ms=int((time.monotonic() - t0) * 1000))
                if kind == "migration":
                    fields.update(memory_total=total, memory_processed=done, memory_remaining=total - done, iteration=1, dirty_rate=0, phase="precopy")
                else:
                    fields.update(disk_total=total, disk_processed=done, disk_remaining=total - done, phase="ready" if i == steps else "copying")
                p = MigrationProgress(**fields)
                self._jobs[key] = (p, cancel)
                if on_progress and i < steps:
                    try:
                        on_progress(p)
                    except Exception:
                        pass
        finally:
            self._jobs.pop(key, None)
        return p

    def migrate(self, uuid: str, options: MigrationOptions, on_progress: Callable[[MigrationProgress], None] | None = None, cancel: threading.Event | None = None) -> MigrationProgress:
        self._check()
        key = _norm(uuid)
        peer = self._peer(options.dest_uri)
        if peer is self:
            raise DriverError("MIGRATION_FAILED", "the target is this host")
        with self._lock:
            d = self._doms.get(key)
        with peer._lock:
            remote = peer._doms.get(key)
            remote_on = remote is not None and remote.power == _ON
        if d is None or d.power != _ON:
            if remote_on:
                if d is not None:  # the source definition outlived the move
                    with self._lock:
                        self._doms.pop(key, None)
                    self._emit(d, "undefined", "removed", None)
                return MigrationProgress(phase="completed", already_done=True)
            if d is None:
                raise DriverError("VM_NOT_FOUND", f"no domain with UUID {uuid} here or on {options.dest_uri}")
            raise DriverError("VM_NOT_RUNNING", f"domain {uuid} is not running: live migration needs a running VM")
        with peer._lock:
            if remote is not None or any(o.spec.name == d.spec.name for o in peer._doms.values()):
                raise DriverError("MIGRATION_FAILED", f"domain {d.spec.name!r} already exists on {options.dest_uri}")
        for n in d.spec.nics:
            if not peer._bridge_exists(n.bridge):
                raise DriverError("MIGRATION_FAILED", f"Cannot get interface MTU on '{n.bridge}': No such device")
        total = d.memory_mib << 20
        t0 = time.monotonic()
        last = self._run_job(key, total, "migration", on_progress, cancel)
        if self.fail_next_migration is not None:
            msg, self.fail_next_migration = self.fail_next_migration, None
            raise DriverError("MIGRATION_FAILED", msg)
        with self._lock:
            self._doms.pop(key, None)
        moved = _Dom(spec=d.spec, power=_ON, vcpus=d.vcpus, memory_mib=d.memory_mib, cpu_time_ns=d.cpu_time_ns)
        with peer._lock:
            peer._doms[key] = moved
            for disk in d.spec.disks:
                p = disk_path(disk.datastore_path, disk.file)
                peer._disks.add(p)
                peer._disk_sizes[p] = self._disk_sizes.get(p, disk.capacity_mib << 20)
        self._emit(d, "stopped", StopReason.MIGRATED.value, _OFF)
        self._emit(d, "undefined", "removed", None)
        peer._emit(moved, "defined", "added", None)
        peer._emit(moved, "started", "started", _ON)
        result = last.model_copy(
            update={
                "phase": "completed",
                "data_processed": total,
                "data_remaining": 0,
                "memory_processed": total,
                "memory_remaining": 0,
                "elapsed_ms": int((time.monotonic() - t0) * 1000),
                "downtime_ms": 20,
                "setup_time_ms": 1,
            }
        )
        if on_progress:
            try:
                on_progress(result)
            except Exception:
                pass
        return result

    def job_progress(self, uuid: str) -> MigrationProgress | None:
        self._check()
        with self._lock:
            job = self._jobs.get(self._get(uuid).spec.uuid)  # VM_NOT_FOUND as libvirt
        return None if job is None else job[0]

    def abort_job(self, uuid: str) -> bool:
        self._check()
        with self._lock:
            job = self._jobs.get(self._get(uuid).spec.uuid)
        if job is None:
            return False
        job[1].set()
        return True

    def _find_disk(self, d: _Dom, target: str) -> DiskSpec:
        for disk in d.spec.disks:
            if disk_target(disk.bus, disk.index) == target:
                return disk
        raise DriverError("DISK_NOT_FOUND", f"domain {d.spec.uuid} has no disk {target}")

    def _repoint_disk(self, d: _Dom, disk: DiskSpec, dest_path: str, dest_format: str) -> None:
        old = disk_path(disk.datastore_path, disk.file)
        new = disk.model_copy(update={"datastore_path": os.path.dirname(dest_path), "file": os.path.basename(dest_path), "format": dest_format})
        if self.create_files and os.path.exists(old) and not os.path.exists(dest_path):
            shutil.copyfile(old, dest_path)
        with self._lock:
            d.spec = d.spec.model_copy(update={"disks": [new if x is disk else x for x in d.spec.disks]})
            self._disks.add(dest_path)  # the old file stays: the caller removes it
            self._disk_sizes[dest_path] = self._disk_sizes.get(old, disk.capacity_mib << 20)

    def move_disk(
        self,
        uuid: str,
        disk_target: str,
        dest_path: str,
        dest_format: str,
        on_progress: Callable[[MigrationProgress], None] | None = None,
        cancel: threading.Event | None = None,
        *,
        shallow: bool = False,
        bandwidth_mibps: int | None = None,
        reuse_existing: bool | None = None,
    ) -> None:
        self._check()
        validate_abs_path(dest_path, "destination path")
        if dest_format not in ("qcow2", "raw"):
            raise DriverError("INVALID_SPEC", f"disk format {dest_format!r} must be qcow2 or raw")
        with self._lock:
            d = self._get(uuid)
            if d.power != _ON:
                raise DriverError("VM_NOT_RUNNING", f"domain {uuid} is not running: use move_disk_offline")
            disk = self._find_disk(d, disk_target)
        if disk_path(disk.datastore_path, disk.file) == dest_path:
            return
        total = disk.capacity_mib << 20
        last = self._run_job(_norm(uuid), total, "disk move", on_progress, cancel)
        self._repoint_disk(d, disk, dest_path, dest_format)
        if on_progress:
            try:
                on_progress(last.model_copy(update={"phase": "completed"}))
            except Exception:
                pass

    def move_disk_offline(self, uuid: str, disk_target: str, dest_path: str, dest_format: str) -> None:
        self._check()
        validate_abs_path(dest_path, "destination path")
        if dest_format not in ("qcow2", "raw"):
            raise DriverError("INVALID_SPEC", f"disk format {dest_format!r} must be qcow2 or raw")
        with self._lock:
            d = self._get(uuid)
            if d.power == _ON:
                raise DriverError("VM_POWERED_ON", f"domain {uuid} is running: use move_disk")
            if d.power == _SUSPENDED:
                raise DriverError("VM_SUSPENDED", f"domain {uuid} is suspended")
            disk = self._find_disk(d, disk_target)
        if disk_path(disk.datastore_path, disk.file) == dest_path:
            return
        self._repoint_disk(d, disk, dest_path, dest_format)

    # --- fault injection ------------------------------------------------------------
    def crash(self, uuid: str) -> None:
        """QEMU died under the guest (libvirt reports STOPPED/FAILED)."""
        self._external_stop(uuid, StopReason.CRASHED.value)

    def destroy_externally(self, uuid: str) -> None:
        """Someone ran ``virsh destroy`` on the host."""
        self._external_stop(uuid, StopReason.DESTROYED.value)

    def _external_stop(self, uuid: str, reason: str) -> None:
        with self._lock:
            d = self._get(uuid)
            if d.power != _ON:
                return
            d.power = _OFF
        self._emit(d, "stopped", reason, _OFF)


def _write_disk(path: str, fmt: str, capacity_bytes: int) -> None:
    """An empty disk file of ``fmt`` at ``path``, made under a temporary name and renamed (a
    crash midway never leaves a half-made file that a redelivered create would take as done)."""
    tmp = f"{path}.creating-{os.getpid()}-{threading.get_ident()}"
    with open(tmp, "wb") as f:
        if fmt == "qcow2":
            f.write(qcow2_image(capacity_bytes))
        else:
            f.truncate(capacity_bytes)
    os.rename(tmp, path)


def _norm(uuid: str) -> str:
    try:
        return str(uuidlib.UUID(uuid))
    except (ValueError, AttributeError, TypeError):
        raise DriverError("INVALID_SPEC", f"{uuid!r} is not a UUID") from None
