"""DPM: keep powered-on hosts' utilisation in a target band by powering hosts off and on.

``decide(snapshot, settings, samples, history)`` returns a ``DpmPlan``: power-off
recommendations (with the evacuation plan of the host) when demand stayed below the band over
the long window, power-on recommendations (a standby host, chosen with a reason) when it stayed
above over the short window. The caller passes recent demand samples and ages; nothing here
reads a clock.

Vocabulary:
- sample: demand of every running VM at one instant, {VM id: (CPU MHz, memory MiB)}, oldest
  first, one every ``sample_s`` seconds; a VM missing from a sample demands its configured size.
- effective capacity: the sum over powered-on active hosts (connected, not in maintenance, not
  in standby) of their capacity minus the HA reserve (``drs.HaReserve``): DPM never counts the
  capacity HA keeps for failover.
- utilisation U of a sample: total demand / effective capacity, per resource; the cluster's U is
  the larger of CPU and memory.
- band: [target - tolerance, target + tolerance], vSphere's 63 % +/- 18 % = [45 %, 81 %].
- power-off: every sample of the long window (``off_window_s``, default 40 min) has U below the
  band, and the peak demand of that window (or the demand expected one boot time ahead, if
  higher) fits in the remaining effective capacity at or below ``fill`` (0.72: between the target
  and the band's top; the margin to the top is the hysteresis, so a power-off never makes the
  next pass want a power-on). Several hosts go in one pass (``max_off_per_pass``, 8) while the
  rest still holds that peak at the fill: a long low demand is consolidated at once.
  ``ha_hosts`` hosts' worth of capacity (the largest) is kept on beyond the demand for HA. The host's VMs must all find a place with
  ``place_many`` (placement's filters: capacity, must rules...) and the targets keep their HA
  reserve of memory; otherwise the next candidate host is tried, with the reason recorded.
  Candidates: fewest memory to evacuate first, then least loaded. At most ``max_off_per_pass``
  hosts per pass, never below ``min_hosts_on``.
- power-on: every sample of the short window (``on_window_s``, default 5 min) has U above the
  band, or the demand climbs so that one boot time ahead (``wake_s``, default 300 s as a server
  boot; the climb of the last three samples extrapolated) U would be above the band while it is
  already above the target: the host is asked early enough to be up before the overload. Standby hosts are woken until the window's peak demand fits at or below the target: the
  smallest host that achieves it, else the largest (fewest wake-ups), at most
  ``max_on_per_pass``.
- no flapping: the target margin above, plus a per-host cooldown (a host powered on or off less
  than ``host_cooldown_s`` ago is not powered off), plus no power-off while a migration in flight
  or a pending reservation touches the host. A power-on is never delayed by the cooldown:
  demand above the band is answered at once (the margin keeps it from undoing a power-off
  that was justified).
- priority: power-on 1 when demand exceeds the effective capacity (U > 1), else 2; power-off 3
  when the remaining hosts stay below the band, else 4.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

from vcenter.domain.drs import Automation, Demand, HaReserve, core_mhz, host_capacity
from vcenter.domain.placement import place_many
from vcenter.domain.rules import violations
from vcenter.domain.snapshot import ClusterSnapshot, HostSnapshot

EPS = 1e-9


@dataclass(frozen=True, slots=True)
class DpmSettings:
    target: float = 0.63
    tolerance: float = 0.18
    sample_s: float = 300.0
    off_window_s: float = 2400.0
    on_window_s: float = 300.0
    min_hosts_on: int = 1
    host_cooldown_s: float = 1800.0
    max_off_per_pass: int = 8
    max_on_per_pass: int = 4
    # A power-off keeps the window's peak at or below this utilisation of the hosts left on
    # (between the target and the band's top: the margin to the top is the hysteresis).
    fill: float = 0.72
    wake_s: float = 300.0  # a standby host's boot time: a power-on is asked this much ahead
    ha_hosts: int = 0  # hosts' worth of capacity kept on beyond the demand (HA failover)
    automation: Automation | str = Automation.FULL
    host_overrides: Mapping[str, Automation | str] = field(default_factory=dict)
    ha: HaReserve = HaReserve()

    @property
    def low(self) -> float:
        return self.target - self.tolerance

    @property
    def high(self) -> float:
        return self.target + self.tolerance

    def samples_for(self, window_s: float) -> int:
        return max(1, math.ceil(window_s / self.sample_s - 1e-9))

    def level(self, host_id: str) -> Automation:
        return Automation(self.host_overrides.get(host_id, self.automation))


@dataclass(frozen=True, slots=True)
class DpmHistory:
    """Recent power actions (host id -> seconds since) and migrations in flight (VM ids)."""

    recent: Mapping[str, float] = field(default_factory=dict)
    in_flight: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class PowerReasons:
    utilisation: float  # the window's statistic: peak (power-off) or lowest (power-on) U
    cpu_utilisation: float  # of the same sample
    mem_utilisation: float
    window_samples: int
    low: float
    high: float
    target: float
    predicted: float  # U of the window's peak demand once the action is done
    capacity_before: tuple[float, float]  # effective (CPU MHz, memory MiB)
    capacity_after: tuple[float, float]
    ha_reserved: tuple[float, float]  # held back on the hosts on after the action
    vms_to_move: int = 0
    memory_to_move_mib: int = 0
    fill: float | None = None  # power-off: the utilisation the hosts left on may reach
    lead: float | None = None  # U of the demand expected one boot time ahead (``wake_s``)


@dataclass(frozen=True, slots=True)
class PowerRecommendation:
    action: str  # "power-off" or "power-on"
    host: str
    priority: int
    automation: Automation
    reasons: PowerReasons
    evacuation: tuple[tuple[str, str], ...] = ()  # (VM id, target host) in order

    @property
    def automatic(self) -> bool:
        return self.automation == Automation.FULL

    @property
    def reason(self) -> str:
        r = self.reasons
        if self.action == "power-off":
            head = f"demand below {r.low:.0%} for {r.window_samples} samples (peak U {r.utilisation:.3f})"
            tail = f"; moves {r.vms_to_move} VMs ({r.memory_to_move_mib} MiB)"
        else:
            head = f"demand above {r.high:.0%} for {r.window_samples} samples (lowest U {r.utilisation:.3f})"
            tail = ""
        goal = f"fill {r.fill:.2f}" if self.action == "power-off" and r.fill is not None else f"target {r.target:.2f}"
        return (
            f"{head}; U after {r.predicted:.3f} ({goal}); effective capacity "
            f"cpu {r.capacity_before[0]:.0f} -> {r.capacity_after[0]:.0f} MHz, mem {r.capacity_before[1]:.0f} -> "
            f"{r.capacity_after[1]:.0f} MiB{tail}"
        )

    def to_dict(self) -> dict[str, Any]:
        r = self.reasons
        return {
            "action": self.action,
            "host": self.host,
            "priority": self.priority,
            "automation": self.automation.value,
            "automatic": self.automatic,
            "evacuation": [list(e) for e in self.evacuation],
            "text": self.reason,
            "reasons": {
                "utilisation": r.utilisation,
                "cpu_utilisation": r.cpu_utilisation,
                "mem_utilisation": r.mem_utilisation,
                "window_samples": r.window_samples,
                "low": r.low,
                "high": r.high,
                "target": r.target,
                "predicted": r.predicted,
                "capacity_before": list(r.capacity_before),
                "capacity_after": list(r.capacity_after),
                "ha_reserved": list(r.ha_reserved),
                "vms_to_move": r.vms_to_move,
                "memory_to_move_mib": r.memory_to_move_mib,
                "fill": r.fill,
                "lead": r.lead,
            },
        }


@dataclass(frozen=True, slots=True)
class DpmPlan:
    recommendations: tuple[PowerRecommendation, ...]
    utilisation: tuple[float, ...]  # U per sample, oldest first
    low: float
    high: float
    notes: tuple[str, ...]  # why nothing (else) was done, hosts considered and refused

    def to_dict(self) -> dict[str, Any]:
        return {"recommendations": [r.to_dict() for r in self.recommendations], "utilisation": list(self.utilisation), "low": self.low, "high": self.high, "notes": list(self.notes)}


def _eff(h: HostSnapshot, ha: HaReserve) -> tuple[float, float]:
    c, m = host_capacity(h)
    return (max(0.0, c - max(c * ha.fraction, ha.cpu_mhz)), max(0.0, m - max(m * ha.fraction, ha.mem_mib)))


def _ha(h: HostSnapshot, ha: HaReserve) -> tuple[float, float]:
    c, m = host_capacity(h)
    return (min(c, max(c * ha.fraction, ha.cpu_mhz)), min(m, max(m * ha.fraction, ha.mem_mib)))


def _usable(hosts: Sequence[HostSnapshot], s: DpmSettings) -> tuple[float, float]:
    """Effective capacity of ``hosts``: each one's capacity less the HA reserve, less the
    ``ha_hosts`` largest hosts' (per resource) kept for failover."""
    effs = [_eff(h, s.ha) for h in hosts]
    out = []
    for k in (0, 1):
        vals = sorted((e[k] for e in effs), reverse=True)
        out.append(max(0.0, sum(vals) - sum(vals[: max(0, s.ha_hosts)])))
    return out[0], out[1]


