"""Golden scenario runner: a cluster in memory, timed events on a logical clock, a decision log.

A scenario is a folder:
- ``cluster.yaml``: ``defaults`` (host/vm fields merged into each), ``cpus`` (named CPU models),
  ``hosts``, ``vms`` (``host`` set = running there), ``vm_groups``, ``host_groups``, ``rules``,
  ``pools``, ``evc`` (``hosts: [..]`` computes the baseline over them, or ``cpu: <name>``).
- ``events.yaml``: a list; each item a string (``place vm web3``) or a one-key mapping whose
  value is structured (``add rule: {name: .., type: anti-affinity, must: true, vms: [..]}``).
  ``delay N`` advances the logical clock by N seconds; nothing reads wall time, nothing is random.
- ``expected.log``: the log the runner printed when the scenario was last accepted.
- ``known_gap`` in cluster.yaml (optional): a behaviour the product lacks, which this scenario
  shows; its invariant failures are then expected (and the test says when the gap closed).

Events:
  place vm X | power on vm X          power-on: admission, then placement, applied
  explain vm X                        dry run: every host ranked or rejected, nothing applied
  reserve vm X [ttl N]                decide and hold a pending reservation (expires after N s)
  commit vm X | release vm X          the reserved VM starts there / the reservation is dropped
  place-many A B .. | place-many: [..]  one consistent batch power-on
  power off vm X                      the VM stops (its capacity and reservation are freed)
  migrate vm X to H                   VMotion to a named host, refused with H's reasons
  host H power off                    host failure: its VMs die and are restarted (HA) in one batch
  host H power on | connect | disconnect | maintenance on|off | standby on|off
                                      maintenance/standby on evacuate first, all or nothing
  evacuate H                          move every VM that can move off H
  add rule: {..} | remove rule N      refused with both names when it contradicts another rule,
                                      and a must-rule the current placement violates is refused
  add vm: {..} | add host: {..} | add pool: {..}   (a host is refused when it cannot meet EVC)
  evc on H1 H2 .. | evc off           EVC baseline over the named hosts (refused if a host lacks it)
  vm X demand cpu=3.5 mem=2048        demand (CPU in GHz unless 'MHz', memory in MiB unless
                                      'G'); logs every running VM's entitlement
  entitlements | violations           log them
  check cpu vm X host H               CPU compatibility of a VM with a host
  delay N                             advance the clock; expired reservations are dropped
  drs .. | dpm .. | whatif .. | demands: {..} | balance | sample [N] | begin/end migrate vm X ..
                                      DRS, DPM and what-if: see vcenter.sim.drs (its own invariants)

Invariants, checked after loading and after every event whatever the log says: no must-rule
violated, no host over its memory, vCPU or CPU-reservation capacity, every running VM on one
live host exactly once, no VM lost (a VM that ran before an event still runs after it unless
the event stopped it or logged why it could not restart it), pools within reservation/limit.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from vcenter.domain import rules as rules_mod
from vcenter.domain.cpu import CpuModel, CpuRequirement, baseline, can_join, compatible, requirement_of
from vcenter.domain.placement import PlacementResult, place, place_many
from vcenter.domain.pools import PoolTree, entitlements, pool_shares, vm_shares
from vcenter.domain.snapshot import (
    Alloc,
    ClusterSnapshot,
    HostSnapshot,
    PendingReservation,
    PoolNode,
    Rule,
    RuleKind,
    VmSnapshot,
)
from vcenter.sim.drs import DrsSimMixin
from vcenter.sim.ha import HaSimMixin
from vcenter.sim.values import ScenarioError, parse_mem, parse_mhz


@dataclass
class ScenarioResult:
    log: str
    failures: list[str]
    known_gap: str | None = None  # cluster.yaml's ``known_gap``: why its invariants are expected to fail

    @property
    def only_known_gap(self) -> bool:
        """The invariants broke as the scenario's known gap says: VMs lost, and nothing else."""
        return bool(self.known_gap) and bool(self.failures) and all(" lost" in f for f in self.failures)


def _num(x: float) -> str:
    return f"{x:.0f}" if abs(x - round(x)) < 1e-6 else f"{x:.1f}"


