"""Placement: which host for a VM, and why not the others.

Power-on, deploy, VMotion target choice, maintenance evacuation, DRS and HA restarts all ask
this one question. ``place`` answers it for one VM, ``place_many`` for a batch decided together
(an evacuation, the HA restart of a whole host), each decision consuming capacity for the next.

Vocabulary:
- filter: a yes/no test per host (nova's word). Every rejected host carries the names of the
  filters that rejected it and a human reason with numbers. Filters, in order:
  ConnectionFilter (not connected), MaintenanceFilter, StandbyFilter, FailoverHostFilter (a
  dedicated HA failover host: it takes only HA restarts, which clear the flag before placing),
  CpuCompatibilityFilter (missing CPU features), DatastoreFilter (a disk's datastore not
  mounted), PortGroupFilter (a NIC's port group absent), MemoryFilter (configured memory vs
  free memory; no memory overcommit), CpuFilter (vCPUs vs cores x vcpu_ratio, and the CPU
  reservation vs reservable MHz), RuleFilter (a "must" rule would break).
- weigher: a score per surviving host; the highest total wins, ties go to the earlier host of
  the snapshot. Weighers and their components:
  * ``memory`` = -(memory used after placement / memory size): the least loaded host wins;
  * ``cpu`` = -(vCPUs allocated after placement / (cores x vcpu_ratio));
  * ``affinity`` = +RULE_WEIGHT per should-affinity rule the host keeps (its partners run there);
  * ``anti_affinity`` = -RULE_WEIGHT per should-anti-affinity rule the host breaks;
  * ``host_group`` = -RULE_WEIGHT per should run-on / not-run-on rule the host breaks.
  The balance components lie in [-2, 0] and RULE_WEIGHT is 10, so a host that breaks fewer
  should-rules always outranks one that breaks more: a should-rule is broken only when no host
  keeping it fits, and the chosen candidate's notes say so.
- pending reservation: a decision not yet running; it counts as used capacity and as the VM's
  location for rules, so two decisions taken at once never share the last slot.
- admission: a VM being powered on (no current host) with a CPU or memory reservation must be
  admitted by its resource pool first (vcenter.domain.pools); a refusal names the pool.
- moving VM: a VM that already runs (``host`` set) is being moved: its current host is not a
  candidate, and its use stays counted there until it moves.

Speed: ``ClusterState`` keeps per-host aggregates in numpy arrays built once from the snapshot
(one pass over the VMs); every filter and weigher is a vector operation over the hosts, and a
decision updates the aggregates in place (no copy of the cluster per candidate).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vcenter.domain.cpu import CpuRequirement, compatible, requirement_of
from vcenter.domain.pools import Admission, Amount, PoolTree
from vcenter.domain.rules import RuleCheck, checks_for_vm, index_by_vm
from vcenter.domain.snapshot import CONNECTED, ClusterSnapshot, RuleKind, VmSnapshot

RULE_WEIGHT = 10.0
SCORE_DIGITS = 9  # scores are compared rounded, so float noise never decides a tie


# -- results ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Candidate:
    host_id: str
    host_name: str
    score: float
    components: dict[str, float]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rejection:
    host_id: str
    host_name: str
    filters: tuple[str, ...]
    reasons: tuple[str, ...]

    @property
    def filter(self) -> str:
        return self.filters[0]

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


@dataclass(frozen=True, slots=True)
class PlacementResult:
    vm_id: str
    candidates: tuple[Candidate, ...]  # ranked, best first
    rejected: tuple[Rejection, ...]  # in snapshot host order
    refused: str | None = None  # refused before any host was considered (pool admission)
    refused_by: str | None = None  # the pool that refused

    @property
    def chosen(self) -> Candidate | None:
        return self.candidates[0] if self.candidates and self.refused is None else None

    @property
    def host(self) -> str | None:
        c = self.chosen
        return c.host_id if c else None

    @property
    def ok(self) -> bool:
        return self.chosen is not None

    @property
    def reason(self) -> str:
        """One line: why the VM goes where it goes, or why it goes nowhere."""
        if self.refused:
            return self.refused
        if self.chosen:
            c = self.chosen
            return f"{c.host_name} (score {c.score:.4f})" + "".join(f"; {n}" for n in c.notes)
        if not self.rejected:
            return "no host in the cluster"
        return "no host fits: " + "; ".join(f"{r.host_name}: {r.reason}" for r in self.rejected)

    def to_dict(self) -> dict[str, Any]:
        return {
            "vm": self.vm_id,
            "host": self.host,
            "refused": self.refused,
            "refused_by": self.refused_by,
            "candidates": [{"host": c.host_id, "name": c.host_name, "score": c.score, "components": dict(c.components), "notes": list(c.notes)} for c in self.candidates],
            "rejected": [{"host": r.host_id, "name": r.host_name, "filters": list(r.filters), "reasons": list(r.reasons)} for r in self.rejected],
        }


@dataclass(frozen=True, slots=True)
class ManyResult:
    results: tuple[PlacementResult, ...]  # in decision order

    @property
    def placed(self) -> dict[str, str]:
        return {r.vm_id: r.host for r in self.results if r.host is not None}

    @property
    def unplaced(self) -> dict[str, str]:
        return {r.vm_id: r.reason for r in self.results if r.host is None}

    def result(self, vm_id: str) -> PlacementResult:
        for r in self.results:
            if r.vm_id == vm_id:
                return r
        raise KeyError(vm_id)


# -- state -----------------------------------------------------------------------------------


def _n(x: float) -> str:
    return f"{x:.0f}" if abs(x - round(x)) < 1e-6 else f"{x:.1f}"


class ClusterState:
    """Per-host aggregates of a snapshot, updated in place as decisions are made."""

    def __init__(self, snapshot: ClusterSnapshot, skip_pending_for: Iterable[str] = ()) -> None:
        self.snapshot = snapshot
        hosts = snapshot.hosts
        self.hosts = hosts
        self.ids = [h.id for h in hosts]
        self.labels = [h.label for h in hosts]
        self.index = {h.id: i for i, h in enumerate(hosts)}
        n = len(hosts)
        self.n = n
        mem_used = [float(h.reserved_memory_mib + h.used_memory_mib) for h in hosts]
        vcpu_used = [0.0] * n
        mhz_used = [0.0] * n
        self.locations: dict[str, list[int]] = {}
        self.vm_labels: dict[str, str] = {}
        index = self.index
        for vm in snapshot.vms:
            if vm.name:
                self.vm_labels[vm.id] = vm.name
            i = index.get(vm.host) if vm.host is not None else None
            if i is None:
                continue
            mem_used[i] += vm.memory_mib
            vcpu_used[i] += vm.vcpus
            mhz_used[i] += vm.cpu_reservation_mhz
            self.locations[vm.id] = [i]
        skip = set(skip_pending_for)
        for p in snapshot.pending:
            i = index.get(p.host_id)
            if i is None or p.vm_id in skip:
                continue
            mem_used[i] += p.memory_mib
            vcpu_used[i] += p.vcpus
            mhz_used[i] += p.cpu_reservation_mhz
            self.locations.setdefault(p.vm_id, []).append(i)
        self.mem_total = np.array([float(h.memory_mib) for h in hosts])
        self.mem_used = np.array(mem_used)
        self.vcpu_total = np.array([h.cores * h.vcpu_ratio for h in hosts], dtype=float)
        self.vcpu_used = np.array(vcpu_used)
        self.mhz_total = np.array([h.cpu_mhz - h.reserved_cpu_mhz - h.used_cpu_mhz for h in hosts], dtype=float)
        self.mhz_used = np.array(mhz_used)
        self.connected = np.array([h.connection == CONNECTED for h in hosts], dtype=bool)
        self.maintenance = np.array([h.maintenance for h in hosts], dtype=bool)
        self.standby = np.array([h.standby for h in hosts], dtype=bool)
        self.failover = np.array([h.failover for h in hosts], dtype=bool)
        self.rules_by_vm = index_by_vm(snapshot.rules)
        self.group_masks: dict[str, np.ndarray] = {}
        self._cpu_cache: dict[CpuRequirement, tuple[np.ndarray, list[tuple[str, ...]]]] = {}
        self._set_cache: dict[tuple[str, str], np.ndarray] = {}
        self._pools: PoolTree | None = None
        self._checks: tuple[str, list[RuleCheck]] | None = None

    # -- helpers used by filters and weighers --------------------------------------------
    def requirement(self, vm: VmSnapshot) -> CpuRequirement | None:
        if vm.cpu is not None:
            return vm.cpu
        if self.snapshot.evc is not None:
            return requirement_of(self.snapshot.evc)
        return None

    def cpu_compat(self, req: CpuRequirement) -> tuple[np.ndarray, list[tuple[str, ...]]]:
        hit = self._cpu_cache.get(req)
        if hit is None:
            results = [compatible(req, h.cpu) for h in self.hosts]
            hit = (np.array([ok for ok, _ in results], dtype=bool), [m for _, m in results])
            self._cpu_cache[req] = hit
        return hit

    def has(self, attr: str, item: str) -> np.ndarray:
        """Mask of hosts whose ``attr`` ('datastores' or 'port_groups') contains ``item``."""
        key = (attr, item)
        m = self._set_cache.get(key)
        if m is None:
            m = np.fromiter((item in getattr(h, attr) for h in self.hosts), dtype=bool, count=self.n)
            self._set_cache[key] = m
        return m

    def rule_checks(self, vm: VmSnapshot) -> list[RuleCheck]:
        if self._checks is not None and self._checks[0] == vm.id:
            return self._checks[1]
        rules = self.rules_by_vm.get(vm.id, ())
        checks = checks_for_vm(vm.id, rules, self.locations, self.ids, self.labels, self.vm_labels, self.group_masks) if rules else []
        self._checks = (vm.id, checks)
        return checks

    @property
    def pools(self) -> PoolTree:
        if self._pools is None:
            self._pools = PoolTree.from_snapshot(self.snapshot)
        return self._pools

    # -- decisions -----------------------------------------------------------------------
    def evaluate(self, vm: VmSnapshot, exclude: Mapping[str, str] | None = None, only: Iterable[str] | None = None) -> PlacementResult:
        """Rank every host for ``vm`` without changing the state."""
        self._checks = None
        if vm.host is None and (vm.cpu_reservation_mhz > 0 or vm.memory_reservation_mib > 0):
            adm: Admission = self.pools.admit(vm.pool, Amount(vm.cpu_reservation_mhz, vm.memory_reservation_mib))
            if not adm.ok:
                return PlacementResult(vm.id, (), (), refused=f"admission refused: {adm.reason}", refused_by=adm.pool)
        n = self.n
        ok = np.ones(n, dtype=bool)
        fails: list[tuple[str, np.ndarray, Callable[[int], str]]] = []
        for f in FILTERS:
            mask, why = f.check(self, vm)
            fails.append((f.name, ~mask, why))
            ok &= mask
        excluded: dict[int, str] = {}
        if vm.host is not None and vm.host in self.index:
            excluded[self.index[vm.host]] = "current host of the VM"
        for hid, reason in (exclude or {}).items():
            if hid in self.index:
                excluded.setdefault(self.index[hid], reason)
        if only is not None:
            keep = {self.index[h] for h in only if h in self.index}
            for i in range(n):
                if i not in keep:
                    excluded.setdefault(i, "not a requested target")
        usable = ok.copy()
        if excluded:
            usable[list(excluded)] = False
        idx = np.flatnonzero(usable)
        candidates = self._rank(vm, idx)
        rejected = []
        for i in np.flatnonzero(~usable).tolist():
            names: list[str] = []
            reasons: list[str] = []
            if i in excluded:
                names.append("Excluded")
                reasons.append(excluded[i])
            for name, fail, why in fails:
                if fail[i]:
                    names.append(name)
                    reasons.append(why(i))
            rejected.append(Rejection(self.ids[i], self.labels[i], tuple(names), tuple(reasons)))
        return PlacementResult(vm.id, tuple(candidates), tuple(rejected))

    def _rank(self, vm: VmSnapshot, idx: np.ndarray) -> list[Candidate]:
        if idx.size == 0:
            return []
        comps: list[tuple[str, np.ndarray]] = []
        for w in WEIGHERS:
            comps.extend(w.weigh(self, vm, idx))
        total = np.zeros(idx.size)
        for _, v in comps:
            total += v
        total = np.round(total, SCORE_DIGITS)
        order = np.lexsort((idx, -total))
        should = [c for c in self.rule_checks(vm) if not c.rule.must]
        out: list[Candidate] = []
        ranked = idx[order].tolist()
        totals = total[order].tolist()
        comp_rows = [(name, np.round(v[order], SCORE_DIGITS).tolist()) for name, v in comps]
        for k, i in enumerate(ranked):
            notes: tuple[str, ...] = ()
            if should:
                broken = [c for c in should if c.broken[i]]
                if broken:
                    if k == 0:
                        others = ranked[1:]
                        notes = tuple(
                            f"should-rule '{c.rule.name}' broken: "
                            + ("no other host fits" if all(c.broken[j] for j in others) else "every host keeping it breaks more should-rules")
                            + f" ({c.describe(i)})"
                            for c in broken
                        )
                    else:
                        notes = tuple(f"would break {c.describe(i)}" for c in broken)
            out.append(Candidate(self.ids[i], self.labels[i], totals[k], {name: vals[k] for name, vals in comp_rows}, notes))
        return out

    def commit(self, vm: VmSnapshot, host_id: str) -> None:
        """Apply a decision: ``vm`` now runs on ``host_id`` (moved from where it was)."""
        i = self.index[host_id]
        for j in self.locations.get(vm.id, ()):
            if vm.host is not None and self.ids[j] == vm.host:
                self.mem_used[j] -= vm.memory_mib
                self.vcpu_used[j] -= vm.vcpus
                self.mhz_used[j] -= vm.cpu_reservation_mhz
        self.mem_used[i] += vm.memory_mib
        self.vcpu_used[i] += vm.vcpus
        self.mhz_used[i] += vm.cpu_reservation_mhz
        self.locations[vm.id] = [i]
        if vm.host is None and (vm.cpu_reservation_mhz > 0 or vm.memory_reservation_mib > 0):
            self.pools.reserve(vm.pool, Amount(vm.cpu_reservation_mhz, vm.memory_reservation_mib))
        self._checks = None


# -- filters ---------------------------------------------------------------------------------


class Filter:
    """A yes/no test per host. ``check`` returns (mask of passing hosts, reason for host i)."""

    name = "Filter"

    def check(self, st: ClusterState, vm: VmSnapshot) -> tuple[np.ndarray, Callable[[int], str]]:
        raise NotImplementedError


class ConnectionFilter(Filter):
    name = "ConnectionFilter"

    def check(self, st: ClusterState, vm: VmSnapshot) -> tuple[np.ndarray, Callable[[int], str]]:
        return st.connected, lambda i: f"not connected ({st.hosts[i].connection})"


class MaintenanceFilter(Filter):
    name = "MaintenanceFilter"

    def check(self, st: ClusterState, vm: VmSnapshot) -> tuple[np.ndarray, Callable[[int], str]]:
        return ~st.maintenance, lambda i: "in maintenance"


class StandbyFilter(Filter):
    name = "StandbyFilter"

    def check(self, st: ClusterState, vm: VmSnapshot) -> tuple[np.ndarray, Callable[[int], str]]:
        return ~st.standby, lambda i: "in standby"


class FailoverHostFilter(Filter):
    """A dedicated HA failover host is kept empty for HA restarts (vcenter.domain.ha clears the
    flag for its own placements)."""

    name = "FailoverHostFilter"

    def check(self, st: ClusterState, vm: VmSnapshot) -> tuple[np.ndarray, Callable[[int], str]]:
        return ~st.failover, lambda i: "dedicated HA failover host: only HA restarts run there"


class CpuCompatibilityFilter(Filter):
    name = "CpuCompatibilityFilter"

    def check(self, st: ClusterState, vm: VmSnapshot) -> tuple[np.ndarray, Callable[[int], str]]:
        req = st.requirement(vm)
        if req is None:
            return np.ones(st.n, dtype=bool), lambda i: ""
        mask, missing = st.cpu_compat(req)
        label = f" with '{req.name}'" if req.name else ""
        return mask, lambda i: f"CPU incompatible{label}: missing {', '.join(missing[i])}"


class _SetFilter(Filter):
    attr = ""
    vm_attr = ""
    one = ""
    many = ""

    def check(self, st: ClusterState, vm: VmSnapshot) -> tuple[np.ndarray, Callable[[int], str]]:
        items = sorted(getattr(vm, self.vm_attr))
        ok = np.ones(st.n, dtype=bool)
        for item in items:
            ok &= st.has(self.attr, item)

        def why(i: int) -> str:
            missing = [x for x in items if not st.has(self.attr, x)[i]]
            return (self.one if len(missing) == 1 else self.many).format(", ".join(missing))

        return ok, why


class DatastoreFilter(_SetFilter):
    name = "DatastoreFilter"
    attr = vm_attr = "datastores"
    one = "datastore {} not mounted"
    many = "datastores {} not mounted"


class PortGroupFilter(_SetFilter):
    name = "PortGroupFilter"
    attr = vm_attr = "port_groups"
    one = "port group {} absent"
    many = "port groups {} absent"


class MemoryFilter(Filter):
    name = "MemoryFilter"

    def check(self, st: ClusterState, vm: VmSnapshot) -> tuple[np.ndarray, Callable[[int], str]]:
        free = st.mem_total - st.mem_used
        need = vm.memory_mib

        def why(i: int) -> str:
            f = free[i]
            return f"memory short by {_n(need - f)} MiB (needs {_n(need)}, free {_n(f)} of {_n(st.mem_total[i])})"

        return free >= need, why


class CpuFilter(Filter):
    name = "CpuFilter"

    def check(self, st: ClusterState, vm: VmSnapshot) -> tuple[np.ndarray, Callable[[int], str]]:
        vfree = st.vcpu_total - st.vcpu_used
        mfree = st.mhz_total - st.mhz_used
        ok_v = vfree >= vm.vcpus
        ok_m = mfree >= vm.cpu_reservation_mhz

        def why(i: int) -> str:
            parts = []
            if not ok_v[i]:
                parts.append(f"vCPUs short by {_n(vm.vcpus - vfree[i])} (needs {vm.vcpus}, free {_n(vfree[i])} of {_n(st.vcpu_total[i])})")
            if not ok_m[i]:
                parts.append(f"CPU reservation short by {_n(vm.cpu_reservation_mhz - mfree[i])} MHz (needs {_n(vm.cpu_reservation_mhz)}, free {_n(mfree[i])} of {_n(st.mhz_total[i])})")
            return "; ".join(parts)

        return ok_v & ok_m, why


class RuleFilter(Filter):
    """Rejects a host where a "must" rule would break."""

    name = "RuleFilter"

    def check(self, st: ClusterState, vm: VmSnapshot) -> tuple[np.ndarray, Callable[[int], str]]:
        must = [c for c in st.rule_checks(vm) if c.rule.must]
        bad = np.zeros(st.n, dtype=bool)
        for c in must:
            bad |= c.broken
        return ~bad, lambda i: "; ".join(c.describe(i) for c in must if c.broken[i])


# -- weighers --------------------------------------------------------------------------------


class Weigher:
    """Scores the candidate hosts ``idx``; returns named components (already weighted)."""

    name = "Weigher"
    weight = 1.0

    def weigh(self, st: ClusterState, vm: VmSnapshot, idx: np.ndarray) -> list[tuple[str, np.ndarray]]:
        raise NotImplementedError


class MemoryBalanceWeigher(Weigher):
    name = "memory"

    def weigh(self, st: ClusterState, vm: VmSnapshot, idx: np.ndarray) -> list[tuple[str, np.ndarray]]:
        total = st.mem_total[idx]
        load = (st.mem_used[idx] + vm.memory_mib) / np.where(total > 0, total, 1.0)
        return [(self.name, -self.weight * load)]


class CpuBalanceWeigher(Weigher):
    name = "cpu"

    def weigh(self, st: ClusterState, vm: VmSnapshot, idx: np.ndarray) -> list[tuple[str, np.ndarray]]:
        total = st.vcpu_total[idx]
        load = (st.vcpu_used[idx] + vm.vcpus) / np.where(total > 0, total, 1.0)
        return [(self.name, -self.weight * load)]


class ShouldRuleWeigher(Weigher):
    """Should-rules as dominant bonuses and penalties (see the module docstring)."""

    name = "rules"
    weight = RULE_WEIGHT

    def weigh(self, st: ClusterState, vm: VmSnapshot, idx: np.ndarray) -> list[tuple[str, np.ndarray]]:
        should = [c for c in st.rule_checks(vm) if not c.rule.must]
        if not should:
            return []
        aff = np.zeros(idx.size)
        anti = np.zeros(idx.size)
        group = np.zeros(idx.size)
        for c in should:
            broken = c.broken[idx]
            if c.rule.kind == RuleKind.AFFINITY:
                aff += self.weight * ~broken
            elif c.rule.kind == RuleKind.ANTI_AFFINITY:
                anti -= self.weight * broken
            else:
                group -= self.weight * broken
        out = []
        kinds = {c.rule.kind for c in should}
        if RuleKind.AFFINITY in kinds:
            out.append(("affinity", aff))
        if RuleKind.ANTI_AFFINITY in kinds:
            out.append(("anti_affinity", anti))
        if kinds & {RuleKind.RUN_ON, RuleKind.NOT_RUN_ON}:
            out.append(("host_group", group))
        return out


FILTERS: list[Filter] = [
    ConnectionFilter(),
    MaintenanceFilter(),
    StandbyFilter(),
    FailoverHostFilter(),
    CpuCompatibilityFilter(),
    DatastoreFilter(),
    PortGroupFilter(),
    MemoryFilter(),
    CpuFilter(),
    RuleFilter(),
]
WEIGHERS: list[Weigher] = [MemoryBalanceWeigher(), CpuBalanceWeigher(), ShouldRuleWeigher()]


# -- entry points ----------------------------------------------------------------------------


def _exclusions(exclude: Mapping[str, str] | Iterable[str] | None) -> dict[str, str]:
    if exclude is None:
        return {}
    if isinstance(exclude, Mapping):
        return dict(exclude)
    return {h: "excluded by the caller" for h in exclude}


def place(
    snapshot: ClusterSnapshot,
    vm: VmSnapshot,
    *,
    exclude: Mapping[str, str] | Iterable[str] | None = None,
    only: Iterable[str] | None = None,
) -> PlacementResult:
    """Where would ``vm`` go: every host ranked or rejected, with reasons. Changes nothing.

    ``exclude`` removes hosts (a mapping gives the reason shown); ``only`` restricts the choice
    (a VMotion to a named target). A pending reservation of ``vm`` itself is ignored (the
    decision is being taken again).
    """
    st = ClusterState(snapshot, skip_pending_for=(vm.id,))
    return st.evaluate(vm, _exclusions(exclude), only)


def decision_order(vms: Sequence[VmSnapshot]) -> list[VmSnapshot]:
    """place_many's order: higher priority first, then larger memory, more vCPUs, then id.

    Largest first packs better (first-fit decreasing); priority lets HA restart what matters first.
    """
    return sorted(vms, key=lambda v: (-v.priority, -v.memory_mib, -v.vcpus, v.id))


def place_many(
    snapshot: ClusterSnapshot,
    vms: Sequence[VmSnapshot],
    *,
    exclude: Mapping[str, str] | Iterable[str] | None = None,
) -> ManyResult:
    """Place a batch consistently: each decision consumes capacity (and binds rules) for the next.

    VMs with a ``host`` are moved off it (an evacuation), VMs without are powered on (an HA
    restart, a batch deploy). No backtracking: a VM that fits nowhere once the earlier ones are
    placed is reported unplaced with every host's reason.
    """
    ids = [vm.id for vm in vms]
    if len(set(ids)) != len(ids):
        raise ValueError("place_many: a VM appears twice in the batch")
    st = ClusterState(snapshot, skip_pending_for=ids)
    ex = _exclusions(exclude)
    results = []
    for vm in decision_order(vms):
        r = st.evaluate(vm, ex)
        if r.host is not None:
            st.commit(vm, r.host)
        results.append(r)
    return ManyResult(tuple(results))