def _lead(totals: Sequence[tuple[float, float]], s: DpmSettings) -> tuple[float, float]:
    """The demand expected one boot time (``wake_s``) ahead: the last sample plus the climb of
    the last three samples (a falling demand is not extrapolated down), per resource."""
    last = totals[-1]
    if len(totals) < 3 or s.wake_s <= 0:
        return last
    ahead = s.wake_s / s.sample_s
    return tuple(last[k] + max(0.0, (totals[-1][k] - totals[-3][k]) / 2.0) * ahead for k in (0, 1))  # type: ignore[return-value]


def _u(d: tuple[float, float], cap: tuple[float, float]) -> tuple[float, float, float]:
    uc = d[0] / cap[0] if cap[0] > 0 else (math.inf if d[0] > 0 else 0.0)
    um = d[1] / cap[1] if cap[1] > 0 else (math.inf if d[1] > 0 else 0.0)
    return max(uc, um), uc, um


def decide(
    snapshot: ClusterSnapshot,
    settings: DpmSettings | None = None,
    samples: Sequence[Mapping[str, Demand]] = (),
    history: DpmHistory | None = None,
) -> DpmPlan:
    """One DPM pass over the recent demand ``samples`` (oldest first). Changes nothing."""
    s = settings or DpmSettings()
    history = history or DpmHistory()
    core = core_mhz(snapshot)
    # A dedicated HA failover host stays on and empty (vcenter.domain.ha): it neither carries
    # the cluster's demand nor is powered off or on by DPM.
    active = [h for h in snapshot.hosts if h.usable and not h.failover]
    running = [vm for vm in snapshot.vms if vm.host is not None]

    def total(sample: Mapping[str, Demand]) -> tuple[float, float]:
        c = m = 0.0
        for vm in running:
            size = (vm.vcpus * core, float(vm.memory_mib))
            d = sample.get(vm.id, size)
            c += min(d[0], size[0])
            m += min(d[1], size[1])
        return c, m

    cap = _usable(active, s)
    totals = [total(x) for x in samples]
    us = [_u(t, cap) for t in totals]
    notes: list[str] = []
    recs: list[PowerRecommendation] = []

    def plan() -> DpmPlan:
        return DpmPlan(tuple(recs), tuple(round(u[0], 6) for u in us), s.low, s.high, tuple(notes))

    if not samples:
        notes.append("no demand samples")
        return plan()

    n_on = s.samples_for(s.on_window_s)
    n_off = s.samples_for(s.off_window_s)

    # -- power on --------------------------------------------------------------------------
    lead = _lead(totals, s)
    climbing = _u(lead, cap)[0] > s.high + EPS and _u(totals[-1], cap)[0] > s.target + EPS
    if (len(us) >= n_on and all(u[0] > s.high + EPS for u in us[-n_on:])) or climbing:
        window = totals[-n_on:]
        peak = (max(max(t[0] for t in window), lead[0]), max(max(t[1] for t in window), lead[1]))
        lowest = min(us[-n_on:], key=lambda u: u[0])
        if climbing and not all(u[0] > s.high + EPS for u in us[-n_on:]):
            notes.append(f"demand climbing: U {_u(lead, cap)[0]:.3f} expected in {s.wake_s:.0f} s (a host's boot time), above {s.high:.0%}")
        standby = [h for h in snapshot.hosts if h.standby and not h.maintenance and h.connection == "connected" and not h.failover]
        pool: list[HostSnapshot] = []
        for h in standby:
            if s.level(h.id) == Automation.DISABLED:
                notes.append(f"{h.label}: DPM disabled for this host")
            else:
                pool.append(h)
        if not pool:
            notes.append(f"demand above {s.high:.0%} for {n_on} samples but no standby host to power on")
        cur = cap
        woken: list[HostSnapshot] = []
        while pool and len(recs) < s.max_on_per_pass:

            def after(h: HostSnapshot) -> tuple[float, float]:
                return _usable(active + woken + [h], s)

            fitting = [h for h in pool if _u(peak, after(h))[0] <= s.target + EPS]
            if fitting:
                chosen = min(fitting, key=lambda h: (sum(_eff(h, s.ha)), snapshot.hosts.index(h)))
            else:
                chosen = max(pool, key=lambda h: (sum(_eff(h, s.ha)), -snapshot.hosts.index(h)))
            new = after(chosen)
            pred = _u(peak, new)[0]
            uc = _u(peak, cur)[0]
            woken.append(chosen)
            ha_total = cast(tuple[float, float], tuple(sum(_ha(h, s.ha)[k] for h in active + woken) for k in (0, 1)))
            recs.append(
                PowerRecommendation(
                    "power-on",
                    chosen.id,
                    1 if uc > 1 + EPS else 2,
                    s.level(chosen.id),
                    PowerReasons(lowest[0], lowest[1], lowest[2], n_on, s.low, s.high, s.target, pred, cur, new, ha_total, lead=_u(lead, cap)[0]),
                )
            )
            pool.remove(chosen)
            cur = new
            if pred <= s.target + EPS:
                break
        return plan()

    # -- power off -------------------------------------------------------------------------
    if len(us) < n_off:
        notes.append(f"{len(us)} of {n_off} samples for the power-off window")
        return plan()
    if not all(u[0] < s.low - EPS for u in us[-n_off:]):
        top = max(u[0] for u in us[-n_off:])
        notes.append(f"utilisation within the band (peak {top:.3f} over {n_off} samples, band {s.low:.2f}-{s.high:.2f})")
        return plan()
    window = totals[-n_off:]
    lead = _lead(totals, s)
    peak = (max(max(t[0] for t in window), lead[0]), max(max(t[1] for t in window), lead[1]))
    worst = max(us[-n_off:], key=lambda u: u[0])
    on = list(active)
    snap = snapshot
    base_must = {(v.rule, v.vms) for v in violations(snapshot) if v.must}
    in_flight_hosts = {vm.host for vm in running if vm.id in history.in_flight}
    in_flight_hosts |= {p.host_id for p in snapshot.pending}
    cur = cap
    while len(recs) < s.max_off_per_pass:
        if len(on) <= s.min_hosts_on:
            notes.append(f"{len(on)} hosts on: minimum is {s.min_hosts_on}")
            break
        mem_on = {h.id: sum(vm.memory_mib for vm in snap.vms if vm.host == h.id) for h in on}
        order = sorted(on, key=lambda h: (mem_on[h.id], snapshot.hosts.index(h)))
        done = False
        for h in order:
            if s.level(h.id) == Automation.DISABLED:
                notes.append(f"{h.label}: DPM disabled for this host")
                continue
            if history.recent.get(h.id, math.inf) < s.host_cooldown_s:
                notes.append(f"{h.label}: last power action {history.recent[h.id]:.0f} s ago (cooldown {s.host_cooldown_s:.0f} s)")
                continue
            if h.id in in_flight_hosts:
                notes.append(f"{h.label}: a migration or reservation in flight")
                continue
            new = _usable([x for x in on if x.id != h.id], s)
            pred = _u(peak, new)[0]
            if pred > s.fill + EPS:
                notes.append(f"{h.label}: the rest would run at {pred:.3f} > {s.fill:.2f}")
                continue
            off = replace(snap, hosts=tuple(replace(x, standby=True) if x.id == h.id else x for x in snap.hosts))
            victims = [vm for vm in off.vms if vm.host == h.id]
            moves: tuple[tuple[str, str], ...] = ()
            if victims:
                result = place_many(off, victims)
                if result.unplaced:
                    vid, why = sorted(result.unplaced.items())[0]
                    notes.append(f"{h.label}: cannot evacuate {len(result.unplaced)} VM(s), e.g. {vid}: {why}")
                    continue
                moves = tuple((r.vm_id, cast(str, r.host)) for r in result.results)  # place_many placed them all
                placed = result.placed
                off = replace(off, vms=tuple(replace(vm, host=placed[vm.id]) if vm.id in placed else vm for vm in off.vms))
            if not s.ha.zero:
                short = []
                for x in off.hosts:
                    if not x.usable:
                        continue
                    used = x.reserved_memory_mib + x.used_memory_mib + sum(vm.memory_mib for vm in off.vms if vm.host == x.id)
                    if used > x.memory_mib - _ha(x, s.ha)[1] + 1e-6:
                        short.append(x.label)
                if short:
                    notes.append(f"{h.label}: evacuation would eat the HA reserve of memory on {', '.join(short)}")
                    continue
            if {(v.rule, v.vms) for v in violations(off) if v.must} - base_must:
                notes.append(f"{h.label}: evacuation would break a must rule")
                continue
            ha_total = cast(tuple[float, float], tuple(sum(_ha(x, s.ha)[k] for x in on if x.id != h.id) for k in (0, 1)))
            recs.append(
                PowerRecommendation(
                    "power-off",
                    h.id,
                    3 if pred < s.low - EPS else 4,
                    s.level(h.id),
                    PowerReasons(
                        worst[0], worst[1], worst[2], n_off, s.low, s.high, s.target, pred, cur, new, ha_total, len(victims), sum(vm.memory_mib for vm in victims), fill=s.fill, lead=_u(lead, cap)[0]
                    ),
                    moves,
                )
            )
            snap = off
            on = [x for x in on if x.id != h.id]
            cur = new
            done = True
            break
        if not done:
            if not recs:
                notes.append("no host can be powered off")
            break
    return plan()