def _flow(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000).strip()


# -- the simulated cluster -------------------------------------------------------------------


class Sim(HaSimMixin, DrsSimMixin):
    def __init__(self, cluster: dict) -> None:
        cluster = cluster or {}
        self.t = 0.0
        self.lines: list[str] = []
        self.failures: list[str] = []
        self.defaults = cluster.get("defaults") or {}
        self.cpus: dict[str, CpuModel] = {
            name: CpuModel(spec.get("vendor", "GenuineIntel"), spec.get("model", name), frozenset(spec.get("features", []))) for name, spec in (cluster.get("cpus") or {}).items()
        }
        self.hosts: dict[str, HostSnapshot] = {}
        self.powered: dict[str, bool] = {}
        for spec in cluster.get("hosts") or []:
            h, powered = self._host(spec)
            self.hosts[h.id] = h
            self.powered[h.id] = powered
        self.vms: dict[str, VmSnapshot] = {}
        for spec in cluster.get("vms") or []:
            vm = self._vm(spec)
            if vm.host is not None and vm.host not in self.hosts:
                raise ScenarioError(f"VM {vm.id} on unknown host {vm.host}")
            self.vms[vm.id] = vm
        self.vm_groups: dict[str, list[str]] = {k: list(v) for k, v in (cluster.get("vm_groups") or {}).items()}
        self.host_groups: dict[str, list[str]] = {k: list(v) for k, v in (cluster.get("host_groups") or {}).items()}
        self.pools: list[PoolNode] = [self._pool(p) for p in cluster.get("pools") or []]
        self.rules: list[Rule] = []
        self.pending: dict[str, tuple[PendingReservation, float | None]] = {}
        self.demands: dict[str, tuple[float, float]] = {}
        self.down: dict[str, str] = {}
        self.evc: CpuModel | None = None
        evc = cluster.get("evc")
        if evc:
            if "cpu" in evc:
                self.evc = replace(self.cpus[evc["cpu"]], model=evc.get("name", evc["cpu"]))
            else:
                self.evc = baseline([self.hosts[h].cpu for h in evc["hosts"]], evc.get("name", ""))
        for spec in cluster.get("rules") or []:
            rule = self._rule(spec)
            found = rules_mod.contradictions_with(self.rules, rule)
            if found:
                raise ScenarioError(f"cluster.yaml: {found[0]}")
            self.rules.append(rule)
        self._drs_init(cluster)
        self._ha_init(cluster)
        running = sum(1 for v in self.vms.values() if v.host)

        def count(n: int, word: str) -> str:
            return f"{n} {word}{'' if n == 1 else 's'}"

        self.say(
            f"cluster: {count(len(self.hosts), 'host')}, {count(len(self.vms), 'VM')} ({running} running), "
            f"{count(len(self.rules), 'rule')}, {count(len(self.pools), 'pool')}" + (f", EVC '{self.evc.model}'" if self.evc else "")
        )
        self.check_invariants("load", set(), set())

    # -- building objects from YAML ------------------------------------------------------
    def _cpu(self, spec: Any) -> CpuModel | None:
        if spec is None:
            return None
        if isinstance(spec, str):
            if spec not in self.cpus:
                raise ScenarioError(f"unknown CPU model {spec}")
            return self.cpus[spec]
        return CpuModel(spec.get("vendor", "GenuineIntel"), spec.get("model", ""), frozenset(spec.get("features", [])))

    def _host(self, spec: dict) -> tuple[HostSnapshot, bool]:
        s = {**(self.defaults.get("host") or {}), **spec}
        cores = int(s.get("cores", 16))
        cpu_mhz = parse_mhz(s["cpu_mhz"]) if "cpu_mhz" in s else cores * parse_mhz(s.get("core_mhz", 2500))
        h = HostSnapshot(
            id=str(s["id"]),
            name=str(s.get("name", "")),
            connection=s.get("connection", "connected"),
            maintenance=bool(s.get("maintenance", False)),
            standby=bool(s.get("standby", False)),
            cpu_mhz=cpu_mhz,
            cores=cores,
            memory_mib=parse_mem(s.get("memory", 65536)),
            reserved_memory_mib=parse_mem(s.get("reserved_memory", 0)),
            reserved_cpu_mhz=parse_mhz(s.get("reserved_cpu_mhz", 0)),
            vcpu_ratio=float(s.get("vcpu_ratio", 4.0)),
            datastores=frozenset(s.get("datastores", [])),
            port_groups=frozenset(s.get("port_groups", [])),
            cpu=self._cpu(s.get("cpu")),
        )
        return h, bool(s.get("powered", True))

    def _shares(self, value: Any, resource: str, vcpus: int, mem: int) -> float | None:
        if value is None:
            return None
        return vm_shares(value, resource, vcpus, mem)

    def _vm(self, spec: dict) -> VmSnapshot:
        s = {**(self.defaults.get("vm") or {}), **spec}
        vcpus = int(s.get("vcpus", 1))
        mem = parse_mem(s.get("memory", 1024))
        cpu = s.get("cpu")
        req: CpuRequirement | None
        if cpu is None:
            req = None
        elif isinstance(cpu, str):
            req = requirement_of(self._cpu(cpu))
        else:
            req = CpuRequirement(cpu.get("vendor"), frozenset(cpu.get("features", [])), cpu.get("name", ""))
        return VmSnapshot(
            id=str(s["id"]),
            name=str(s.get("name", "")),
            vcpus=vcpus,
            memory_mib=mem,
            cpu_reservation_mhz=parse_mhz(s.get("cpu_reservation", 0)),
            memory_reservation_mib=parse_mem(s.get("memory_reservation", 0)),
            cpu_limit_mhz=None if s.get("cpu_limit") is None else parse_mhz(s["cpu_limit"]),
            memory_limit_mib=None if s.get("memory_limit") is None else parse_mem(s["memory_limit"]),
            cpu_shares=self._shares(s.get("cpu_shares"), "cpu", vcpus, mem),
            memory_shares=self._shares(s.get("memory_shares"), "mem", vcpus, mem),
            datastores=frozenset(s.get("datastores", [])),
            port_groups=frozenset(s.get("port_groups", [])),
            cpu=req,
            host=s.get("host"),
            pool=s.get("pool"),
            priority=int(s.get("priority", 0)),
        )

    def _alloc(self, spec: dict | None, resource: str) -> Alloc:
        spec = spec or {}
        conv = parse_mhz if resource == "cpu" else parse_mem
        return Alloc(
            reservation=float(conv(spec.get("reservation", 0))),
            limit=None if spec.get("limit") is None else float(conv(spec["limit"])),
            shares=pool_shares(spec.get("shares", "normal"), resource),
            expandable=bool(spec.get("expandable", True)),
        )

    def _pool(self, spec: dict) -> PoolNode:
        return PoolNode(str(spec["id"]), str(spec.get("name", "")), spec.get("parent"), self._alloc(spec.get("cpu"), "cpu"), self._alloc(spec.get("mem"), "mem"))

    def _rule(self, spec: dict) -> Rule:
        kind = RuleKind(spec["type"])
        must = spec["must"] if "must" in spec else spec.get("strength", "must") == "must"
        vm_group = spec.get("vm_group")
        vms = list(spec.get("vms", []))
        if vm_group:
            vms += self.vm_groups[vm_group]
        host_group = spec.get("host_group")
        hosts = list(spec.get("hosts", []))
        if host_group:
            hosts += self.host_groups[host_group]
        return Rule(str(spec["name"]), kind, bool(must), frozenset(vms), frozenset(hosts), vm_group, host_group)

    # -- state views ---------------------------------------------------------------------
    def snapshot(self) -> ClusterSnapshot:
        hosts = tuple(h if self.powered[h.id] else replace(h, connection="notResponding") for h in self.hosts.values())
        return ClusterSnapshot(
            hosts=hosts,
            vms=tuple(self.vms.values()),
            rules=tuple(self.rules),
            pools=tuple(self.pools),
            pending=tuple(p for p, _ in self.pending.values()),
            evc=self.evc,
        )

    def running(self) -> set[str]:
        return {v.id for v in self.vms.values() if v.host is not None}

    def vm(self, vm_id: str) -> VmSnapshot:
        try:
            return self.vms[vm_id]
        except KeyError:
            raise ScenarioError(f"unknown VM {vm_id}") from None

    def host(self, host_id: str) -> HostSnapshot:
        try:
            return self.hosts[host_id]
        except KeyError:
            raise ScenarioError(f"unknown host {host_id}") from None

    def say(self, text: str, indent: int = 0) -> None:
        self.lines.append("  " * indent + text)

    # -- rendering decisions -------------------------------------------------------------
    @staticmethod
    def _cand(c) -> str:
        comps = " ".join(f"{k}={v:+.4f}" for k, v in c.components.items())
        return f"{c.host_name} score={c.score:+.4f} ({comps})"

    def render(self, r: PlacementResult, indent: int, full: bool, only_host: str | None = None) -> None:
        if r.refused:
            self.say(f"REFUSED: {r.refused}", indent)
            return
        if r.chosen:
            self.say(f"-> {self._cand(r.chosen)}", indent)
            for note in r.chosen.notes:
                self.say(f"note: {note}", indent + 1)
        else:
            self.say("NOT PLACED: no host fits", indent)
        if full:
            for c in r.candidates[1:]:
                self.say(f"also {self._cand(c)}" + "".join(f" [{n}]" for n in c.notes), indent)
        for rej in r.rejected:
            if only_host is not None and rej.host_id != only_host:
                continue
            for f, why in zip(rej.filters, rej.reasons):
                self.say(f"x {rej.host_name} [{f}] {why}", indent)

    # -- applying decisions --------------------------------------------------------------
    def _start(self, vm_id: str, host_id: str) -> None:
        self.vms[vm_id] = replace(self.vms[vm_id], host=host_id)
        self.down.pop(vm_id, None)
        self.pending.pop(vm_id, None)

    def _place_one(self, vm_id: str) -> None:
        vm = self.vm(vm_id)
        if vm.host is not None:
            raise ScenarioError(f"{vm_id} already runs on {vm.host}")
        r = place(self.snapshot(), vm)
        self.render(r, 1, full=True)
        if r.host:
            self._start(vm_id, r.host)

    def _place_many(self, vm_ids: list[str], title: str | None = None) -> dict[str, str]:
        vms = [self.vm(v) for v in vm_ids]
        result = place_many(self.snapshot(), vms)
        seen: set[str] = set()
        for r in result.results:
            if r.vm_id in seen:
                self.failures.append(f"[t={_num(self.t)}] place_many decided {r.vm_id} twice")
            seen.add(r.vm_id)
            self.say(f"{r.vm_id}:", 1)
            self.render(r, 2, full=False)
        return result.placed | {vid: "" for vid in result.unplaced}

    def _evacuate(self, host_id: str, all_or_nothing: bool, why: str) -> bool:
        on = [v.id for v in self.vms.values() if v.host == host_id]
        pend = [vid for vid, (p, _) in self.pending.items() if p.host_id == host_id]
        if pend and all_or_nothing:
            self.say(f"REFUSED: {why} refused: reservations pending on {host_id} for {', '.join(sorted(pend))}", 1)
            return False
        if not on:
            self.say(f"no VM to move off {host_id}", 1)
            return True
        result = place_many(self.snapshot(), [self.vms[v] for v in on])
        for r in result.results:
            self.say(f"{r.vm_id}:", 1)
            self.render(r, 2, full=False)
        if result.unplaced and all_or_nothing:
            self.say(f"REFUSED: {why} refused: {len(result.unplaced)} of {len(on)} VMs cannot move ({', '.join(sorted(result.unplaced))}); nothing moved", 1)
            return False
        for vid, h in result.placed.items():
            self.vms[vid] = replace(self.vms[vid], host=h)
        if result.unplaced:
            self.say(f"staying on {host_id} (cannot move): {', '.join(sorted(result.unplaced))}", 1)
        return not result.unplaced

    # -- events --------------------------------------------------------------------------
    def run_event(self, item: Any) -> None:
        if isinstance(item, dict):
            if len(item) != 1:
                raise ScenarioError(f"an event mapping has one key: {item!r}")
            ((cmd, payload),) = item.items()
            text = f"{cmd} {_flow(payload)}"
        else:
            cmd, payload, text = str(item), None, str(item)
        self.say(f"[t={_num(self.t)}] {text}")
        before = self.running()
        stopped: set[str] = set()
        down_before = dict(self.down)
        try:
            self._dispatch(cmd.strip(), payload, stopped)
        except ScenarioError as exc:
            # A malformed event, or one that no longer makes sense because an earlier decision
            # changed: both fail the scenario, and the run goes on to report the rest.
            self.say(f"ERROR: {exc}", 1)
            self.failures.append(f"[t={_num(self.t)}] '{text}': {exc}")
        new_down = {v for v in self.down if v not in down_before}
        self._ha_after_event(text)
        self.check_invariants(text, before, stopped | new_down)
        self._ha_check_lost(f"[t={_num(self.t)}] after '{text}'")

    def _dispatch(self, cmd: str, payload: Any, stopped: set[str]) -> None:
        words = shlex.split(cmd)
        if not words:
            raise ScenarioError("empty event")
        head = words[0]
        if self._ha_dispatch(cmd, words, payload, stopped):
            return None
        if self._drs_dispatch(cmd, words, payload):
            return None
        if cmd == "add rule":
            return self._add_rule(payload)
        if cmd == "add vm":
            vm = self._vm(payload)
            if vm.host is not None:
                raise ScenarioError("add vm: a new VM is not running; place it")
            self.vms[vm.id] = vm
            self.say(f"VM {vm.id} defined ({vm.vcpus} vCPU, {vm.memory_mib} MiB)", 1)
            return
        if cmd == "add host":
            return self._add_host(payload)
        if cmd == "add pool":
            pool = self._pool(payload)
            self.pools.append(pool)
            self.say(f"pool {pool.label} added", 1)
            return
        if cmd == "place-many":
            placed = self._place_many([str(v) for v in payload])
            for vid, h in placed.items():
                if h:
                    self._start(vid, h)
            return
        if head == "place-many":
            placed = self._place_many(words[1:])
            for vid, h in placed.items():
                if h:
                    self._start(vid, h)
            return
        if words[:2] == ["place", "vm"] and len(words) == 3:
            return self._place_one(words[2])
        if words[:3] == ["power", "on", "vm"] and len(words) == 4:
            return self._place_one(words[3])
        if words[:3] == ["power", "off", "vm"] and len(words) == 4:
            vm = self.vm(words[3])
            if vm.host is None:
                self.say(f"{vm.id} is not running", 1)
                return
            self.vms[vm.id] = replace(vm, host=None)
            self.demands.pop(vm.id, None)
            stopped.add(vm.id)
            self.say(f"{vm.id} stopped on {vm.host}", 1)
            return
        if words[:2] == ["explain", "vm"] and len(words) == 3:
            vm = self.vm(words[2])
            self.render(place(self.snapshot(), vm), 1, full=True)
            return
        if words[:2] == ["reserve", "vm"]:
            vm = self.vm(words[2])
            ttl = float(words[4]) if len(words) >= 5 and words[3] == "ttl" else None
            r = place(self.snapshot(), vm)
            self.render(r, 1, full=True)
            if r.host:
                self.pending[vm.id] = (PendingReservation(vm.id, r.host, vm.memory_mib, vm.vcpus, vm.cpu_reservation_mhz), None if ttl is None else self.t + ttl)
                self.say(f"reserved {vm.id} on {r.host}" + (f" until t={_num(self.t + ttl)}" if ttl is not None else ""), 1)
            return
        if words[:2] == ["commit", "vm"]:
            vid = words[2]
            if vid not in self.pending:
                self.say(f"no reservation for {vid}", 1)
                return
            p, _ = self.pending[vid]
            self._start(vid, p.host_id)
            self.say(f"{vid} started on {p.host_id}", 1)
            return
        if words[:2] == ["release", "vm"]:
            p = self.pending.pop(words[2], None)
            self.say(f"reservation of {words[2]} on {p[0].host_id} released" if p else f"no reservation for {words[2]}", 1)
            return
        if words[:2] == ["migrate", "vm"] and len(words) == 5 and words[3] == "to":
            vm, target = self.vm(words[2]), words[4]
            self.host(target)
            if vm.host is None:
                self.say(f"REFUSED: {vm.id} is not running", 1)
                return
            r = place(self.snapshot(), vm, only=[target])
            if r.host:
                self.say(f"{vm.id} moved {vm.host} -> {target}", 1)
                self.render(r, 1, full=False, only_host=target)
                self.vms[vm.id] = replace(vm, host=target)
                self.moved_at[vm.id] = self.t
            else:
                self.say(f"REFUSED: {vm.id} cannot move to {target}", 1)
                for rej in r.rejected:
                    if rej.host_id == target:
                        for f, why in zip(rej.filters, rej.reasons):
                            self.say(f"x {rej.host_name} [{f}] {why}", 1)
            return
        if head == "host" and len(words) >= 3:
            return self._host_event(words[1], words[2:], stopped)
        if head == "evacuate" and len(words) == 2:
            self.host(words[1])
            self._evacuate(words[1], all_or_nothing=False, why="evacuation")
            return
        if words[:2] == ["remove", "rule"]:
            before = len(self.rules)
            self.rules = [r for r in self.rules if r.name != words[2]]
            self.say(f"rule {words[2]} removed" if len(self.rules) < before else f"no rule {words[2]}", 1)
            return
        if head == "vm" and len(words) >= 3 and words[2] == "demand":
            return self._demand(words[1], words[3:])
        if cmd == "entitlements":
            return self._entitlements()
        if cmd == "violations":
            vs = rules_mod.violations(self.snapshot())
            for v in vs:
                self.say(str(v), 1)
            if not vs:
                self.say("no rule violated", 1)
            return
        if words[:2] == ["check", "cpu"] and len(words) == 6:
            vm, host = self.vm(words[3]), self.host(words[5])
            req = vm.cpu if vm.cpu is not None else (requirement_of(self.evc) if self.evc else None)
            ok, missing = compatible(req, host.cpu)
            self.say(f"{vm.id} on {host.id}: " + ("compatible" if ok else f"incompatible, missing {', '.join(missing)}"), 1)
            return
        if words[:2] == ["evc", "on"]:
            return self._evc_on(words[2:])
        if cmd == "evc off":
            self.evc = None
            self.say("EVC off", 1)
            return
        if head == "delay" and len(words) == 2:
            self.t += float(words[1])
            for vid, (p, until) in sorted(self.pending.items()):
                if until is not None and until <= self.t:
                    del self.pending[vid]
                    self.say(f"reservation of {vid} on {p.host_id} expired", 1)
            return
        raise ScenarioError(f"unknown event {cmd!r}")

    def _host_event(self, host_id: str, action: list[str], stopped: set[str]) -> None:
        h = self.host(host_id)
        act = " ".join(action)
        if act == "power off":
            self.powered[host_id] = False
            victims = sorted(v.id for v in self.vms.values() if v.host == host_id)
            for vid, (p, _) in sorted(self.pending.items()):
                if p.host_id == host_id:
                    del self.pending[vid]
                    self.say(f"reservation of {vid} on {host_id} dropped", 1)
            for vid in victims:
                self.vms[vid] = replace(self.vms[vid], host=None)
            if not victims:
                self.say(f"{host_id} down, no VM to restart", 1)
                return
            self.say(f"{host_id} down: HA restarts {', '.join(victims)}", 1)
            placed = self._place_many(victims)
            for vid, target in placed.items():
                if target:
                    self._start(vid, target)
                else:
                    self.down[vid] = f"could not restart after {host_id} failed"
            lost = sorted(v for v, t in placed.items() if not t)
            if lost:
                self.say(f"down: {', '.join(lost)}", 1)
            return
        if act == "power on":
            self.powered[host_id] = True
            self.say(f"{host_id} up", 1)
            return
        if act in ("disconnect", "connect"):
            self.hosts[host_id] = replace(h, connection="disconnected" if act == "disconnect" else "connected")
            self.say(f"{host_id} {self.hosts[host_id].connection}", 1)
            return
        if act in ("maintenance on", "standby on"):
            mode = action[0]
            if self._evacuate(host_id, all_or_nothing=True, why=f"{mode} mode"):
                self.hosts[host_id] = replace(self.hosts[host_id], **{mode: True})
                self.say(f"{host_id} in {mode}", 1)
            return
        if act in ("maintenance off", "standby off"):
            self.hosts[host_id] = replace(h, **{action[0]: False})
            self.say(f"{host_id} out of {action[0]}", 1)
            return
        raise ScenarioError(f"unknown host event {act!r}")

    def _add_rule(self, spec: dict) -> None:
        rule = self._rule(spec)
        found = rules_mod.contradictions_with(self.rules, rule)
        if found:
            for c in found:
                self.say(f"REFUSED: {c}", 1)
            return
        if any(r.name == rule.name for r in self.rules):
            self.say(f"REFUSED: rule '{rule.name}' exists", 1)
            return
        current = rules_mod.violations(self.snapshot(), [rule])
        if current and rule.must:
            for v in current:
                self.say(f"REFUSED: rule '{rule.name}' is violated by the current placement: {v.message}", 1)
            return
        self.rules.append(rule)
        self.say(f"rule {rule.name} added ({rule.strength} {rule.kind.value})", 1)
        for v in current:
            self.say(f"note: {v}", 1)

    def _add_host(self, spec: dict) -> None:
        h, powered = self._host(spec)
        ok, missing = can_join(self.evc, h.cpu)
        if not ok:
            self.say(f"REFUSED: host {h.id} cannot join: CPU lacks EVC baseline '{self.evc.model}': missing {', '.join(missing)}", 1)
            return
        self.hosts[h.id] = h
        self.powered[h.id] = powered
        self.say(f"host {h.id} joined", 1)

    def _evc_on(self, host_ids: list[str]) -> None:
        chosen = host_ids or list(self.hosts)
        try:
            base = baseline([self.host(h).cpu for h in chosen], "evc-" + "-".join(chosen))
        except ValueError as exc:
            self.say(f"REFUSED: {exc}", 1)
            return
        bad = []
        for h in self.hosts.values():
            ok, missing = can_join(base, h.cpu)
            if not ok:
                bad.append(f"{h.id} missing {', '.join(missing)}")
        if bad:
            self.say(f"REFUSED: EVC baseline over {', '.join(chosen)} not met by {'; '.join(bad)}", 1)
            return
        self.evc = base
        self.say(f"EVC on: baseline '{base.model}' ({base.vendor}, features: {', '.join(sorted(base.features))})", 1)

    def _demand(self, vm_id: str, args: list[str]) -> None:
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
        self._entitlements()

    def _entitlements(self) -> None:
        snap = self.snapshot()
        tree = PoolTree.from_snapshot(snap)
        ent = entitlements(tree, None, self.demands)
        self.say(f"capacity cpu={_num(tree.capacity.cpu_mhz)} MHz mem={_num(tree.capacity.mem_mib)} MiB", 1)
        for vid in sorted(ent):
            c, m = ent[vid]
            d = self.demands.get(vid)
            dtext = f" (demand cpu={_num(d[0])} mem={_num(d[1])})" if d else ""
            self.say(f"{vid} [{self.vms[vid].pool or 'root'}] cpu={_num(c)} MHz mem={_num(m)} MiB{dtext}", 1)

    # -- invariants ------------------------------------------------------------------------
    def check_invariants(self, event: str, before: set[str], may_stop: set[str]) -> None:
        where = f"[t={_num(self.t)}] after '{event}'"
        snap = self.snapshot()
        for v in rules_mod.violations(snap):
            if v.must:
                self.failures.append(f"{where}: {v}")
        mem: dict[str, float] = {}
        vcpu: dict[str, float] = {}
        mhz: dict[str, float] = {}
        for vm in self.vms.values():
            if vm.host is None:
                continue
            if vm.host not in self.hosts:
                self.failures.append(f"{where}: {vm.id} on unknown host {vm.host}")
                continue
            if not self.powered[vm.host]:
                self.failures.append(f"{where}: {vm.id} runs on {vm.host}, which is powered off")
            h = self.hosts[vm.host]
            if h.maintenance or h.standby:
                self.failures.append(f"{where}: {vm.id} runs on {vm.host}, which is in maintenance/standby")
            if vm.id in self.pending and vm.id not in self.in_flight:
                self.failures.append(f"{where}: {vm.id} runs and holds a reservation")
            mem[vm.host] = mem.get(vm.host, 0) + vm.memory_mib
            vcpu[vm.host] = vcpu.get(vm.host, 0) + vm.vcpus
            mhz[vm.host] = mhz.get(vm.host, 0) + vm.cpu_reservation_mhz
        for p, _ in self.pending.values():
            mem[p.host_id] = mem.get(p.host_id, 0) + p.memory_mib
            vcpu[p.host_id] = vcpu.get(p.host_id, 0) + p.vcpus
            mhz[p.host_id] = mhz.get(p.host_id, 0) + p.cpu_reservation_mhz
        for hid, h in self.hosts.items():
            used = mem.get(hid, 0) + h.reserved_memory_mib + h.used_memory_mib
            if used > h.memory_mib:
                self.failures.append(f"{where}: host {hid} memory over capacity: {_num(used)} of {h.memory_mib} MiB")
            if vcpu.get(hid, 0) > h.cores * h.vcpu_ratio:
                self.failures.append(f"{where}: host {hid} vCPUs over capacity: {_num(vcpu[hid])} of {_num(h.cores * h.vcpu_ratio)}")
            if mhz.get(hid, 0) > h.cpu_mhz - h.reserved_cpu_mhz - h.used_cpu_mhz + 1e-6:
                self.failures.append(f"{where}: host {hid} CPU reservations over capacity")
        for vid in sorted(before - self.running()):
            if vid not in self.vms:
                self.failures.append(f"{where}: VM {vid} lost (gone from the inventory)")
            elif vid not in may_stop:
                self.failures.append(f"{where}: VM {vid} lost (ran before, neither running nor stopped with a reason)")
        tree = PoolTree.from_snapshot(snap)
        for p in self.pools:
            for r in ("cpu", "mem"):
                a = tree.alloc(p.id, r)
                used = tree.used(p.id, r)
                if not a.expandable and used > a.reservation + 1e-6:
                    self.failures.append(f"{where}: pool {p.label} {r} reservations {_num(used)} exceed its reservation {_num(a.reservation)}")
                if a.limit is not None and max(used, a.reservation) > a.limit + 1e-6:
                    self.failures.append(f"{where}: pool {p.label} {r} reservations {_num(used)} exceed its limit {_num(a.limit)}")


