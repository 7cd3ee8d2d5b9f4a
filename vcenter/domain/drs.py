"""DRS: balance a cluster by live migrations, and say why.

``balance(snapshot, settings, demands, history)`` returns a ``DrsPlan``: an ordered list of
``Recommendation`` (move VM from source to target), each with a priority 1-5 and its reasons as
numbers. Nothing here reads a clock or a random source: the caller gives ages ("moved 600 s
ago") instead of timestamps. Beside it: the demand DRS is given, smoothed with its spread
(vcenter.domain.drs_demand), and "what if" a host fails, a demand changes or a rule is added
(vcenter.domain.drs_whatif, which runs this balancer on the changed cluster).

Vocabulary:
- demand: what a running VM wants now, (CPU MHz, memory MiB); a VM without a measured demand
  demands its configured size (vCPUs x core MHz, memory).
- entitlement: what the VM should get given demand, reservations, limits, shares and the pool
  tree (vcenter.domain.pools.entitlements). Without contention and pools it equals the demand
  clipped to [reservation, min(size, limit)].
- capacity of a host: what VMs may get (``cpu_mhz``/``memory_mib`` minus ``reserved_*`` and
  ``used_*``). Load of a host: the sum of its VMs' entitlements / capacity, per resource.
- active host: usable (connected, not in maintenance, not in standby). Only active hosts count
  for the imbalance and only they send or receive VMs.
- imbalance: for each resource the population standard deviation of active hosts' loads;
  the cluster's imbalance is the larger of the two (max, so that a cluster balanced on CPU but
  skewed on memory is still called imbalanced, and a move is judged by the resource that is
  worse). ``DrsPlan`` also carries both per-resource values. Moves are scored on this
  imbalance; but whether the cluster is balanced (the target, and the priority of a move) is
  judged only on the resources that count: those on which some active host's load reaches
  ``comfort`` (0.5) at the start of the pass (if neither does, the more loaded one). A cluster
  whose hosts all have most of their memory free does not migrate VMs to even out memory
  (the note says which resource was not counted).
- threshold (1-5, default 3) -> target imbalance (``TARGETS``)::

      threshold   target   recommendations emitted
      1           -        priority 1 only: rule fixes (mandatory moves); no balancing
      2           0.20     + priority 2: imbalance above 0.20, or a host overloaded (load > 1)
      3           0.015    + priority 3: imbalance above 0.015              (default)
      4           0.008    + priority 4: imbalance above 0.008
      5           0.004    + priority 5: imbalance above 0.004              (aggressive)

  A balancing move made while the imbalance is I gets the priority of the most important band I
  exceeds (2 when I > 0.20 or the source is overloaded, 3 when I > 0.015, ...); threshold T keeps
  balancing while I > target(T) (or, for T >= 2, while a host is overloaded) and emits only
  priorities <= T, as vSphere's migration threshold does. The target says how even the
  threshold wants the hosts; whether a move is worth making is the cost-benefit check's call
  (below), so a low target does not mean many moves: in a cluster of a few large VMs no move
  gains enough long before the target is met (the plan's note says so). The targets of
  thresholds 3-5 were lowered from 0.10/0.05/0.02 when replaying the GCD trace (docs/benchmarks.md,
  "DRS and DPM") showed that a 0.10 target leaves a 16-host cluster three times less even than a
  one-move-per-pass greedy baseline, while smoothed demand and the minimum gain, not the
  target, are what keep the number of moves down.
- priority 1: a move that fixes a rule violation (must rules first, then should rules).
- gain (benefit) of a move: imbalance before - imbalance after. cost: the memory to copy
  (configured memory, MiB). One move changes a standard deviation over n hosts by O(1/n), so
  the thresholds are per host: a move is kept when n x gain >= ``min_gain`` (default 0.04:
  on the GCD replay 0.008 let DRS chase gains that the next sample took back)
  and n x gain - ``cost_per_gib`` (default 0.0004) x GiB copied > 0, n the number of active
  hosts; the move with the best net gain is taken first. Reasons carry the raw gain. While a
  host is overloaded, moves off an overloaded host come first, scored by the overload they
  remove (x n) plus their net gain, and allowed with no gain as long as they make the
  imbalance no worse (a CPU overload under a memory-dominated imbalance is still fixed); and
  no balancing move takes a target's entitlement above its capacity (an overloaded target is
  never the cure). Demand should be smoothed by the caller (``drs_demand.smooth_demands``:
  the product smooths each VM's measured CPU demand, the trace replay its 5-minute samples),
  so that one noisy sample does not trigger a move whose gain is gone by the next pass.
- spread and confidence: a measured demand is an average of noisy samples; ``spread`` (per VM,
  the noise of its samples told apart from their trend: ``demand.noise_spread``, so a climbing
  or stepping demand has none) says how far it may be off. A host's load spread is the root sum of squares of its VMs' spreads (they
  vary independently) over its capacity. A balancing move is judged on pessimistic loads: the
  source ``confidence`` (default 1) spreads lighter and the target as much heavier than
  measured; its gain there (the robust gain) must pass the minimum gain and the cost, and ranks
  the moves. A gain that lies within the noise is not expected to last until the next pass
  (the cost-benefit's duration term: a steady VM's gain lasts, a noisy one's may reverse),
  so DRS does not move a near-idle VM to even out a difference that one sample can undo; with
  no spread given (or confidence 0) the loads are taken as exact. Rule fixes and the relief of
  an overloaded host do not wait on confidence. Reasons carry the robust gain. Confidence is 2
  by default (issue 22: with it off, traces other than the one it was tuned on made 3-4 times
  the greedy baseline's migrations).
- overload risk (when spreads are given): a host needs relief when the probability that its
  next load exceeds its capacity (``overload_risk``: normal around the measured load, its
  spread at least ``RISK_FLOOR``) reaches ``risk_gain`` (default 0.5), and a relief move must
  remove at least ``risk_gain`` of it from source and target together (a VM's spread travels
  with it); a move that only carries the risk to another host, or a tiny VM's move, is not
  made. Without spreads, a measured overload is relieved by any move that lowers it.
- saturated: when the running VMs' demand (clipped to size and limit, as entitlement is) is
  above the active hosts' capacity together on CPU or memory, no balancing move is made (the
  note says so): some host is overloaded wherever the VMs run, a move only carries the
  overload elsewhere, and its copy costs most when nothing is spare. Capacity is the cure (the
  plan's ``wake``, DPM). On the diurnal trace at load 0.85 this cut both the overload and the
  migrations (docs/benchmarks.md, "DRS and DPM").
- anti-oscillation: minimum gain, cost per GiB, per-VM cooldown (a VM moved less than
  ``cooldown_s`` ago is not moved again for balance), a budget of moves per pass, and a VM whose
  migration is in flight is never moved. Must-rule fixes ignore the cooldown, never the in-flight
  rule nor the budget.
- admissible: every target is chosen among the hosts that placement's filters accept for the VM
  (vcenter.domain.placement: capacity, CPU compatibility, datastores, port groups, must rules),
  on per-host aggregates updated after each accepted move, so the whole plan is admissible in
  order. A balancing move never breaks a should-rule that the VM keeps where it is, and never
  takes a target above its capacity minus the HA reserve.
- HA reserve: capacity kept free on every host for failover (``HaReserve``: a fraction of each
  host's capacity and/or fixed MHz / MiB per host). A balancing or rule-fixing move may not eat
  into it (CPU: entitlement, memory: configured size); it is an input (zero until HA's admission
  control fills it).
- automation: manual (recommend only), partial (placement automatic, balancing recommended),
  full (applied); a per-VM override (``manual``/``partial``/``full``/``disabled``) wins. DRS never
  moves a ``disabled`` VM. Each recommendation carries its level and whether it is automatic.

- wake: a standby host DRS asks to power on (``DrsPlan.wake``) when the powered-on hosts cannot
  hold the demand (demand above their capacity less the HA reserve, or an overload no move
  relieves); DPM's power-on path does it (automatically in fully automated clusters). HA wakes
  standby hosts for its restarts on its own (vcenter.domain.ha).

Speed: loads are numpy arrays over hosts; a balancing step scores every (VM on a loaded source,
target) pair at once from the per-resource sums S = sum x and Q = sum x^2 (std after a move is a
closed form in S and Q), checks admissibility lazily from the best pair down, and commits the
move into placement's ``ClusterState`` in place: no copy of the cluster per candidate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, cast

import numpy as np

from vcenter.domain.placement import ClusterState
from vcenter.domain.pools import PoolTree, entitlements
from vcenter.domain.rules import violations
from vcenter.domain.snapshot import CONNECTED, ClusterSnapshot, HostSnapshot, Rule, RuleKind, VmSnapshot

TARGETS: dict[int, float] = {1: float("inf"), 2: 0.20, 3: 0.015, 4: 0.008, 5: 0.004}
OVERLOAD = 1.0  # a host whose entitlement exceeds its capacity (on CPU or memory)
# A resource counts for the target only when some active host's load on it reaches COMFORT (if
# neither does, the more loaded one counts): below it nothing waits for that resource, and
# evening out hosts at 2 % and 9 % of their memory is not worth a migration.
COMFORT = 0.5
EPS = 1e-9

Demand = tuple[float, float]  # (CPU MHz, memory MiB)


class Automation(str, Enum):
    MANUAL = "manual"
    PARTIAL = "partial"
    FULL = "full"
    DISABLED = "disabled"  # per-VM override only: DRS never moves the VM


@dataclass(frozen=True, slots=True)
class HaReserve:
    """Capacity kept free on every host for HA failover: a fraction of the host's capacity and
    fixed amounts, both applied (the larger total wins per host)."""

    fraction: float = 0.0
    cpu_mhz: float = 0.0
    mem_mib: float = 0.0

    def cpu(self, capacity: np.ndarray) -> np.ndarray:
        return np.maximum(capacity * self.fraction, self.cpu_mhz)

    def mem(self, capacity: np.ndarray) -> np.ndarray:
        return np.maximum(capacity * self.fraction, self.mem_mib)

    @property
    def zero(self) -> bool:
        return self.fraction <= 0 and self.cpu_mhz <= 0 and self.mem_mib <= 0


@dataclass(frozen=True, slots=True)
class DrsSettings:
    threshold: int = 3
    automation: Automation | str = Automation.FULL
    vm_overrides: Mapping[str, Automation | str] = field(default_factory=dict)
    cooldown_s: float = 1800.0
    budget: int = 8  # new moves per pass (rule fixes included)
    min_gain: float = 0.04  # per active host (see the module docstring)
    cost_per_gib: float = 0.0004  # per active host
    ha: HaReserve = HaReserve()
    sources: int = 3  # most loaded hosts examined per resource and step
    comfort: float = COMFORT  # a resource counts when some host's load on it reaches this
    confidence: float = 2.0  # spreads a balancing move's gain must survive (module docstring)
    risk_gain: float = 0.5  # overload probability a relief move must remove (noisy loads only)

    def __post_init__(self) -> None:
        if self.threshold not in TARGETS:
            raise ValueError(f"migration threshold {self.threshold} not in 1..5")
        if self.budget < 0:
            raise ValueError("budget must be >= 0")
        if not 0 <= self.confidence <= 5:
            raise ValueError(f"confidence {self.confidence} not in 0..5")

    @property
    def target(self) -> float:
        return TARGETS[self.threshold]

    def level(self, vm_id: str) -> Automation:
        return Automation(self.vm_overrides.get(vm_id, self.automation))


@dataclass(frozen=True, slots=True)
class DrsHistory:
    """Migrations in flight (VM ids) and recent moves (VM id -> seconds since the move ended)."""

    in_flight: frozenset[str] = frozenset()
    recent: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MoveReasons:
    """Why a move, as numbers. Loads are normalised (entitlement / capacity)."""

    imbalance_before: float
    imbalance_after: float
    host: str  # the host relieved (the source): overloaded or most loaded
    host_cpu_load: float  # the source's loads before the move
    host_mem_load: float
    target_cpu_load: float  # the target's loads after the move
    target_mem_load: float
    memory_mib: int  # cost: memory to copy
    gain: float  # benefit: imbalance reduction
    rule: str | None = None  # the rule the move fixes
    rule_must: bool | None = None
    overloaded: bool = False
    robust_gain: float | None = None  # the gain if the loads erred against the move (balancing only)


@dataclass(frozen=True, slots=True)
class Recommendation:
    vm_id: str
    vm_name: str
    source: str
    target: str
    priority: int
    kind: str  # "rule" or "balance"
    automation: Automation
    reasons: MoveReasons

    @property
    def automatic(self) -> bool:
        """Applied without an operator: full automation (cluster or override)."""
        return self.automation == Automation.FULL

    @property
    def reason(self) -> str:
        r = self.reasons
        head = (
            f"fixes {'must' if r.rule_must else 'should'} rule '{r.rule}'"
            if r.rule
            else f"relieves {'overloaded ' if r.overloaded else ''}{r.host} (cpu {r.host_cpu_load:.3f}, mem {r.host_mem_load:.3f})"
        )
        robust = "" if r.robust_gain is None or abs(r.robust_gain - r.gain) < 5e-5 else f", {r.robust_gain:+.4f} within noise"
        return (
            f"{head}; imbalance {r.imbalance_before:.4f} -> {r.imbalance_after:.4f} (gain {r.gain:+.4f}{robust}); "
            f"target load cpu {r.target_cpu_load:.3f} mem {r.target_mem_load:.3f}; copies {r.memory_mib} MiB"
        )

    def to_dict(self) -> dict[str, Any]:
        r = self.reasons
        return {
            "vm": self.vm_id,
            "name": self.vm_name,
            "source": self.source,
            "target": self.target,
            "priority": self.priority,
            "kind": self.kind,
            "automation": self.automation.value,
            "automatic": self.automatic,
            "reasons": {
                "imbalance_before": r.imbalance_before,
                "imbalance_after": r.imbalance_after,
                "host": r.host,
                "host_cpu_load": r.host_cpu_load,
                "host_mem_load": r.host_mem_load,
                "target_cpu_load": r.target_cpu_load,
                "target_mem_load": r.target_mem_load,
                "memory_mib": r.memory_mib,
                "gain": r.gain,
                "rule": r.rule,
                "rule_must": r.rule_must,
                "overloaded": r.overloaded,
                "robust_gain": r.robust_gain,
            },
            "text": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Balance:
    """Loads and imbalance of the active hosts."""

    imbalance: float
    cpu_std: float
    mem_std: float
    loads: dict[str, tuple[float, float]]  # host id -> (cpu load, mem load)

    @property
    def overloaded(self) -> list[str]:
        return [h for h, (c, m) in self.loads.items() if c > OVERLOAD + EPS or m > OVERLOAD + EPS]


@dataclass(frozen=True, slots=True)
class Wake:
    """A standby host DRS wants powered on: the powered-on hosts cannot hold the demand."""

    host: str
    reason: str
    cpu_short_mhz: float  # what the powered-on hosts lack (demand beyond capacity, or the
    mem_short_mib: float  # overload no move could relieve), before this host is woken

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "reason": self.reason, "cpu_short_mhz": self.cpu_short_mhz, "mem_short_mib": self.mem_short_mib}


@dataclass(frozen=True, slots=True)
class DrsPlan:
    recommendations: tuple[Recommendation, ...]
    threshold: int
    target: float
    before: Balance
    after: Balance  # once every recommendation is applied
    skipped: dict[str, str]  # VM id -> why DRS would not move it (in flight, cooldown, disabled)
    unresolved: tuple[str, ...]  # rule violations no admissible move fixes, with the reason
    notes: tuple[str, ...]  # why the pass stopped
    wake: tuple[Wake, ...] = ()  # standby hosts to power on (capacity short)

    @property
    def imbalance_before(self) -> float:
        return self.before.imbalance

    @property
    def imbalance_after(self) -> float:
        return self.after.imbalance

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "target": None if self.target == float("inf") else self.target,
            "imbalance_before": self.before.imbalance,
            "imbalance_after": self.after.imbalance,
            "cpu_std_before": self.before.cpu_std,
            "mem_std_before": self.before.mem_std,
            "cpu_std_after": self.after.cpu_std,
            "mem_std_after": self.after.mem_std,
            "recommendations": [r.to_dict() for r in self.recommendations],
            "skipped": dict(self.skipped),
            "unresolved": list(self.unresolved),
            "notes": list(self.notes),
            "wake": [w.to_dict() for w in self.wake],
        }


# -- entitlement and loads -------------------------------------------------------------------


def core_mhz(snapshot: ClusterSnapshot) -> float:
    """The MHz of one vCPU at full speed (the fastest core of the cluster, as the pool tree uses)."""
    cores = [h.cpu_mhz / h.cores for h in snapshot.hosts if h.cores]
    return max(cores) if cores else 0.0


def host_capacity(h: HostSnapshot) -> tuple[float, float]:
    return (h.cpu_mhz - h.reserved_cpu_mhz - h.used_cpu_mhz, float(h.memory_mib - h.reserved_memory_mib - h.used_memory_mib))


def _flat_fill(amount: float, floors: np.ndarray, caps: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """``pools.water_fill`` for one level of many VMs, vectorised (bisection on the water level)."""
    caps = np.maximum(caps, floors)
    if caps.sum() <= amount + 1e-6:
        return caps
    if floors.sum() >= amount - 1e-6:
        tot = floors.sum()
        return floors * (amount / tot) if tot > 0 else np.zeros_like(floors)
    s = np.where(shares > 0, shares, EPS)
    lo, hi = 0.0, float(np.max(caps / s)) + 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if np.clip(mid * s, floors, caps).sum() < amount:
            lo = mid
        else:
            hi = mid
    return np.clip(hi * s, floors, caps)


def vm_entitlements(snapshot: ClusterSnapshot, demands: Mapping[str, Demand] | None = None) -> dict[str, Demand]:
    """Entitlement of every running VM: ``pools.entitlements`` when pools exist; the same
    water-filling, vectorised, for the flat root pool otherwise (the result is identical)."""
    demands = demands or {}
    active = {h.id for h in snapshot.hosts if h.usable}
    if snapshot.pools:
        return entitlements(PoolTree.from_snapshot(snapshot), None, demands)
    core = core_mhz(snapshot)
    running = [vm for vm in snapshot.vms if vm.host is not None]
    if not running:
        return {}
    cap_cpu = sum(host_capacity(h)[0] for h in snapshot.hosts if h.id in active)
    cap_mem = sum(host_capacity(h)[1] for h in snapshot.hosts if h.id in active)
    out = np.zeros((len(running), 2))
    for ri, amount in enumerate((cap_cpu, cap_mem)):
        floors = np.empty(len(running))
        caps = np.empty(len(running))
        shares = np.empty(len(running))
        for k, vm in enumerate(running):
            size = vm.vcpus * core if ri == 0 else float(vm.memory_mib)
            d = demands.get(vm.id)
            dem = min(size, d[ri]) if d is not None else size
            lim = vm.cpu_limit_mhz if ri == 0 else vm.memory_limit_mib
            if lim is not None:
                dem = min(dem, lim)
            res = vm.cpu_reservation_mhz if ri == 0 else float(vm.memory_reservation_mib)
            floors[k] = res
            caps[k] = max(res, dem)
            if ri == 0:
                shares[k] = vm.cpu_shares if vm.cpu_shares is not None else 1000.0 * vm.vcpus
            else:
                shares[k] = vm.memory_shares if vm.memory_shares is not None else 10.0 * vm.memory_mib
        out[:, ri] = _flat_fill(amount, floors, caps, shares)
    return {vm.id: (float(out[k, 0]), float(out[k, 1])) for k, vm in enumerate(running)}


def _std(x: np.ndarray) -> float:
    return float(np.std(x)) if x.size else 0.0


RISK_FLOOR = 0.02  # the least spread of a host's load (load units) when judging its risk


def _phi(z: np.ndarray) -> np.ndarray:
    """The standard normal distribution function (Abramowitz-Stegun 7.1.26, error < 1.5e-7)."""
    a = np.abs(z) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * a)
    erf = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * np.exp(-a * a)
    return np.asarray(0.5 * (1.0 + np.sign(z) * erf), dtype=float)


def _host(vm: VmSnapshot) -> str:
    """The host of a VM DRS weighs: DRS considers running VMs only, which always have one."""
    return cast(str, vm.host)


def overload_risk(load: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Probability that a host's next load exceeds its capacity, per host (the larger over CPU
    and memory): its load ~ normal(measured load, spread), the spread at least ``RISK_FLOOR``.
    ``load`` and ``sigma`` are (... x 2) in load units."""
    z = (load - OVERLOAD) / np.maximum(sigma, RISK_FLOOR)
    return np.asarray(_phi(z).max(axis=-1), dtype=float)


