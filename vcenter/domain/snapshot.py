"""Plain snapshots of a cluster: the only input of placement, rules and pool decisions.

Repositories (vcenter.db) turn rows into these; the scenario runner (vcenter.sim) builds them
from YAML. They are frozen dataclasses of plain values: no ORM objects, no clock.

Vocabulary and units:
- memory in MiB (int), CPU in MHz (float); a host's ``cpu_mhz`` is its total capacity
  (cores x core MHz).
- a host's ``reserved_*`` is kept for the hypervisor and never given to VMs; ``used_*`` is use
  by things that are not VMs of this snapshot (so a repository may list only some VMs).
- a VM with ``host`` set is running there (it consumes that host's capacity and counts for
  rules); ``host`` None means not running (powered off, or a new VM being placed).
- a pending reservation is a placement decided but not yet running (a power-on in flight, a
  migration target): it consumes the host's capacity exactly like a running VM, so two
  decisions taken at once never pick the same last slot.
- rules: VM-VM affinity / anti-affinity over ``vms``; VM-host rules (run-on / not-run-on)
  bind ``vms`` (a named VM group, resolved) to ``hosts`` (a named host group, resolved).
  ``must`` rules are never broken; ``should`` rules only when nothing else fits.
- pools: a tree of resource pools under the cluster's implicit root pool (``parent`` None means
  a child of the root). VMs with ``pool`` None belong to the root.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from vcenter.domain.cpu import CpuModel, CpuRequirement

CONNECTED = "connected"


@dataclass(frozen=True, slots=True)
class HostSnapshot:
    id: str
    name: str = ""
    connection: str = CONNECTED  # ConnectionState value: connected / disconnected / notResponding
    maintenance: bool = False
    standby: bool = False
    cpu_mhz: float = 0.0
    cores: int = 0
    memory_mib: int = 0
    reserved_memory_mib: int = 0
    reserved_cpu_mhz: float = 0.0
    used_memory_mib: int = 0
    used_cpu_mhz: float = 0.0
    vcpu_ratio: float = 4.0  # vCPUs allowed per physical core
    datastores: frozenset[str] = frozenset()
    port_groups: frozenset[str] = frozenset()
    cpu: CpuModel | None = None
    # A dedicated HA failover host (admission policy "failover-hosts" of an HA-enabled
    # cluster): placement and DRS never put a VM there; only HA restarts may (vcenter.domain.ha).
    failover: bool = False

    @property
    def label(self) -> str:
        return self.name or self.id

    @property
    def usable(self) -> bool:
        """Connected, not in maintenance, not in standby: may receive VMs."""
        return self.connection == CONNECTED and not self.maintenance and not self.standby


@dataclass(frozen=True, slots=True)
class VmSnapshot:
    id: str
    name: str = ""
    vcpus: int = 1
    memory_mib: int = 0
    cpu_reservation_mhz: float = 0.0
    memory_reservation_mib: int = 0
    cpu_limit_mhz: float | None = None
    memory_limit_mib: int | None = None
    cpu_shares: float | None = None  # None: "normal" (1000 per vCPU)
    memory_shares: float | None = None  # None: "normal" (10 per MiB)
    datastores: frozenset[str] = frozenset()
    port_groups: frozenset[str] = frozenset()
    cpu: CpuRequirement | None = None
    host: str | None = None
    pool: str | None = None
    priority: int = 0  # place_many decides higher priorities first (HA restart priority)

    @property
    def label(self) -> str:
        return self.name or self.id


# A placement request is a VM snapshot without a host (or with the host it is moving from).
VmRequest = VmSnapshot


@dataclass(frozen=True, slots=True)
class PendingReservation:
    vm_id: str
    host_id: str
    memory_mib: int
    vcpus: int = 0
    cpu_reservation_mhz: float = 0.0


class RuleKind(str, Enum):
    AFFINITY = "affinity"
    ANTI_AFFINITY = "anti-affinity"
    RUN_ON = "run-on"
    NOT_RUN_ON = "not-run-on"


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    kind: RuleKind
    must: bool
    vms: frozenset[str]
    hosts: frozenset[str] = frozenset()  # VM-host rules only
    vm_group: str | None = None  # names for messages; membership is already resolved above
    host_group: str | None = None
    enabled: bool = True

    @property
    def strength(self) -> str:
        return "must" if self.must else "should"

    @property
    def vm_host(self) -> bool:
        return self.kind in (RuleKind.RUN_ON, RuleKind.NOT_RUN_ON)


@dataclass(frozen=True, slots=True)
class Alloc:
    """One resource of a pool: reservation (guaranteed), limit (cap, None = unlimited),
    shares (relative weight among siblings), expandable reservation (may borrow from the parent)."""

    reservation: float = 0.0
    limit: float | None = None
    shares: float = 4000.0
    expandable: bool = True


@dataclass(frozen=True, slots=True)
class PoolNode:
    id: str
    name: str = ""
    parent: str | None = None
    cpu: Alloc = field(default_factory=lambda: Alloc(shares=4000.0))  # MHz
    mem: Alloc = field(default_factory=lambda: Alloc(shares=163840.0))  # MiB

    @property
    def label(self) -> str:
        return self.name or self.id


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    hosts: tuple[HostSnapshot, ...]
    vms: tuple[VmSnapshot, ...] = ()
    rules: tuple[Rule, ...] = ()
    pools: tuple[PoolNode, ...] = ()
    pending: tuple[PendingReservation, ...] = ()
    evc: CpuModel | None = None  # the cluster's EVC baseline, when EVC is on
    id: str = ""
