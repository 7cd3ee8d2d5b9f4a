"""DRS what-if: the cluster, its balance and the DRS plan if something happened. Changes nothing.

A change is a host that fails, enters maintenance or powers off (standby), a VM whose demand
changes, or a rule that is added; several apply in order. ``whatif`` applies them to a copy of
the snapshot (VMs a host change displaces are placed with placement's ``place_many``: a failed
host's restarted like HA's batch, a host entering maintenance or standby evacuated; those that
fit nowhere are listed with placement's reasons), then runs one DRS pass
(vcenter.domain.drs.balance) on the changed cluster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

from vcenter.domain.drs import Balance, Demand, DrsHistory, DrsPlan, DrsSettings, balance, core_mhz, imbalance_of
from vcenter.domain.placement import ManyResult, place_many
from vcenter.domain.snapshot import ClusterSnapshot, HostSnapshot, Rule


@dataclass(frozen=True, slots=True)
class HostFails:
    host: str


@dataclass(frozen=True, slots=True)
class HostMaintenance:
    host: str


@dataclass(frozen=True, slots=True)
class HostPowersOff:
    """The host goes to standby (DPM's power-off): evacuated first, like maintenance."""

    host: str


@dataclass(frozen=True, slots=True)
class VmDemandChange:
    vm: str
    cpu_mhz: float | None = None
    mem_mib: float | None = None


@dataclass(frozen=True, slots=True)
class RuleAdded:
    rule: Rule


Change = HostFails | HostMaintenance | HostPowersOff | VmDemandChange | RuleAdded


def describe_change(change: Change) -> str:
    if isinstance(change, HostFails):
        return f"host {change.host} fails"
    if isinstance(change, HostMaintenance):
        return f"host {change.host} enters maintenance"
    if isinstance(change, HostPowersOff):
        return f"host {change.host} powers off (standby)"
    if isinstance(change, VmDemandChange):
        parts = [f"cpu={change.cpu_mhz:.0f} MHz" if change.cpu_mhz is not None else "", f"mem={change.mem_mib:.0f} MiB" if change.mem_mib is not None else ""]
        return f"VM {change.vm} demand " + " ".join(p for p in parts if p)
    return f"rule '{change.rule.name}' added ({change.rule.strength} {change.rule.kind.value})"


@dataclass(frozen=True, slots=True)
class WhatIfResult:
    change: str
    now: Balance  # the cluster as it is
    changed: Balance  # right after the change (VMs displaced by it placed), before DRS
    plan: DrsPlan  # what DRS would then recommend
    displaced: ManyResult | None  # the placement of the VMs the change displaced
    unplaceable: dict[str, str]  # VM id -> why it fits nowhere after the change
    snapshot: ClusterSnapshot  # the hypothetical cluster after the change (before the plan)

    @property
    def imbalance_before(self) -> float:
        return self.now.imbalance

    @property
    def imbalance_after(self) -> float:
        return self.plan.after.imbalance

    def to_dict(self) -> dict[str, Any]:
        return {
            "change": self.change,
            "imbalance_now": self.now.imbalance,
            "imbalance_after_change": self.changed.imbalance,
            "imbalance_after_plan": self.plan.after.imbalance,
            "displaced": None if self.displaced is None else {r.vm_id: r.host for r in self.displaced.results},
            "unplaceable": dict(self.unplaceable),
            "plan": self.plan.to_dict(),
        }


def _host(snapshot: ClusterSnapshot, host_id: str) -> HostSnapshot:
    for h in snapshot.hosts:
        if h.id == host_id:
            return h
    raise KeyError(f"unknown host {host_id}")


def whatif(
    snapshot: ClusterSnapshot,
    change: Change | Sequence[Change],
    settings: DrsSettings | None = None,
    demands: Mapping[str, Demand] | None = None,
    history: DrsHistory | None = None,
    spread: Mapping[str, Demand] | None = None,
) -> WhatIfResult:
    """The cluster, the balance and the DRS plan if ``change`` happened. Changes nothing.

    A failed host's VMs are restarted elsewhere with ``place_many`` (HA's batch); a host entering
    maintenance or powering off is evacuated with ``place_many`` (its VMs move); VMs that fit
    nowhere are listed with placement's reasons (they stay down, or keep the host from entering
    maintenance). Then one DRS pass runs on the changed cluster.
    """
    settings = settings or DrsSettings()
    demands = dict(demands or {})
    changes: list[Change] = list(change) if isinstance(change, (list, tuple)) else [cast(Change, change)]
    now = imbalance_of(snapshot, demands)
    snap = snapshot
    displaced: ManyResult | None = None
    unplaceable: dict[str, str] = {}
    for ch in changes:
        if isinstance(ch, (HostFails, HostMaintenance, HostPowersOff)):
            h = _host(snap, ch.host)
            if isinstance(ch, HostFails):
                h2 = replace(h, connection="notResponding")
            elif isinstance(ch, HostMaintenance):
                h2 = replace(h, maintenance=True)
            else:
                h2 = replace(h, standby=True)
            hosts = tuple(h2 if x.id == h.id else x for x in snap.hosts)
            victims = [vm for vm in snap.vms if vm.host == h.id]
            if isinstance(ch, HostFails):
                vms = tuple(replace(vm, host=None) if vm.host == h.id else vm for vm in snap.vms)
                pending = tuple(p for p in snap.pending if p.host_id != h.id)
                snap = replace(snap, hosts=hosts, vms=vms, pending=pending)
                batch = [replace(vm, host=None) for vm in victims]
            else:
                snap = replace(snap, hosts=hosts)
                batch = victims
            if batch:
                displaced = place_many(snap, batch)
                placed = displaced.placed
                unplaceable.update(displaced.unplaced)
                if isinstance(ch, HostFails):
                    snap = replace(snap, vms=tuple(replace(vm, host=placed[vm.id]) if vm.id in placed else vm for vm in snap.vms))
                else:
                    snap = replace(snap, vms=tuple(replace(vm, host=placed.get(vm.id, vm.host)) for vm in snap.vms))
        elif isinstance(ch, VmDemandChange):
            vm = next((v for v in snap.vms if v.id == ch.vm), None)
            if vm is None:
                raise KeyError(f"unknown VM {ch.vm}")
            core = core_mhz(snap)
            old = demands.get(vm.id, (vm.vcpus * core, float(vm.memory_mib)))
            demands[vm.id] = (old[0] if ch.cpu_mhz is None else ch.cpu_mhz, old[1] if ch.mem_mib is None else ch.mem_mib)
        elif isinstance(ch, RuleAdded):
            snap = replace(snap, rules=tuple(r for r in snap.rules if r.name != ch.rule.name) + (ch.rule,))
        else:
            raise TypeError(f"unknown change {ch!r}")
    changed = imbalance_of(snap, demands)
    plan = balance(snap, settings, demands, history, spread)
    return WhatIfResult("; ".join(describe_change(c) for c in changes), now, changed, plan, displaced, unplaceable, snap)