class _Loads:
    """Per-host entitlement sums, capacities and VM membership, updated in place on a move."""

    def __init__(self, snapshot: ClusterSnapshot, ents: Mapping[str, Demand], st: ClusterState, comfort: float = 0.0, spread: Mapping[str, Demand] | None = None) -> None:
        self.ids = st.ids
        n = st.n
        # A dedicated HA failover host (kept empty for HA restarts) neither counts for balance
        # nor receives VMs (placement's FailoverHostFilter refuses it as a target too).
        self.active = np.array([h.usable and not h.failover for h in snapshot.hosts], dtype=bool)
        caps = np.array([host_capacity(h) for h in snapshot.hosts], dtype=float).reshape(n, 2)
        self.cap = np.where(caps > 0, caps, EPS)
        self.load = np.zeros((n, 2))
        self.vms_on: list[list[VmSnapshot]] = [[] for _ in range(n)]
        self.ent: dict[str, np.ndarray] = {}
        # Sum of the VMs' squared spreads per host and resource (independent noise adds in variance).
        self.var = np.zeros((n, 2))
        self.vm_var: dict[str, np.ndarray] = {}
        spread = spread or {}
        for vm in snapshot.vms:
            i = st.index.get(vm.host) if vm.host is not None else None
            if i is None:
                continue
            e = np.array(ents.get(vm.id, (0.0, 0.0)), dtype=float)
            self.ent[vm.id] = e
            self.load[i] += e
            self.vms_on[i].append(vm)
            sp = spread.get(vm.id)
            if sp is not None:
                v = np.square(np.asarray(sp, dtype=float))
                self.vm_var[vm.id] = v
                self.var[i] += v
        self.noisy = bool((self.var > 0).any())  # spreads given: overload is judged as a risk
        # The resources that count (see ``COMFORT``), fixed for the pass from its starting loads.
        self.counted = np.array([True, True])
        a = self.x()[self.active]
        if comfort > 0 and a.size:
            peak = a.max(axis=0)
            self.counted = peak >= comfort - EPS
            if not self.counted.any():
                self.counted[int(np.argmax(peak))] = True

    def x(self) -> np.ndarray:
        return self.load / self.cap

    def balance(self) -> Balance:
        x = self.x()
        a = x[self.active]
        cs, ms = _std(a[:, 0]), _std(a[:, 1])
        loads = {self.ids[i]: (float(x[i, 0]), float(x[i, 1])) for i in np.flatnonzero(self.active).tolist()}
        return Balance(max(cs, ms), cs, ms, loads)

    def imbalance(self) -> float:
        a = self.x()[self.active]
        return max(_std(a[:, r]) for r in (0, 1) if self.counted[r]) if a.size else 0.0

    def imbalance_all(self) -> float:
        """Both resources, counted or not: what a move is scored on."""
        a = self.x()[self.active]
        return max(_std(a[:, 0]), _std(a[:, 1])) if a.size else 0.0

    def after(self, src: int, ent: np.ndarray, targets: np.ndarray, resources: tuple[int, ...] = (0, 1)) -> np.ndarray:
        """Imbalance (the larger std over ``resources``) after moving VMs with entitlements
        ``ent`` (k x 2) from ``src`` to each of ``targets`` (m host indices): a k x m matrix,
        from the sums S and Q only."""
        return self._moved(src, ent, targets, resources, None)[1]

    def risk(self) -> np.ndarray:
        """Each host's overload risk (``overload_risk``), n."""
        return overload_risk(self.x(), self.sigma())

    def risk_relief(self, src: int, ent: np.ndarray, var: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Overload risk removed by moving VMs (entitlements ``ent``, squared spreads ``var``,
        k x 2) from ``src`` to each of ``targets``: source's and target's risk before minus
        after (k x m); a VM's spread travels with it."""
        x, cap = self.x(), self.cap
        r0 = overload_risk(x, self.sigma())
        xs = x[src][None, :] - ent / cap[src][None, :]
        ss = np.sqrt(np.maximum(self.var[src][None, :] - var, 0.0)) / cap[src][None, :]
        rs = overload_risk(xs, ss)  # k
        xt = x[targets][None, :, :] + ent[:, None, :] / cap[targets][None, :, :]
        st = np.sqrt(np.maximum(self.var[targets][None, :, :] + var[:, None, :], 0.0)) / cap[targets][None, :, :]
        rt = overload_risk(xt, st)  # k x m
        return np.asarray((r0[src] + r0[targets][None, :]) - (rs[:, None] + rt), dtype=float)

    def sigma(self) -> np.ndarray:
        """Each host's load spread (n x 2, in load units)."""
        return np.sqrt(np.maximum(self.var, 0.0)) / self.cap

    def robust_gain(self, src: int, ent: np.ndarray, targets: np.ndarray, confidence: float, resources: tuple[int, ...] = (0, 1)) -> np.ndarray:
        """Imbalance gain (k x m, as ``after``) on pessimistic loads: the source ``confidence``
        spreads lighter and each target as much heavier than measured. Equals the plain gain
        when no host has a spread."""
        before, after = self._moved(src, ent, targets, resources, self.sigma() * confidence)
        return np.asarray(before[None, :] - after, dtype=float)

    def _moved(self, src: int, ent: np.ndarray, targets: np.ndarray, resources: tuple[int, ...], shift: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(imbalance before, per target (m); imbalance after each move, k x m), with the source
        ``shift`` lighter and each target ``shift`` heavier than measured (n x 2; None: as
        measured). A move changes two hosts' loads, so the std after it follows from the sums
        S = sum x and Q = sum x^2 over active hosts without touching the others."""
        act = np.flatnonzero(self.active)
        n = act.size
        x = self.x()
        xa = x[act]
        S = xa.sum(axis=0)
        Q = (xa * xa).sum(axis=0)
        before = np.zeros(targets.size)
        after = np.zeros((ent.shape[0], targets.size))
        for r in resources:
            xs, xt = x[src, r], x[targets, r]
            if shift is None:
                ps, pt, s1, q1 = xs, xt, S[r], Q[r]
            else:
                ps = xs - shift[src, r]  # pessimistic source load (scalar)
                pt = xt + shift[targets, r]  # pessimistic target loads (m)
                s1 = S[r] - xs + ps - xt + pt
                q1 = Q[r] - xs * xs + ps * ps - xt * xt + pt * pt
            before = np.maximum(before, np.sqrt(np.maximum(q1 / n - (s1 / n) ** 2, 0.0)))
            ps2 = ps - ent[:, r] / self.cap[src, r]  # k
            pt2 = pt[None, :] + ent[:, r][:, None] / self.cap[targets, r][None, :]  # k x m
            s2 = s1 - ps + ps2[:, None] - pt[None, :] + pt2
            q2 = q1 - ps * ps + (ps2 * ps2)[:, None] - (pt * pt)[None, :] + pt2 * pt2
            after = np.maximum(after, np.sqrt(np.maximum(q2 / n - (s2 / n) ** 2, 0.0)))
        return before, after

    def move(self, vm: VmSnapshot, src: int, dst: int) -> None:
        e = self.ent[vm.id]
        self.load[src] -= e
        self.load[dst] += e
        v = self.vm_var.get(vm.id)
        if v is not None:
            self.var[src] -= v
            self.var[dst] += v
        self.vms_on[src] = [v for v in self.vms_on[src] if v.id != vm.id]
        self.vms_on[dst].append(replace(vm, host=self.ids[dst]))


# -- the balancer ----------------------------------------------------------------------------


class _Pass:
    def __init__(self, snapshot: ClusterSnapshot, settings: DrsSettings, demands: Mapping[str, Demand] | None, history: DrsHistory | None, spread: Mapping[str, Demand] | None = None) -> None:
        self.snapshot = snapshot
        self.settings = settings
        self.history = history or DrsHistory()
        self.st = ClusterState(snapshot)
        self.demands = demands or {}
        self.loads = _Loads(snapshot, vm_entitlements(snapshot, demands), self.st, settings.comfort, spread)
        self.vms = {vm.id: vm for vm in snapshot.vms}
        self.moved: dict[str, VmSnapshot] = {}  # vm id -> VM as it now is (host = target)
        self.recs: list[Recommendation] = []
        self.skipped: dict[str, str] = {}
        self.unresolved: list[str] = []
        self.notes: list[str] = []
        ha = settings.ha
        n = self.st.n
        cap = self.loads.cap
        if ha.zero:
            self.ha_cpu = np.zeros(n)
            self.ha_mem = np.zeros(n)
        else:
            self.ha_cpu = ha.cpu(cap[:, 0])
            self.ha_mem = ha.mem(cap[:, 1])

    # -- who may move ------------------------------------------------------------------
    def current(self, vm_id: str) -> VmSnapshot:
        return self.moved.get(vm_id) or self.vms[vm_id]

    def why_not(self, vm_id: str, for_must_fix: bool = False) -> str | None:
        if vm_id in self.moved:
            return "already moved in this pass"
        if vm_id in self.history.in_flight:
            return "migration in flight"
        if self.settings.level(vm_id) == Automation.DISABLED:
            return "DRS disabled for this VM"
        age = self.history.recent.get(vm_id)
        if not for_must_fix and age is not None and age < self.settings.cooldown_s:
            return f"moved {age:.0f} s ago (cooldown {self.settings.cooldown_s:.0f} s)"
        return None

    def budget_left(self) -> int:
        return self.settings.budget - len(self.recs)

    # -- admissibility -----------------------------------------------------------------
    def admissible(self, vm: VmSnapshot, keep: Rule | None = None, drop: Rule | None = None) -> tuple[np.ndarray, str]:
        """Mask of hosts placement's filters accept for ``vm`` (active hosts, HA reserve kept),
        where no should-rule the VM keeps now is newly broken; and placement's reason line."""
        st = self.st
        patched: dict[str, list[Rule]] = {}
        if drop is not None:  # fixing an affinity rule: its partners are split, ignore it here
            for v in drop.vms:
                lst = st.rules_by_vm.get(v)
                if lst is not None:
                    patched[v] = lst
                    st.rules_by_vm[v] = [r for r in lst if r.name != drop.name]
        try:
            res = st.evaluate(vm)
            checks = st.rule_checks(vm)
        finally:
            for v, lst in patched.items():
                st.rules_by_vm[v] = lst
            st._checks = None
        mask = np.zeros(st.n, dtype=bool)
        for cand in res.candidates:
            mask[st.index[cand.host_id]] = True
        mask &= self.loads.active
        src = st.index[_host(vm)]
        for c in checks:
            if c.rule.must:
                continue
            if keep is not None and c.rule.name == keep.name:
                mask &= ~c.broken
            elif not c.broken[src]:
                mask &= ~c.broken
        if not self.settings.ha.zero:
            e = self.loads.ent[vm.id]
            cpu_ok = self.loads.load[:, 0] + e[0] <= self.loads.cap[:, 0] - self.ha_cpu + 1e-6
            mem_ok = st.mem_used + vm.memory_mib <= st.mem_total - self.ha_mem + 1e-6
            mask &= cpu_ok & mem_ok
        return mask, res.reason

    # -- recording a move --------------------------------------------------------------
    def commit(self, vm: VmSnapshot, dst: int, priority: int, kind: str, before: float, after: float, rule: Rule | None = None, overloaded: bool = False, robust_gain: float | None = None) -> None:
        st, L = self.st, self.loads
        src = st.index[_host(vm)]
        x = L.x()
        hc, hm = float(x[src, 0]), float(x[src, 1])
        st.commit(vm, st.ids[dst])
        L.move(vm, src, dst)
        x2 = L.x()
        moved = replace(vm, host=st.ids[dst])
        self.moved[vm.id] = moved
        reasons = MoveReasons(
            imbalance_before=before,
            imbalance_after=after,
            host=st.ids[src],
            host_cpu_load=hc,
            host_mem_load=hm,
            target_cpu_load=float(x2[dst, 0]),
            target_mem_load=float(x2[dst, 1]),
            memory_mib=vm.memory_mib,
            gain=before - after,
            rule=rule.name if rule else None,
            rule_must=rule.must if rule else None,
            overloaded=overloaded,
            robust_gain=robust_gain,
        )
        level = self.settings.level(vm.id)
        self.recs.append(Recommendation(vm.id, vm.label, st.ids[src], st.ids[dst], priority, kind, level, reasons))

    def best_target(self, vm: VmSnapshot, mask: np.ndarray) -> tuple[int, float] | None:
        targets = np.flatnonzero(mask)
        if targets.size == 0:
            return None
        src = self.st.index[_host(vm)]
        if self.loads.active[src]:
            after = self.loads.after(src, self.loads.ent[vm.id][None, :], targets)[0]
        else:
            after = np.zeros(targets.size)
        k = int(np.lexsort((targets, np.round(after, 12)))[0])
        return int(targets[k]), float(after[k])

    # -- phase 1: rule violations ----------------------------------------------------------
    def fix_rules(self) -> None:
        vs = violations(self.snapshot)
        vs.sort(key=lambda v: not v.must)  # must first, stable otherwise
        rules = {r.name: r for r in self.snapshot.rules}
        done: set[tuple[str, tuple[str, ...]]] = set()
        for v in vs:
            rule = rules[v.rule]
            key = (rule.name, v.hosts)
            if key in done:
                continue
            done.add(key)
            if rule.kind == RuleKind.AFFINITY:
                self._fix_affinity(rule)
            elif rule.kind == RuleKind.ANTI_AFFINITY:
                self._fix_anti_affinity(rule, v.hosts[0])
            else:
                for vm_id in v.vms:
                    self._fix_one(rule, vm_id)

    def _where(self, vm_id: str) -> str | None:
        return self.current(vm_id).host

    def _fix_one(self, rule: Rule, vm_id: str, drop: Rule | None = None, only: int | None = None) -> bool:
        vm = self.current(vm_id)
        if vm.host is None or vm.host not in self.st.index:
            return False
        why = self.why_not(vm_id, for_must_fix=rule.must)
        if why:
            self.unresolved.append(f"rule '{rule.name}': {vm.label} not moved: {why}")
            self.skipped.setdefault(vm_id, why)
            return False
        if self.budget_left() <= 0:
            self.unresolved.append(f"rule '{rule.name}': {vm.label} not moved: migration budget of {self.settings.budget} reached")
            return False
        mask, reason = self.admissible(vm, keep=None if drop else rule, drop=drop)
        if only is not None:
            keep_only = np.zeros_like(mask)
            keep_only[only] = True
            mask &= keep_only
        best = self.best_target(vm, mask)
        if best is None:
            self.unresolved.append(f"rule '{rule.name}': no admissible host for {vm.label}: {reason}")
            return False
        before = self.loads.imbalance()
        dst, after = best
        self.commit(vm, dst, 1, "rule", before, after, rule=rule)
        return True

    def _fix_anti_affinity(self, rule: Rule, host: str) -> None:
        together = sorted((self.current(v) for v in rule.vms if v in self.vms and self._where(v) == host), key=lambda v: v.id)
        if len(together) < 2:
            return
        # Keep the VM that cannot move (in flight, disabled) or else the largest; move the rest.
        keep = sorted(together, key=lambda v: (self.why_not(v.id, rule.must) is None, -v.memory_mib, v.id))[0]
        for vm in together:
            if vm.id != keep.id:
                self._fix_one(rule, vm.id)

    def _fix_affinity(self, rule: Rule) -> None:
        members = [self.current(v) for v in sorted(rule.vms) if v in self.vms and self._where(v) is not None]
        by_host: dict[str, list[VmSnapshot]] = {}
        for vm in members:
            by_host.setdefault(_host(vm), []).append(vm)
        if len(by_host) < 2:
            return
        order = sorted(by_host, key=lambda h: (-len(by_host[h]), -sum(v.memory_mib for v in by_host[h]), self.st.index.get(h, 0)))
        gather = order[0]
        for h in order[1:]:
            for vm in by_host[h]:
                self._fix_one(rule, vm.id, drop=rule, only=self.st.index[gather])

    # -- phase 2: balance ------------------------------------------------------------------
    def priority_for(self, imbalance: float, overloaded: bool) -> int:
        p = 6
        for t in (5, 4, 3, 2):
            if imbalance > TARGETS[t] + EPS:
                p = t
        if overloaded:
            p = min(p, 2)
        return p

    def saturated(self) -> str | None:
        """Why balancing is pointless, or None: the running VMs' demand is above what the active
        hosts hold together, so some host is overloaded wherever the VMs run. A move then only
        carries the overload to another host, and its copy costs most when nothing is spare;
        the cure is capacity (the plan's ``wake``), not balance."""
        act = np.flatnonzero(self.loads.active)
        if act.size < 2:
            return None
        dem = running_demand(self.snapshot, self.demands)
        cap = self.loads.cap[act].sum(axis=0)
        if not (dem >= cap * OVERLOAD - EPS).any():
            return None
        return f"saturated: demand cpu {dem[0]:.0f} of {cap[0]:.0f} MHz, memory {dem[1]:.0f} of {cap[1]:.0f} MiB on the active hosts; no move ends an overload"

    def balance(self) -> None:
        s = self.settings
        L = self.loads
        if s.threshold < 2:
            self.notes.append("threshold 1: rule fixes only, no balancing")
            return
        attempts_cap = 400
        saturated = self.saturated()
        while True:
            if self.budget_left() <= 0:
                self.notes.append(f"stopped: migration budget of {s.budget} reached")
                return
            x = L.x()
            act = np.flatnonzero(L.active)
            if act.size < 2:
                self.notes.append("fewer than two active hosts: nothing to balance")
                return
            before = L.imbalance()  # what the target is checked against (counted resources)
            whole = L.imbalance_all()  # what moves are scored on (both resources)
            if L.noisy and s.risk_gain > 0:
                # With spreads, a host needs relief when it is likely to be overloaded next
                # (not merely measured above capacity once): its overload risk.
                risk = L.risk()
                over = [i for i in act.tolist() if risk[i] >= s.risk_gain - EPS]
            else:
                risk = None
                over = [i for i in act.tolist() if x[i].max() > OVERLOAD + EPS]
            if before <= s.target + EPS and not over:
                if L.counted.all():
                    self.notes.append(f"balanced: imbalance {before:.4f} <= target {s.target:.4f}")
                else:
                    r = int(np.flatnonzero(L.counted)[0])
                    self.notes.append(f"balanced: {('cpu', 'memory')[r]} imbalance {before:.4f} <= target {s.target:.4f} ({('cpu', 'memory')[1 - r]} not counted: no host at {s.comfort:.0%} of it)")
                return
            if saturated:
                self.notes.append(saturated)
                return
            # Sources: the most overloaded hosts, and (above target) the most loaded per resource
            # among those above the mean.
            over_sorted = sorted(over, key=lambda i: (-float(x[i].max()), i))
            sources = over_sorted[: 2 * s.sources]
            if before > s.target + EPS:
                for r in (0, 1):
                    xa = x[act, r]
                    order = act[np.argsort(-xa, kind="stable")]
                    mean = float(xa.mean())
                    sources += [i for i in order[: s.sources].tolist() if x[i, r] > mean + EPS]
            sources = list(dict.fromkeys(sources))
            st = self.st
            free_mem = st.mem_total - st.mem_used - self.ha_mem
            free_vcpu = st.vcpu_total - st.vcpu_used
            parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
            movers: list[VmSnapshot] = []
            for src in sources:
                movable = []
                for vm in L.vms_on[src]:
                    why = self.why_not(vm.id)
                    if why:
                        if vm.id not in self.moved:
                            self.skipped.setdefault(vm.id, why)
                    else:
                        movable.append(vm)
                if not movable:
                    continue
                targets = act[act != src]
                ent = np.array([L.ent[v.id] for v in movable])
                after = L.after(src, ent, targets)
                # One move shifts a standard deviation over n hosts by O(1/n): judge the gain
                # per host so that min_gain and cost_per_gib mean the same at 4 and 96 hosts.
                # The gain that survives the loads' noise (see "spread and confidence").
                rgain = L.robust_gain(src, ent, targets, s.confidence) if s.confidence > 0 else whole - after
                ngain = np.minimum(whole - after, rgain) * act.size
                mem = np.array([v.memory_mib for v in movable], dtype=float)[:, None]
                vcpu = np.array([v.vcpus for v in movable], dtype=float)[:, None]
                net = ngain - mem / 1024.0 * s.cost_per_gib

                fits = (free_mem[targets][None, :] >= mem - 1e-6) & (free_vcpu[targets][None, :] >= vcpu)
                # Never cure one host by overloading another (entitlement above capacity).
                fits &= ((L.load[targets][None, :, :] + ent[:, None, :]) <= L.cap[targets][None, :, :] * OVERLOAD + 1e-6).all(axis=2)
                ok = (ngain >= s.min_gain - EPS) & (net > EPS) & fits
                score = net

                if src in over and risk is not None:
                    # Off a host at risk the benefit is the overload risk removed from the source
                    # and the target together (a move that only carries the risk elsewhere gains
                    # nothing); it must remove at least ``risk_gain`` and not worsen the imbalance.
                    var = np.array([L.vm_var.get(v.id, np.zeros(2)) for v in movable])
                    relief = L.risk_relief(src, ent, var, targets)
                    score = relief * act.size + net
                    ok |= (relief >= s.risk_gain - EPS) & (after <= whole + EPS) & fits
                elif src in over:
                    # Off an overloaded host the benefit is the overload removed (per host, as
                    # the gain), whatever the standard deviation says: when memory dominates the
                    # imbalance, a move that ends a CPU overload may not change it at all. Such
                    # a move must still not make the imbalance worse.
                    xs = x[src]
                    xs2 = xs[None, :] - ent / L.cap[src][None, :]
                    relief = (np.maximum(xs - OVERLOAD, 0.0).sum() - np.maximum(xs2 - OVERLOAD, 0.0).sum(axis=1))[:, None]
                    score = relief * act.size + net
                    ok |= (relief > EPS) & (after <= whole + EPS) & (score > EPS) & fits
                ks, ms = np.nonzero(ok)
                if ks.size:
                    base = len(movers)
                    movers.extend(movable)
                    parts.append((score[ks, ms], after[ks, ms], np.full(ks.size, src), targets[ms], ks + base, rgain[ks, ms]))
            if over and any(int(p[2][0]) in over for p in parts):
                # A host is overloaded: relieve it first, even if another move would even the
                # cluster more.
                parts = [p for p in parts if int(p[2][0]) in over]
            if not parts:
                self.notes.append(f"stopped: no move gains at least {s.min_gain / act.size:.4f} net of cost (imbalance {whole:.4f})")
                return
            net_a, after_a, src_a, dst_a, k_a, rgain_a = (np.concatenate(c) for c in zip(*parts))
            # Best net gain first; ties: source, VM, target in snapshot order (deterministic).
            order = np.lexsort((dst_a, k_a, src_a, -np.round(net_a, 12)))[:attempts_cap]
            masks: dict[str, np.ndarray] = {}
            chosen = None
            for j in order.tolist():
                vm = movers[int(k_a[j])]
                m = masks.get(vm.id)
                if m is None:
                    m = masks[vm.id] = self.admissible(vm)[0]
                if m[int(dst_a[j])]:
                    chosen = (float(rgain_a[j]), float(after_a[j]), int(src_a[j]), int(dst_a[j]), vm)
                    break
            if chosen is None:
                self.notes.append(f"stopped: no admissible move gains at least {s.min_gain / act.size:.4f} (imbalance {whole:.4f})")
                return
            best_rgain, best_after, src, dst, vm = chosen
            overloaded = src in over
            p = self.priority_for(before, overloaded)
            if p > s.threshold:  # cannot happen while before > target; kept as a guard
                self.notes.append(f"stopped: next move would be priority {p} > threshold {s.threshold}")
                return
            self.commit(vm, dst, p, "balance", whole, best_after, overloaded=overloaded, robust_gain=min(best_rgain, whole - best_after))


def balance(
    snapshot: ClusterSnapshot,
    settings: DrsSettings | None = None,
    demands: Mapping[str, Demand] | None = None,
    history: DrsHistory | None = None,
    spread: Mapping[str, Demand] | None = None,
) -> DrsPlan:
    """One DRS pass: rule fixes (priority 1, must rules first), then balancing moves, best net
    gain first, until the imbalance meets the threshold's target, the budget is spent or no
    admissible move gains enough. ``spread`` (VM id -> spread of its demand, as ``Demand``)
    makes the gains noise-aware. Recommendations are in the order they must be applied."""
    settings = settings or DrsSettings()
    p = _Pass(snapshot, settings, demands, history, spread)
    before = p.loads.balance()
    p.fix_rules()
    p.balance()
    return DrsPlan(tuple(p.recs), settings.threshold, settings.target, before, p.loads.balance(), dict(sorted(p.skipped.items())), tuple(p.unresolved), tuple(p.notes), _wake(p, demands or {}))


def _wake(p: _Pass, demands: Mapping[str, Demand]) -> tuple[Wake, ...]:
    """Standby hosts to power on because the powered-on ones cannot hold the demand: either the
    running VMs' demand (clipped to their size and limit, as entitlement is) exceeds the active
    hosts' capacity less the HA reserve, or a host is still overloaded once the plan's moves are
    made (no admissible move relieves it). Enough standby hosts to cover the shortfall, largest
    CPU capacity first (snapshot order on ties). Independent of the migration threshold: this
    is capacity, not balance. A host in maintenance or disconnected is never woken."""
    snap = p.snapshot
    standby = [h for h in snap.hosts if h.standby and not h.maintenance and h.connection == CONNECTED]
    if not standby:
        return ()
    L = p.loads
    act = L.active
    cap = np.array([L.cap[act, 0].sum() - p.ha_cpu[act].sum(), L.cap[act, 1].sum() - p.ha_mem[act].sum()]) if act.any() else np.zeros(2)
    dem = running_demand(snap, demands)
    short = np.maximum(dem - cap, 0.0)
    excess = np.maximum(L.load - L.cap * OVERLOAD, 0.0)[act].sum(axis=0) if act.any() else np.zeros(2)
    need = np.maximum(short, excess)
    if (need <= 1e-6).all():
        return ()
    if (short > 1e-6).any():
        why = f"powered-on hosts cannot hold the demand: CPU {dem[0]:.0f} of {cap[0]:.0f} MHz, memory {dem[1]:.0f} of {cap[1]:.0f} MiB usable"
    else:
        over = [L.ids[i] for i in np.flatnonzero(act) if (L.load[i] > L.cap[i] * OVERLOAD + 1e-6).any()]
        why = f"{', '.join(over)} stay overloaded after the plan (CPU {excess[0]:.0f} MHz, memory {excess[1]:.0f} MiB over); no move relieves them"
    order = sorted(standby, key=lambda h: (-host_capacity(h)[0], snap.hosts.index(h)))
    ha = p.settings.ha
    out: list[Wake] = []
    got = np.zeros(2)
    for h in order:
        if (got >= need - 1e-6).all():
            break
        c = np.array(host_capacity(h), dtype=float)
        if not ha.zero:
            c = c - np.array([ha.cpu(c[:1])[0], ha.mem(c[1:])[0]])
        out.append(Wake(h.id, why, float(need[0] - got[0]), float(need[1] - got[1])))
        got += np.maximum(c, 0.0)
    return tuple(out)


def running_demand(snap: ClusterSnapshot, demands: Mapping[str, Demand]) -> np.ndarray:
    """The running VMs' demand (CPU MHz, memory MiB), each clipped to its size and limit and
    raised to its reservation, as entitlement is."""
    core = core_mhz(snap)
    dem = np.zeros(2)
    for vm in snap.vms:
        if vm.host is None:
            continue
        d = demands.get(vm.id)
        cpu = min(vm.vcpus * core, d[0]) if d is not None else vm.vcpus * core
        mem = min(float(vm.memory_mib), d[1]) if d is not None else float(vm.memory_mib)
        if vm.cpu_limit_mhz is not None:
            cpu = min(cpu, vm.cpu_limit_mhz)
        if vm.memory_limit_mib is not None:
            mem = min(mem, float(vm.memory_limit_mib))
        dem += (max(cpu, vm.cpu_reservation_mhz), max(mem, float(vm.memory_reservation_mib)))
    return dem


def imbalance_of(snapshot: ClusterSnapshot, demands: Mapping[str, Demand] | None = None) -> Balance:
    """The balance of a snapshot as DRS sees it (loads from entitlements)."""
    st = ClusterState(snapshot)
    return _Loads(snapshot, vm_entitlements(snapshot, demands), st).balance()


def apply_plan(snapshot: ClusterSnapshot, plan: DrsPlan | Iterable[Recommendation]) -> ClusterSnapshot:
    """The snapshot once the plan's moves are made (for what-if, simulations and tests)."""
    recs = plan.recommendations if isinstance(plan, DrsPlan) else tuple(plan)
    where = {r.vm_id: r.target for r in recs}
    return replace(snapshot, vms=tuple(replace(vm, host=where[vm.id]) if vm.id in where else vm for vm in snapshot.vms))
