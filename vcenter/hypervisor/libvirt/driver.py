"""The libvirt implementation of HypervisorDriver: the only code that talks to libvirtd.

``LibvirtDriver`` is composed of one part per concern, as nova's libvirt driver is split:

- host.py: the connection, lifecycle events, error codes, host facts and counters;
- cpu.py: guest CPU definitions (host CPU, baselines, comparisons, a declared CPU);
- storage.py: datastores as storage pools, disk images, the disks a definition names;
- guest.py: domain states and lifecycle (define, start, stop, shutdown, reset, suspend,
  resume, reconfigure, undefine);
- migration.py: live migration (VMotion) and the jobs it runs;
- storagemove.py: Storage VMotion (frozen base, block copy, offline);
- vmdata.py: snapshots, clones and backups.

Each module says what it decides. This one decides only what the driver holds: its
connection state (shared by every part) and the checks made when it is built.
"""

from __future__ import annotations

import queue
import threading

import libvirt

from vcenter.hypervisor.base import DriverError, LifecycleCallback
from vcenter.hypervisor.libvirt.cpu import CpuOps
from vcenter.hypervisor.libvirt.guest import GuestOps
from vcenter.hypervisor.libvirt.host import HostOps
from vcenter.hypervisor.libvirt.migration import MigrationOps
from vcenter.hypervisor.libvirt.storage import StorageOps
from vcenter.hypervisor.libvirt.storagemove import StorageMoveOps
from vcenter.hypervisor.libvirt.vmdata import VmDataOps
from vcenter.hypervisor.libvirt.xml import detect_domain_type, parse_cpu_xml
from vcenter.messaging.contracts import LifecycleEvent


class LibvirtDriver(HostOps, CpuOps, StorageOps, GuestOps, MigrationOps, StorageMoveOps, VmDataOps):
    def __init__(self, uri: str, connect_timeout: float = 10, domain_type: str | None = None, declared_cpu_xml: str | None = None, balloon_stats_period: int = 5):
        self.uri = uri
        self.balloon_stats_period = balloon_stats_period
        # A lab host's CPU (host-style <cpu> XML) that stands in for the real one in host_facts,
        # host_cpu_xml and compare_cpu: every lab host has the same real CPU.
        if declared_cpu_xml is not None:
            declared = parse_cpu_xml(declared_cpu_xml)
            if not declared.model:
                raise DriverError("INVALID_SPEC", "a declared host CPU needs a model")
        self.declared_cpu_xml = declared_cpu_xml
        self.connect_timeout = connect_timeout
        if domain_type is None:
            domain_type = "test" if uri.startswith("test:") else detect_domain_type()
        self.domain_type = domain_type
        self._conn: libvirt.virConnect | None = None
        self._conn_lock = threading.RLock()
        self._callbacks: list[LifecycleCallback] = []
        self._event_callback_id: int | None = None
        self._events: queue.Queue[LifecycleEvent | None] = queue.Queue()
        self._dispatcher: threading.Thread | None = None