# -- entry points ----------------------------------------------------------------------------


def _load_yaml(path: Path) -> Any:
    with path.open() as f:
        return yaml.safe_load(f)


def run_scenario(directory: str | Path) -> ScenarioResult:
    """Run one scenario folder; returns its log and any invariant failures."""
    d = Path(directory)
    cluster = _load_yaml(d / "cluster.yaml")
    sim = Sim(cluster)
    events = _load_yaml(d / "events.yaml") if (d / "events.yaml").exists() else []
    for item in events or []:
        sim.run_event(item)
    sim.finish()
    return ScenarioResult("\n".join(sim.lines) + "\n", sim.failures, (cluster or {}).get("known_gap"))


def scenario_dirs(root: str | Path) -> list[Path]:
    return sorted(p for p in Path(root).iterdir() if (p / "cluster.yaml").exists())


def diff(directory: str | Path, result: ScenarioResult | None = None) -> str:
    """Unified diff of the expected log against this run ('' when equal)."""
    import difflib

    d = Path(directory)
    result = result or run_scenario(d)
    expected_path = d / "expected.log"
    expected = expected_path.read_text() if expected_path.exists() else ""
    if expected == result.log:
        return ""
    return "".join(difflib.unified_diff(expected.splitlines(True), result.log.splitlines(True), "expected.log", "actual"))


def iter_results(dirs: Iterable[Path]) -> Iterable[tuple[Path, ScenarioResult]]:
    for d in dirs:
        yield d, run_scenario(d)
