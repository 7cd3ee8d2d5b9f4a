"""The hypervisor driver contract the host agent programs against.

Two implementations: ``vcenter.hypervisor.libvirt`` (the real one, libvirt-python) and
``vcenter.hypervisor.simulated`` (in-memory, for scale and demos; never stands in for the real
one in a test that claims a real feature).

Vocabulary:
- domain: a VM as the hypervisor knows it, identified by its UUID (the inventory's
  ``libvirt_uuid``); names are unique per host too.
- every mutating call is idempotent where the operation allows: ``define`` of a UUID that
  already exists with the same name returns it; ``start`` of a running domain is a no-op; the
  agent relies on this when a command is redelivered.
- ``DriverError.code`` is a stable error code that ends up in the Task.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from vcenter.messaging.contracts import (
    DomainState,
    HostCounters,
    HostFacts,
    LifecycleEvent,
    MigrationOptions,
    MigrationProgress,
    VmSpec,
)


class DriverError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ConnectionLost(DriverError):
    def __init__(self, message: str = "connection to the hypervisor lost"):
        super().__init__("HYPERVISOR_UNREACHABLE", message)


LifecycleCallback = Callable[[LifecycleEvent], None]
ProgressCallback = Callable[[MigrationProgress], None]


class HypervisorDriver(Protocol):
    def connect(self) -> None:
        """Open (or re-open) the connection; raises ConnectionLost when the daemon is down."""

    def close(self) -> None: ...

    def is_alive(self) -> bool: ...

    def host_facts(self) -> HostFacts: ...

    def list_domains(self) -> list[DomainState]: ...

    def host_counters(self) -> HostCounters:
        """One reading of the host's cumulative CPU time, its memory and every running
        domain's counters (CPU time, resident memory, disk and NIC byte counts)."""

    def domain_state(self, uuid: str) -> DomainState | None:
        """None when no domain of that UUID is defined."""

    def create_disks(self, spec: VmSpec) -> list[str]:
        """Create every disk file that does not exist yet; return their paths."""

    def define(self, spec: VmSpec) -> DomainState:
        """Define the persistent domain (idempotent by UUID)."""

    def start(self, uuid: str) -> DomainState:
        """Power on (also resumes from a managed save image)."""

    def stop(self, uuid: str) -> DomainState:
        """Hard power off (virDomainDestroy)."""

    def shutdown(self, uuid: str, timeout: float) -> DomainState:
        """Ask the guest to shut down and wait up to ``timeout`` seconds; raises
        DriverError('GUEST_SHUTDOWN_TIMEOUT') when it is still running then."""

    def reset(self, uuid: str) -> DomainState: ...

    def suspend(self, uuid: str) -> DomainState:
        """Managed save: memory to disk, QEMU stops, state becomes suspended."""

    def resume(self, uuid: str) -> DomainState:
        """Start from the managed save image."""

    def reconfigure(self, uuid: str, vcpus: int | None, memory_mib: int | None) -> DomainState:
        """Change the persistent config of a powered-off domain."""

    def undefine(self, uuid: str, delete_disks: list[str]) -> None:
        """Remove the domain (managed save and all) and the given disk files; idempotent."""

    def subscribe_lifecycle(self, callback: LifecycleCallback) -> None:
        """Call ``callback`` for every lifecycle event; survives reconnects."""

    # --- CPU definitions ----------------------------------------------------------------
    def host_cpu_xml(self) -> str:
        """The CPU guests get on this host as <cpu> XML (a declared lab CPU when there is one)."""

    def compare_cpu(self, cpu_xml: str) -> tuple[bool, str]:
        """Whether a guest CPU definition runs here: (ok, identical|superset|incompatible: why)."""

    def cpu_baseline(self, cpu_xmls: list[str], expand_features: bool = False) -> str:
        """The most capable guest CPU definition that runs on every one of the given host CPUs."""

    # --- storage pools (datastores) -------------------------------------------------------
    def ensure_pool(self, name: str, path: str) -> None:
        """Define, build, start and autostart a directory pool on ``path``; idempotent."""

    def pool_usage(self, name: str) -> tuple[int, int]:
        """(capacity, available) bytes of a pool, freshly refreshed."""

    def remove_pool(self, name: str) -> None:
        """Stop and undefine a pool, never deleting its files; idempotent."""

    # --- VMotion and Storage VMotion -------------------------------------------------------
    def migrate(self, uuid: str, options: MigrationOptions, on_progress: ProgressCallback | None = None, cancel: threading.Event | None = None) -> MigrationProgress:
        """Live-migrate a running domain to ``options.dest_uri`` (peer to peer, persistent there,
        undefined here); blocks, reporting progress; returns the completed job's stats.
        ``cancel`` set -> DriverError('MIGRATION_CANCELLED') with the VM still running here.
        A domain already running on the target and absent here is success (``already_done``).
        Codes: VM_NOT_FOUND, VM_NOT_RUNNING, HOST_UNREACHABLE, MIGRATION_FAILED."""

    def domain_state_on(self, uri: str, uuid: str) -> DomainState | None:
        """The domain's state on another host (None: not defined there)."""

    def job_progress(self, uuid: str) -> MigrationProgress | None:
        """The domain's running migration or block copy, None when none runs."""

    def abort_job(self, uuid: str) -> bool:
        """Abort the running migration (VM stays here) or block copies (no pivot)."""

    def move_disk(
        self,
        uuid: str,
        disk_target: str,
        dest_path: str,
        dest_format: str,
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        *,
        shallow: bool = False,
        bandwidth_mibps: int | None = None,
        reuse_existing: bool | None = None,
    ) -> None:
        """Move one disk of a running domain (block copy, pivot, redefine); the old file stays.
        ``cancel`` set -> DriverError('MIGRATION_CANCELLED'), the VM stays on the old disk."""

    def move_disk_offline(self, uuid: str, disk_target: str, dest_path: str, dest_format: str) -> None:
        """Move one disk of a powered-off domain (copy, redefine); the old file stays."""
