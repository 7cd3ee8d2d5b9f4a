"""Maintenance evacuation: where each VM of a host entering maintenance goes, and which VMs
cannot leave (each named with a code and a reason, so the host stays out of maintenance).

Vocabulary:
- policy: what happens to the host's VMs that do not run (the cluster setting
  ``maintenance.powered_off``): ``leave`` (they stay registered on the host, the default),
  ``refuse`` (their presence refuses maintenance) or ``move`` (they are moved to other hosts
  too, as cold moves).
- running VM: powered on; placed together with the others by ``placement`` (largest first,
  each decision consuming capacity for the next), the host itself excluded.
- stopped VM: powered off or suspended on the host.
- cold move: a powered-off VM registered on another host without copying its disks: the
  target must mount every datastore of its disks (the domain is only defined there). Stopped
  VMs are placed after the running ones, on the cluster as the running moves leave it, by the
  same filters and weighers, but with no memory or CPU demand (they do not run): connected,
  not in maintenance or standby, datastores mounted, port groups present, CPU compatible (so
  it can power on there), must rules kept. A cold move is decided for the VM as a whole; its
  disks never move here (a Storage VMotion does that).
- blocked: a VM that cannot leave, with a stable code: ``POWERED_OFF_VMS_PRESENT`` (policy
  refuse), ``VM_SUSPENDED`` (its saved memory lives on this host: resume or power it off),
  ``VM_HAS_SNAPSHOTS`` (snapshot metadata lives in this host's libvirt), ``VM_NOT_READY``
  (being created, orphaned...), ``NO_HOST`` (no host passes every filter; ``filter`` names
  the filter that rejected every other host when one did, e.g. DatastoreFilter).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from vcenter.domain.placement import ClusterState, PlacementResult, decision_order
from vcenter.domain.snapshot import ClusterSnapshot, VmSnapshot

POLICIES = ("leave", "refuse", "move")
DEFAULT_POLICY = "leave"


def parse_policy(value: object) -> str:
    """The policy named by a stored setting (None: the default); ValueError for anything else."""
    if value is None:
        return DEFAULT_POLICY
    if value not in POLICIES:
        raise ValueError(f"maintenance.powered_off must be one of {', '.join(POLICIES)}, not {value!r}")
    return str(value)


@dataclass(frozen=True, slots=True)
class StoppedVm:
    vm: VmSnapshot
    power_state: str  # "poweredOff" or "suspended"
    ready: bool = True  # the VM's status is "ready"
    snapshots: int = 0


@dataclass(frozen=True, slots=True)
class Blocked:
    vm_id: str
    name: str
    code: str
    reason: str
    filter: str | None = None  # NO_HOST: the filter that rejected every other host, if one did


@dataclass(frozen=True, slots=True)
class EvacuationPlan:
    policy: str
    running: tuple[PlacementResult, ...]  # decision order
    stopped: tuple[PlacementResult, ...]  # decision order (policy move only)
    blocked: tuple[Blocked, ...]
    left: tuple[str, ...]  # stopped VMs that stay registered on the host (policy leave)

    @property
    def ok(self) -> bool:
        return not self.blocked

    @property
    def moves(self) -> dict[str, str]:
        """Running VM -> target host (VMotions)."""
        return {r.vm_id: r.host for r in self.running if r.host is not None}

    @property
    def cold_moves(self) -> dict[str, str]:
        """Powered-off VM -> target host (defined there, undefined here)."""
        return {r.vm_id: r.host for r in self.stopped if r.host is not None}


def _common_filter(result: PlacementResult, host_id: str) -> str | None:
    """The filter that rejected every host but the one being emptied, when a single one did."""
    others = [r for r in result.rejected if r.host_id != host_id]
    if not others:
        return None
    common = set(others[0].filters)
    for r in others[1:]:
        common &= set(r.filters)
    common.discard("Excluded")
    return next((f for f in others[0].filters if f in common), None)


def _no_host(vm: VmSnapshot, result: PlacementResult, host_id: str) -> Blocked:
    return Blocked(vm.id, vm.label, "NO_HOST", result.reason, _common_filter(result, host_id))


def _cold(vm: VmSnapshot) -> VmSnapshot:
    """A stopped VM as placement sees a cold move: no demand, no current host."""
    return replace(vm, host=None, memory_mib=0, vcpus=0, cpu_reservation_mhz=0.0, memory_reservation_mib=0)


def plan(snapshot: ClusterSnapshot, host_id: str, running: Sequence[VmSnapshot], stopped: Sequence[StoppedVm], policy: str) -> EvacuationPlan:
    """Decide the evacuation of ``host_id``: every running VM moves (VMotion), stopped VMs are
    left, refuse maintenance, or move (cold moves), as ``policy`` says. The host itself is
    excluded as a target. The plan is ``ok`` only when nothing is blocked."""
    policy = parse_policy(policy)
    exclude = {host_id: "host entering maintenance"}
    if policy == "refuse" and stopped:
        refused = tuple(Blocked(s.vm.id, s.vm.label, "POWERED_OFF_VMS_PRESENT", f"{s.power_state}: the cluster refuses maintenance while powered-off VMs are registered on the host") for s in stopped)
        return EvacuationPlan(policy, (), (), refused, ())
    ids = [v.id for v in running] + ([s.vm.id for s in stopped] if policy == "move" else [])
    st = ClusterState(snapshot, skip_pending_for=ids)
    blocked: list[Blocked] = []
    running_results = []
    for vm in decision_order(running):
        r = st.evaluate(vm, exclude)
        if r.host is not None:
            st.commit(vm, r.host)
        else:
            blocked.append(_no_host(vm, r, host_id))
        running_results.append(r)
    if policy == "leave":
        return EvacuationPlan(policy, tuple(running_results), (), tuple(blocked), tuple(s.vm.id for s in stopped))
    stopped_results = []
    for s in sorted(stopped, key=lambda s: s.vm.id):
        vm = s.vm
        if s.power_state == "suspended":
            blocked.append(Blocked(vm.id, vm.label, "VM_SUSPENDED", "suspended: its saved memory is on this host (resume it, or power it off)"))
            continue
        if not s.ready:
            blocked.append(Blocked(vm.id, vm.label, "VM_NOT_READY", "not ready (being created, changed or reconciled)"))
            continue
        if s.snapshots:
            blocked.append(Blocked(vm.id, vm.label, "VM_HAS_SNAPSHOTS", f"{s.snapshots} snapshot(s) live in this host's libvirt (delete them first)"))
            continue
        cold = _cold(vm)
        r = st.evaluate(cold, exclude)
        if r.host is not None:
            st.commit(cold, r.host)  # binds rules for the next decisions; no capacity used
        else:
            blocked.append(_no_host(vm, r, host_id))
        stopped_results.append(r)
    return EvacuationPlan(policy, tuple(running_results), tuple(stopped_results), tuple(blocked), ())
