"""DRS, DPM and what-if events of the golden scenario runner (mixed into ``runner.Sim``).

cluster.yaml may hold ``drs: {..}``, ``dpm: {..}`` and ``ha_reserve: {..}`` (the same keys as the
events below). Events:
  drs settings: {threshold, automation, overrides: {vm: level}, cooldown, budget, min_gain,
                 cost_per_gib, sources}
  dpm settings: {target, tolerance, sample, off_window, on_window, min_hosts, cooldown,
                 max_off, max_on, fill, wake, ha_hosts, automation, overrides: {host: level}}
  ha reserve: {fraction, cpu_mhz, mem}          capacity kept for HA on every host (DRS and DPM)
  demands: {vm: "cpu=3 mem=4G", ..}             set several demands at once (one summary line)
  balance                                       log the imbalance and every active host's load
  drs recommend | drs run                       one DRS pass; ``run`` applies automatic moves
  begin migrate vm X to H | end migrate vm X    a migration in flight (pending on H) / landed
  whatif host H fails|maintenance|power off     DRS what-if (nothing changes)
  whatif vm X demand cpu=.. mem=..
  whatif add rule: {..}
  sample [N]                                    record the current demand N times, one sample
                                                every ``sample`` seconds (the clock advances)
  dpm recommend | dpm run                       one DPM pass; ``run`` applies automatic actions

A DRS plan may ask to wake standby hosts (``wake H: why``); ``drs run`` powers them on at once
in a fully automated cluster (the booting time is not simulated).

Invariants of a DRS plan (checked on every plan, applied or not, whatever the log says): the
budget is kept, no VM is recommended twice, no in-flight VM is moved, no VM in cooldown is moved
for balance, each move in order starts where the VM is, lands on an active host within memory
and vCPU capacity, and breaks no must rule; an applied plan without rule fixes never makes the
imbalance worse. Of a DPM plan: the evacuation breaks no must rule, leaves the host empty,
keeps the minimum of hosts on, and a power-off never follows a power-on of the same host
within the cooldown (no flapping).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from vcenter.domain import drs as drs_mod
from vcenter.domain import drs_whatif
from vcenter.domain import dpm as dpm_mod
from vcenter.domain.snapshot import ClusterSnapshot, HostSnapshot, PendingReservation, RuleKind, VmSnapshot
from vcenter.sim.values import ScenarioError, parse_mem, parse_mhz


def _f(x: float) -> str:
    return f"{x:.4f}"


def _num(x: float) -> str:
    return f"{x:.0f}" if abs(x - round(x)) < 1e-6 else f"{x:.1f}"


def _ha(spec: dict | None) -> drs_mod.HaReserve:

    spec = spec or {}
    return drs_mod.HaReserve(float(spec.get("fraction", 0.0)), parse_mhz(spec.get("cpu_mhz", 0)), float(parse_mem(spec.get("mem", 0))))


def move_breaks_must(snap: ClusterSnapshot, vm_id: str, target: str) -> str | None:
    """Independent of placement: which must rule (if any) moving ``vm_id`` to ``target`` breaks,
    given where the other VMs run in ``snap``."""
    where = {v.id: v.host for v in snap.vms if v.host is not None}
    for r in snap.rules:
        if not r.enabled or not r.must or vm_id not in r.vms:
            continue
        partners = {where[p] for p in r.vms if p != vm_id and p in where}
        if r.kind == RuleKind.ANTI_AFFINITY and target in partners:
            return f"must anti-affinity '{r.name}'"
        if r.kind == RuleKind.AFFINITY and partners and target not in partners:
            return f"must affinity '{r.name}'"
        if r.kind == RuleKind.RUN_ON and target not in r.hosts:
            return f"must run-on '{r.name}'"
        if r.kind == RuleKind.NOT_RUN_ON and target in r.hosts:
            return f"must not-run-on '{r.name}'"
    return None


def _capacity_problem(snap: ClusterSnapshot, host: HostSnapshot) -> str | None:
    vms = [v for v in snap.vms if v.host == host.id]
    pend = [p for p in snap.pending if p.host_id == host.id]
    mem = host.reserved_memory_mib + host.used_memory_mib + sum(v.memory_mib for v in vms) + sum(p.memory_mib for p in pend)
    vcpu = sum(v.vcpus for v in vms) + sum(p.vcpus for p in pend)
    if mem > host.memory_mib:
        return f"memory {mem} of {host.memory_mib} MiB"
    if vcpu > host.cores * host.vcpu_ratio:
        return f"vCPUs {vcpu} of {_num(host.cores * host.vcpu_ratio)}"
    return None


class DrsSimMixin:
    """State and events for DRS/DPM; ``runner.Sim`` calls ``_drs_init`` and ``_drs_dispatch``."""

    # provided by Sim
    t: float
    vms: dict[str, VmSnapshot]
    hosts: dict[str, HostSnapshot]
    powered: dict[str, bool]
    demands: dict[str, tuple[float, float]]
    failures: list[str]
    pending: dict

    def _drs_init(self, cluster: dict) -> None:
        self.ha_reserve = _ha(cluster.get("ha_reserve"))
        self.drs_spec: dict = dict(cluster.get("drs") or {})
        self.dpm_spec: dict = dict(cluster.get("dpm") or {})
        self.in_flight: dict[str, str] = {}
        self.moved_at: dict[str, float] = {}
        self.power_at: dict[str, tuple[float, str]] = {}  # host -> (time, "on"/"off")
        self.samples: list[dict[str, tuple[float, float]]] = []
        self.drs_settings()  # validate early
        self.dpm_settings()

    # -- settings ----------------------------------------------------------------------------
    def drs_settings(self) -> drs_mod.DrsSettings:
        s = self.drs_spec
        d = drs_mod.DrsSettings()
        return drs_mod.DrsSettings(
            threshold=int(s.get("threshold", d.threshold)),
            automation=drs_mod.Automation(s.get("automation", "full")),
            vm_overrides={str(k): drs_mod.Automation(v) for k, v in (s.get("overrides") or {}).items()},
            cooldown_s=float(s.get("cooldown", d.cooldown_s)),
            budget=int(s.get("budget", d.budget)),
            min_gain=float(s.get("min_gain", d.min_gain)),
            cost_per_gib=float(s.get("cost_per_gib", d.cost_per_gib)),
            ha=self.ha_reserve,
            sources=int(s.get("sources", d.sources)),
        )

    def dpm_settings(self) -> dpm_mod.DpmSettings:
        s = self.dpm_spec
        d = dpm_mod.DpmSettings()
        return dpm_mod.DpmSettings(
            target=float(s.get("target", d.target)),
            tolerance=float(s.get("tolerance", d.tolerance)),
            sample_s=float(s.get("sample", d.sample_s)),
            off_window_s=float(s.get("off_window", d.off_window_s)),
            on_window_s=float(s.get("on_window", d.on_window_s)),
            min_hosts_on=int(s.get("min_hosts", d.min_hosts_on)),
            host_cooldown_s=float(s.get("cooldown", d.host_cooldown_s)),
            max_off_per_pass=int(s.get("max_off", d.max_off_per_pass)),
            max_on_per_pass=int(s.get("max_on", d.max_on_per_pass)),
            fill=float(s.get("fill", d.fill)),
            wake_s=float(s.get("wake", d.wake_s)),
            ha_hosts=int(s.get("ha_hosts", d.ha_hosts)),
            automation=drs_mod.Automation(s.get("automation", "full")),
            host_overrides={str(k): drs_mod.Automation(v) for k, v in (s.get("overrides") or {}).items()},
            ha=self.ha_reserve,
        )

    def drs_history(self) -> drs_mod.DrsHistory:
        return drs_mod.DrsHistory(frozenset(self.in_flight), {v: self.t - t for v, t in self.moved_at.items()})

    # -- dispatch ----------------------------------------------------------------------------
    def _drs_dispatch(self, cmd: str, words: list[str], payload: Any) -> bool:
        if cmd == "drs settings":
            self.drs_spec.update(payload or {})
            s = self.drs_settings()
            self.say(
                f"DRS: threshold {s.threshold} (target {_f(s.target) if s.threshold > 1 else 'rule fixes only'}), "
                f"{s.automation.value if hasattr(s.automation, 'value') else s.automation}, budget {s.budget}, "
                f"cooldown {_num(s.cooldown_s)} s, min gain {_f(s.min_gain)} per host",
                1,
            )
            return True
        if cmd == "dpm settings":
            self.dpm_spec.update(payload or {})
            s = self.dpm_settings()
            self.say(
                f"DPM: band {s.low:.2f}-{s.high:.2f} (target {s.target:.2f}), windows off {s.samples_for(s.off_window_s)} "
                f"/ on {s.samples_for(s.on_window_s)} samples of {_num(s.sample_s)} s, min hosts {s.min_hosts_on}",
                1,
            )
            return True
        if cmd == "ha reserve":
            self.ha_reserve = _ha(payload)
            h = self.ha_reserve
            self.say(f"HA reserve: fraction {h.fraction:.2f}, cpu {_num(h.cpu_mhz)} MHz, mem {_num(h.mem_mib)} MiB per host", 1)
            return True
        if cmd == "demands":
            for vid, spec in (payload or {}).items():
                self._set_demand(str(vid), str(spec).split())
            self.say(f"demand set for {', '.join(str(v) for v in payload)}", 1)
            return True
        if cmd == "balance":
            self._log_balance(drs_mod.imbalance_of(self.snapshot(), self.demands), 1)
            return True
        if cmd in ("drs recommend", "drs run"):
            self._drs(apply=cmd == "drs run")
            return True
        if words[:3] == ["begin", "migrate", "vm"] and len(words) == 6 and words[4] == "to":
            vm, target = self.vm(words[3]), words[5]
            self.host(target)
            self.pending[vm.id] = (PendingReservation(vm.id, target, vm.memory_mib, vm.vcpus, vm.cpu_reservation_mhz), None)
            self.in_flight[vm.id] = target
            self.say(f"{vm.id} migrating {vm.host} -> {target} (in flight)", 1)
            return True
        if words[:3] == ["end", "migrate", "vm"] and len(words) == 4:
            vid = words[3]
            target = self.in_flight.pop(vid, None)
            if target is None:
                self.say(f"no migration of {vid} in flight", 1)
                return True
            self.pending.pop(vid, None)
            self.vms[vid] = replace(self.vms[vid], host=target)
            self.moved_at[vid] = self.t
            self.say(f"{vid} landed on {target}", 1)
            return True
        if words[:1] == ["whatif"] or cmd == "whatif add rule":
            self._whatif(words[1:], payload, cmd)
            return True
        if words[:1] == ["sample"] and len(words) <= 2:
            n = int(words[1]) if len(words) == 2 else 1
            s = self.dpm_settings()
            for _ in range(n):
                self.samples.append(dict(self.demands))
                self.t += s.sample_s
            self.samples = self.samples[-500:]
            self.say(f"{n} sample(s) recorded, {len(self.samples)} in history", 1)
            return True
        if cmd in ("dpm recommend", "dpm run"):
            self._dpm(apply=cmd == "dpm run")
            return True
        return False

    def _set_demand(self, vm_id: str, args: list[str]) -> None:

        vm = self.vm(vm_id)
        cpu, mem = self.demands.get(vm_id, (None, None))
        for a in args:
            k, _, v = a.partition("=")
            if k == "cpu":
                cpu = parse_mhz(v, default_unit="GHz")
            elif k in ("mem", "memory"):
                mem = float(parse_mem(v))
            else:
                raise ScenarioError(f"unknown demand {a!r}")
        core = max((h.cpu_mhz / h.cores for h in self.hosts.values() if h.cores), default=0.0)
        self.demands[vm_id] = (cpu if cpu is not None else vm.vcpus * core, mem if mem is not None else float(vm.memory_mib))

    # -- rendering ---------------------------------------------------------------------------
    def _log_balance(self, b: drs_mod.Balance, indent: int, label: str = "balance") -> None:
        self.say(f"{label}: imbalance {_f(b.imbalance)} (cpu {_f(b.cpu_std)}, mem {_f(b.mem_std)})", indent)
        for h, (c, m) in b.loads.items():
            self.say(f"{h}: cpu {c:.3f} mem {m:.3f}" + (" OVERLOADED" if c > 1 + 1e-9 or m > 1 + 1e-9 else ""), indent + 1)

    def _log_plan(self, plan: drs_mod.DrsPlan, indent: int) -> None:
        tgt = "rule fixes only" if plan.threshold == 1 else _f(plan.target)
        self.say(
            f"plan: imbalance {_f(plan.before.imbalance)} -> {_f(plan.after.imbalance)} "
            f"(cpu {_f(plan.before.cpu_std)} -> {_f(plan.after.cpu_std)}, mem {_f(plan.before.mem_std)} -> {_f(plan.after.mem_std)}), "
            f"threshold {plan.threshold} target {tgt}, {len(plan.recommendations)} move(s)",
            indent,
        )
        for k, r in enumerate(plan.recommendations, 1):
            self.say(f"{k}. [P{r.priority} {r.kind}] {r.vm_id} {r.source} -> {r.target} ({r.automation.value}): {r.reason}", indent + 1)
        for vid, why in plan.skipped.items():
            self.say(f"skipped {vid}: {why}", indent + 1)
        for u in plan.unresolved:
            self.say(f"unresolved: {u}", indent + 1)
        for n in plan.notes:
            self.say(f"note: {n}", indent + 1)
        for w in plan.wake:
            self.say(f"wake {w.host}: {w.reason}", indent + 1)

    # -- DRS ---------------------------------------------------------------------------------
    def _drs(self, apply: bool) -> None:
        snap = self.snapshot()
        settings = self.drs_settings()
        history = self.drs_history()
        plan = drs_mod.balance(snap, settings, self.demands, history)
        self._log_plan(plan, 1)
        self.check_plan(snap, plan, settings, history)
        if not apply:
            return
        done = [r for r in plan.recommendations if r.automatic]
        for r in done:
            self.vms[r.vm_id] = replace(self.vms[r.vm_id], host=r.target)
            self.moved_at[r.vm_id] = self.t
        left = [r.vm_id for r in plan.recommendations if not r.automatic]
        if done:
            self.say(f"applied: {', '.join(r.vm_id for r in done)}", 1)
        if left:
            self.say(f"left for the operator: {', '.join(left)}", 1)
        for w in plan.wake:
            if drs_mod.Automation(settings.automation) == drs_mod.Automation.FULL:
                self.hosts[w.host] = replace(self.hosts[w.host], standby=False)
                self.power_at[w.host] = (self.t, "on")
                self.say(f"{w.host} powered on (woken by DRS)", 1)
            else:
                self.say(f"left for the operator: power on {w.host}", 1)
        if done and not left and all(r.kind == "balance" for r in done):
            after = drs_mod.imbalance_of(self.snapshot(), self.demands).imbalance
            if after > plan.before.imbalance + 1e-9:
                self.failures.append(f"[t={_num(self.t)}] applied DRS plan made the imbalance worse: {_f(plan.before.imbalance)} -> {_f(after)}")

    def check_plan(self, snap: ClusterSnapshot, plan: drs_mod.DrsPlan, settings: drs_mod.DrsSettings, history: drs_mod.DrsHistory) -> None:
        where = f"[t={_num(self.t)}] DRS plan"
        recs = plan.recommendations
        if len(recs) > settings.budget:
            self.failures.append(f"{where}: {len(recs)} moves over the budget of {settings.budget}")
        seen: set[str] = set()
        hosts = {h.id: h for h in snap.hosts}
        cur = snap
        for r in recs:
            if r.vm_id in seen:
                self.failures.append(f"{where}: {r.vm_id} recommended twice")
            seen.add(r.vm_id)
            if r.vm_id in history.in_flight:
                self.failures.append(f"{where}: {r.vm_id} moved while its migration is in flight")
            age = history.recent.get(r.vm_id)
            if r.kind == "balance" and age is not None and age < settings.cooldown_s:
                self.failures.append(f"{where}: {r.vm_id} moved for balance {_num(age)} s after its last move")
            vm = next((v for v in cur.vms if v.id == r.vm_id), None)
            if vm is None or vm.host != r.source:
                self.failures.append(f"{where}: {r.vm_id} does not run on {r.source}")
                continue
            h = hosts.get(r.target)
            if h is None or not h.usable:
                self.failures.append(f"{where}: {r.vm_id} sent to unusable host {r.target}")
                continue
            broken = move_breaks_must(cur, r.vm_id, r.target)
            if broken:
                self.failures.append(f"{where}: moving {r.vm_id} to {r.target} breaks {broken}")
            cur = replace(cur, vms=tuple(replace(v, host=r.target) if v.id == r.vm_id else v for v in cur.vms))
            problem = _capacity_problem(cur, h)
            if problem:
                self.failures.append(f"{where}: {r.target} over capacity after {r.vm_id}: {problem}")

    # -- what if -----------------------------------------------------------------------------
    def _whatif(self, words: list[str], payload: Any, cmd: str) -> None:

        change: drs_whatif.Change
        if cmd == "whatif add rule":
            change = drs_whatif.RuleAdded(self._rule(payload))
        elif words[:1] == ["host"] and len(words) >= 3:
            self.host(words[1])
            act = " ".join(words[2:])
            kinds = {"fails": drs_whatif.HostFails, "maintenance": drs_whatif.HostMaintenance, "power off": drs_whatif.HostPowersOff}
            if act not in kinds:
                raise ScenarioError(f"unknown what-if {act!r}")
            change = kinds[act](words[1])
        elif words[:1] == ["vm"] and len(words) >= 4 and words[2] == "demand":
            self.vm(words[1])
            cpu = mem = None
            for a in words[3:]:
                k, _, v = a.partition("=")
                if k == "cpu":
                    cpu = parse_mhz(v, default_unit="GHz")
                elif k in ("mem", "memory"):
                    mem = float(parse_mem(v))
            change = drs_whatif.VmDemandChange(words[1], cpu, mem)
        else:
            raise ScenarioError(f"unknown what-if {' '.join(words)!r}")
        snap = self.snapshot()
        settings = self.drs_settings()
        history = self.drs_history()
        res = drs_whatif.whatif(snap, change, settings, self.demands, history)
        self.say(f"what if {res.change}: imbalance now {_f(res.now.imbalance)}, after the change {_f(res.changed.imbalance)}, after DRS {_f(res.plan.after.imbalance)}", 1)
        if res.displaced is not None:
            for r in res.displaced.results:
                self.say(f"{r.vm_id} -> {r.host}" if r.host else f"{r.vm_id} UNPLACEABLE: {r.reason}", 2)
        self._log_plan(res.plan, 2)
        self.check_plan(res.snapshot, res.plan, settings, history)
        if snap != self.snapshot():
            self.failures.append(f"[t={_num(self.t)}] what-if changed the cluster")

    # -- DPM ---------------------------------------------------------------------------------
    def _dpm(self, apply: bool) -> None:
        snap = self.snapshot()
        s = self.dpm_settings()
        hist = dpm_mod.DpmHistory({h: self.t - t for h, (t, _) in self.power_at.items()}, frozenset(self.in_flight))
        plan = dpm_mod.decide(snap, s, self.samples, hist)
        us = plan.utilisation
        tail = ", ".join(f"{u:.3f}" for u in us[-8:])
        self.say(f"DPM: band {plan.low:.2f}-{plan.high:.2f}, utilisation of the last {min(8, len(us))} sample(s): {tail}", 1)
        for r in plan.recommendations:
            self.say(f"[P{r.priority}] {r.action} {r.host} ({r.automation.value}): {r.reason}", 2)
            for vid, h in r.evacuation:
                self.say(f"{vid} -> {h}", 3)
        for n in plan.notes:
            self.say(f"note: {n}", 2)
        self.check_dpm(snap, plan, s, hist)
        if not apply:
            return
        for r in plan.recommendations:
            if not r.automatic:
                self.say(f"left for the operator: {r.action} {r.host}", 1)
                continue
            if r.action == "power-off":
                for vid, h in r.evacuation:
                    self.vms[vid] = replace(self.vms[vid], host=h)
                    self.moved_at[vid] = self.t
                self.hosts[r.host] = replace(self.hosts[r.host], standby=True)
                self.power_at[r.host] = (self.t, "off")
                self.say(f"{r.host} in standby", 1)
            else:
                self.hosts[r.host] = replace(self.hosts[r.host], standby=False)
                self.power_at[r.host] = (self.t, "on")
                self.say(f"{r.host} powered on", 1)

    def check_dpm(self, snap: ClusterSnapshot, plan: dpm_mod.DpmPlan, s: dpm_mod.DpmSettings, hist: dpm_mod.DpmHistory) -> None:
        where = f"[t={_num(self.t)}] DPM plan"
        on = sum(1 for h in snap.hosts if h.usable)
        cur = snap
        hosts = {h.id: h for h in snap.hosts}
        for r in plan.recommendations:
            age = hist.recent.get(r.host)
            if r.action == "power-off" and age is not None and age < s.host_cooldown_s:
                self.failures.append(f"{where}: {r.action} {r.host} {_num(age)} s after its last power action (flapping)")
            if r.action != "power-off":
                continue
            on -= 1
            if on < s.min_hosts_on:
                self.failures.append(f"{where}: powering off {r.host} leaves {on} hosts on (minimum {s.min_hosts_on})")
            cur = replace(cur, hosts=tuple(replace(h, standby=True) if h.id == r.host else h for h in cur.hosts))
            for vid, target in r.evacuation:
                if not hosts[target].usable or target == r.host:
                    self.failures.append(f"{where}: {vid} evacuated to unusable host {target}")
                broken = move_breaks_must(cur, vid, target)
                if broken:
                    self.failures.append(f"{where}: evacuating {vid} to {target} breaks {broken}")
                cur = replace(cur, vms=tuple(replace(v, host=target) if v.id == vid else v for v in cur.vms))
                problem = _capacity_problem(cur, hosts[target])
                if problem:
                    self.failures.append(f"{where}: {target} over capacity after {vid}: {problem}")
            left = [v.id for v in cur.vms if v.host == r.host]
            if left:
                self.failures.append(f"{where}: {r.host} powered off with {', '.join(left)} still on it")
