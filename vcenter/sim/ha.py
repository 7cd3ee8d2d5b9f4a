"""HA in the golden scenario runner (mixed into ``runner.Sim``): a simulated cluster world
(hosts, links, datastores, Redis, agents, reports) and the simulated HA environment through
which the production monitor (vcenter.services.ha.ha_manager.HaMonitor) runs on the logical
clock, as pve-ha-manager's Manager runs in its simulator through Sim/Env.pm. Nothing here
judges a host or plans a restart: the monitor does, exactly as in ``vcenter ha``.

A scenario turns HA on with ``ha: {..}`` in cluster.yaml:
  detection (5), isolation_response (leave-powered-on | power-off | shutdown), isolation_delay (3),
  lease (3: an agent that cannot renew its datastore heartbeat this long kills its VMs, whose
  disk leases lapse), default_priority (medium), lock_ttl (3: a standby monitor takes over this
  long after the active one died), redis_grace (0: the monitor's ha_redis_return_grace),
  wake (3: seconds a standby host takes to power on),
  restart: {retry_base, retry_max, max_attempts}, admission: {kind, host_failures, cpu_percent,
  memory_percent, failover_hosts}, vm_monitoring: {enabled, failure_interval, min_uptime,
  max_resets, window}. Per VM: ``restart_priority``; per host: ``datastore_heartbeat`` (true).

With HA on, ``delay N`` runs the world and the monitors (one active, one standby) once per
simulated second: agents (heartbeat key, datastore heartbeat file and the view of their peers'
files they publish, isolation response), the hosts' reports (the inventory learns a VM is
powered off where it is defined but not running, and records how it stopped as
services.reports does: a lease lapse is libvirt's "crashed", a host's power loss seen by no
agent is "unobserved", an isolation response is asked for), woken hosts, then each live monitor's
``step()``. Restart and reset commands are executed by the target agent at once. Events:
  host H crash | host H power off      power loss: the host and its VMs die at once
  host H power on                      the host boots (nothing runs; it holds no disks)
  network H down|up                    the host's link (Redis and isolation addresses unreachable)
  network H loss P                     P % of the host's heartbeats lost (deterministic pattern)
  datastore H down|up                  the host loses / regains its shared datastores
  redis down|up                        Redis stops / restarts (its keys, the lock too, are lost)
  monitor fail                         the active monitor dies; the standby takes over after lock_ttl
  monitor stale-write                  the dead monitor, come back, runs a pass with its old token
  vm X hang [forever]                  the guest stops its heartbeat (a reset cures it unless forever)
  vm X fail start                      the next start of X fails (its Task ends in error)
  vm X moved unrecorded to H           X runs (and holds its disks) on H; the inventory missed it
  ha capacity                          log the failover capacity under the admission policy
  power on vm X / migrate vm X to H    checked by admission control first (then placement)

Invariants (whatever the log says), after every second and every event: no VM runs on two
hosts; no start is attempted while the VM's disks are held by a live holder that did not
release them; no VM lost: every VM that should run either runs or is accounted for by HA with
a reason (waiting, given up, released by an isolation response and not yet declared, its host
not declared failed yet).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from vcenter.domain import ha
from vcenter.services.ha.ha_manager import (
    HaCluster,
    HaMonitor,
    MonitoredHost,
    RestartRow,
    StaleToken,
    UnexpectedStop,
    Unreachable,
    WatchedVm,
)

_LOSS_PATTERN = 10  # heartbeat n is lost when (n * 7) % 10 < P/10: spread, never long bursts
_KEY_TTL = 3.0  # seconds a heartbeat key or datastore view stays in Redis unless rewritten (the agents' px)
# The monitor's log lines are production's (Redis unhealthy, fenced out): the scenario log says
# what happened; a scenario run prints nothing else.
_MONITOR_LOG = logging.getLogger("vcenter.sim.ha.monitor")
_MONITOR_LOG.addHandler(logging.NullHandler())
_RELEASED_FOR = 60.0  # seconds an agent keeps listing the VMs its isolation response released


def _num(x: float) -> str:
    return f"{x:.0f}" if abs(x - round(x)) < 1e-6 else f"{x:.1f}"


@dataclass
class _Restart:
    """A VM HA must restart, as the monitor's store keeps it (an ``ha_restart`` row)."""

    from_host: str
    cause: str
    state: str = "waiting"  # waiting | gave_up (starts run at once: never left "starting")
    attempts: int = 0
    next_try_at: float | None = None
    reason: str | None = None


class SimHaEnvironment:
    """The HA environment of a simulated cluster: the Redis lock and keys, the monitor's state
    (its store, one in-memory "database"), the agents that run its commands."""

    def __init__(self, sim: Any) -> None:
        self.sim = sim
        self.lock_owner: str | None = None
        self.lock_until = 0.0
        self.token_row = 0
        self.token_owner = ""
        self.frozen_row: str | None = None
        self.health_row: dict[str, ha.HostHealth] = {}
        self.restarts: dict[str, _Restart] = {}
        self.resets: dict[str, list[float]] = {}
        self.stops: dict[str, tuple[str, str]] = {}  # VM -> (host, reason): unexpected stops not yet handled (vms.unexpected_stop)
        self.quiet = False  # the first takeover, at load, is not logged

    # -- environment -----------------------------------------------------------------------
    def clock(self) -> float:
        return self.sim.t

    def acquire_lock(self, owner: str) -> bool:
        if not self.sim.redis_up:
            raise Unreachable("connection refused")
        if self.lock_owner is not None and self.lock_until > self.sim.t:
            return False
        self.lock_owner, self.lock_until = owner, self.sim.t + self.sim.lock_ttl
        return True

    def renew_lock(self, owner: str) -> bool:
        if not self.sim.redis_up:
            raise Unreachable("connection refused")
        if self.lock_owner != owner or self.lock_until <= self.sim.t:
            return False
        self.lock_until = self.sim.t + self.sim.lock_ttl
        return True

    def release_lock(self, owner: str) -> None:
        if self.sim.redis_up and self.lock_owner == owner:
            self.lock_owner = None

    def take_token(self, owner: str) -> int:
        self.token_row += 1
        self.token_owner = owner
        self._say(f"HA monitor {owner} took the lock (token {self.token_row}); reconciling before any restart")
        return self.token_row

    def count_pass(self) -> None:
        """Nothing to count: scenarios read the monitor itself (production counts in Redis)."""

    def inventory(self) -> tuple[list[HaCluster], list[MonitoredHost]]:
        s = self.sim
        return [HaCluster("c1", s.det.detection_s, s.vmmon)], [MonitoredHost(h, s.hosts[h].maintenance, s.hosts[h].standby) for h in sorted(s.hosts)]

    def read_heartbeats(self, hosts: Sequence[MonitoredHost]) -> list[tuple[Any, Mapping[str, Any] | None]]:
        s = self.sim
        if not s.redis_up:
            raise Unreachable("connection refused")
        out = []
        for h in hosts:
            beat, view = s.beats.get(h.key), s.views.get(h.key)
            out.append((beat[1] if beat and s.t - beat[0] < _KEY_TTL else None, view[1] if view and s.t - view[0] < _KEY_TTL else None))
        return out

    def host_key(self, name: str) -> str:
        return name

    @contextmanager
    def writes(self) -> Iterator[SimHaEnvironment]:
        yield self  # a fenced write raises before it changes anything: nothing to roll back

    # -- the store -------------------------------------------------------------------------
    def _say(self, text: str, indent: int = 1) -> None:
        if not self.quiet:
            self.sim.say(f"t={_num(self.sim.t)} {text}", indent)

    def _fence(self, token: int) -> None:
        if not ha.fence_ok(token, self.token_row):
            raise StaleToken(f"HA monitor token {token} is stale (highest seen {self.token_row}, held by {self.token_owner})")

    def load_health(self) -> dict[str, ha.HostHealth]:
        return dict(self.health_row)

    def reconcile(self, token: int) -> list[ha.Reconciled]:
        self._fence(token)
        s = self.sim
        out = []
        for v, r in sorted(self.restarts.items()):
            if v in s.power_on and s.recorded.get(v) != r.from_host and r.state != "starting":
                del self.restarts[v]
                out.append(ha.Reconciled(v, "moved", (str(s.recorded.get(v)),), "runs elsewhere already"))
        return out

    def record_reconciled(self, settled: Sequence[ha.Reconciled]) -> None:
        self._say(f"HA monitor reconciled after takeover: {len(settled)} restart(s) settled", 2)
        for r in settled:
            self._say(f"reconcile {r.vm_id}: {r.verdict}: {r.reason}", 2)

    def set_frozen(self, token: int, frozen: str | None, owner: str) -> None:
        self._fence(token)
        if self.frozen_row != frozen:
            self.frozen_row = frozen
            self._say("monitor " + (f"FROZEN: {frozen}" if frozen else "unfrozen"))

    def record_transitions(self, token: int, transitions: Sequence[ha.Transition]) -> list[Hashable]:
        failed: list[Hashable] = []
        for tr in transitions:
            self.health_row[tr.host_id] = tr.after
            self._say(f"{tr.host_id}: {tr.before.value} -> {tr.after.value}: {tr.reason}")
            # The inventory's connection state follows (the server stops hearing the host).
            conn = "connected" if tr.after == ha.HostHealth.CONNECTED else "notResponding"
            self.sim.hosts[tr.host_id] = replace(self.sim.hosts[tr.host_id], connection=conn)
            if tr.after == ha.HostHealth.FAILED:
                failed.append(tr.host_id)
        return failed

    def add_candidates(self, host: Hashable, cause: str, vm_uuids: Iterable[str] | None = None, power_state: str = "poweredOn") -> list[Hashable]:
        s = self.sim
        wanted = None if vm_uuids is None else set(vm_uuids)
        added: list[Hashable] = []
        for v in sorted(s.vms):
            on = v in s.power_on
            if s.recorded.get(v) != host or on != (power_state == "poweredOn") or (wanted is not None and v not in wanted):
                continue
            if v in self.restarts:
                continue
            self.restarts[v] = _Restart(str(host), cause)
            added.append(v)
        return added

    def vm_uuids(self) -> dict[Hashable, str]:
        return {v: v for v in self.sim.vms}

    def unexpected_stops(self) -> list[UnexpectedStop]:
        s = self.sim
        return [UnexpectedStop(v, h, v, ha.StoppedVm(v, h, reason, "poweredOn" if v in s.power_on else "poweredOff", True, v in self.restarts)) for v, (h, reason) in sorted(self.stops.items())]

    def stops_handled(self, token: int, stops: Sequence[UnexpectedStop]) -> None:
        self._fence(token)
        for st in stops:
            if self.stops.get(str(st.vm), (None, None))[1] == st.fact.reason:
                del self.stops[str(st.vm)]

    def waiting_restarts(self, token: int, cluster: HaCluster) -> list[str]:
        self._fence(token)
        return [v for v, r in sorted(self.restarts.items()) if r.state == "waiting"]

    def restart_inputs(self, cluster: HaCluster, rows: list[str], health: Mapping[str, ha.HostHealth]):
        s = self.sim
        snap = s.snapshot()
        snap = replace(snap, hosts=tuple(replace(h, connection="notResponding") if health.get(h.id, ha.HostHealth.CONNECTED) != ha.HostHealth.CONNECTED else h for h in snap.hosts))
        out = [
            RestartRow(
                v, self.restarts[v].from_host, self.restarts[v].cause, self.restarts[v].attempts, self.restarts[v].next_try_at, replace(s.vms[v], host=None), s.priority.get(v, s.default_priority)
            )
            for v in rows
        ]
        failover = sorted(s.admission.failover_hosts) if s.admission.kind == ha.AdmissionKind.FAILOVER_HOSTS else []
        return snap, out, s.t, s.restart, failover

    def start_restart(self, token: int, start: ha.Start, placement: Any, holder: Hashable | None) -> bool:
        s, v, h = self.sim, start.vm_id, start.host_id
        row = self.restarts[v]
        tag = f"t={_num(s.t)}"
        self._say(f"restart {v} on {h} (try {start.attempt}): {start.reason}")
        if s.actual.get(v):
            s.failures.append(f"[{tag}] HA started {v} on {h} while it runs on {', '.join(sorted(s.actual[v]))}")
        held = s.holder.get(v)
        if held is not None and s.alive.get(held) and s.ds_up.get(held):
            s.failures.append(f"[{tag}] HA started {v} while its disks are held by live host {held}")
        # The target's agent runs the command at once and reports (services.ha.ha.on_result).
        if v in s.fail_start:
            s.fail_start.discard(v)
            c = ha.RestartCandidate(s.vms[v], ha.Priority.MEDIUM, row.from_host, None, row.attempts)
            n, nxt = ha.after_failed_start(c, s.t, s.restart)
            row.attempts = n
            if nxt is None:
                row.state, row.reason = "gave_up", f"gave up after {n} tries: AGENT_ERROR: start failed"
                self._say(f"HA gave up on {v}: {row.reason}")
            else:
                row.next_try_at, row.reason = nxt, f"try {n} failed (AGENT_ERROR), retry at t={_num(nxt)}"
                self._say(f"HA restart of {v} failed: AGENT_ERROR: start failed; retry at t={_num(nxt)}")
            return True
        s.ha_run(v, h)
        s.recorded[v] = h
        s.power_on.add(v)
        del self.restarts[v]
        return True

    def note_wait(self, wait: ha.Wait) -> None:
        row = self.restarts[wait.vm_id]
        if row.reason != wait.reason:
            self._say(f"{wait.vm_id} waits: {wait.reason}")
        row.reason, row.attempts = wait.reason, wait.attempts
        row.next_try_at = wait.until if wait.until is not None else row.next_try_at if wait.attempts else None

    def give_up(self, wait: ha.Wait) -> None:
        row = self.restarts[wait.vm_id]
        row.state, row.reason, row.attempts = "gave_up", wait.reason, wait.attempts
        self._say(f"{wait.vm_id}: {wait.reason}")

    def wake(self, cluster: HaCluster, plan: ha.RestartPlan) -> None:
        s = self.sim
        for h in plan.wake:
            if h not in s.waking:
                s.waking[h] = s.t + s.wake_s
                self._say(f"capacity short: waking standby host {h} through its power driver")

    def watched_vms(self, cluster: HaCluster) -> list[WatchedVm]:
        s = self.sim
        if not cluster.vm_monitoring.enabled:
            return []
        return [WatchedVm(v, s.recorded.get(v), v in s.power_on, v in self.restarts, s.guest_reported.get(v)) for v in sorted(s.vms)]

    def reset_ages(self, vm: WatchedVm, window_s: float) -> list[float]:
        return [self.sim.t - at for at in self.resets.get(str(vm.key), []) if self.sim.t - at <= window_s]

    def reset_vm(self, token: int, vm: WatchedVm, verdict: ha.VmVerdict) -> bool:
        self._fence(token)
        s, v = self.sim, str(vm.key)
        self._say(f"reset {v} on {vm.host}: {verdict.reason}")
        self.resets.setdefault(v, []).append(s.t)
        # The guest reboots: its heartbeat starts again (one beat at boot) and goes on, unless
        # it hangs for good.
        s.guest_seq[v] = s.guest_seq.get(v, 0) + 1
        if s.hang.get(v) == "once":
            del s.hang[v]
        return True

    def record_reset_limit(self, vm: WatchedVm, verdict: ha.VmVerdict) -> None:
        self._say(f"{vm.key}: {verdict.reason}")


class HaSimMixin:
    # provided by Sim
    t: float
    vms: dict
    hosts: dict
    powered: dict
    failures: list

    def _ha_init(self, cluster: dict) -> None:
        spec = cluster.get("ha")
        self.ha_on = spec is not None
        spec = dict(spec or {})
        self.ha_spec = spec
        self.det = ha.DetectionSettings(detection_s=float(spec.get("detection", 5.0)))
        self.iso_response = ha.IsolationResponse(spec.get("isolation_response", "leave-powered-on"))
        self.iso_delay = float(spec.get("isolation_delay", 3.0))
        self.lease_s = float(spec.get("lease", 3.0))
        self.lock_ttl = float(spec.get("lock_ttl", 3.0))
        self.wake_s = float(spec.get("wake", 3.0))
        r = spec.get("restart") or {}
        self.restart = ha.RestartSettings(float(r.get("retry_base", 2.0)), float(r.get("retry_max", 60.0)), int(r.get("max_attempts", 5)))
        a = spec.get("admission") or {"kind": "disabled"}
        self.admission = ha.AdmissionPolicy(
            ha.AdmissionKind(a.get("kind", "host-failures")),
            int(a.get("host_failures", 1)),
            float(a.get("cpu_percent", 25)),
            float(a.get("memory_percent", 25)),
            frozenset(a.get("failover_hosts", [])),
        )
        # Dedicated failover hosts: placement and DRS keep them empty (HA restarts may use them).
        for h in ha.reserved_hosts(self.admission) if self.ha_on else ():
            self.hosts[h] = replace(self.host(h), failover=True)
        m = spec.get("vm_monitoring") or {"enabled": False}
        self.vmmon = ha.VmMonitoringSettings(
            bool(m.get("enabled", True)), float(m.get("failure_interval", 30)), float(m.get("min_uptime", 30)), int(m.get("max_resets", 3)), float(m.get("window", 3600))
        )
        default = ha.Priority(spec.get("default_priority", "medium"))
        self.priority = {str(v["id"]): ha.Priority(v.get("restart_priority", default.value)) for v in cluster.get("vms") or []}
        self.default_priority = default
        self.ds_channel = {str(h["id"]): bool(h.get("datastore_heartbeat", True)) for h in cluster.get("hosts") or []}
        # the world
        self.alive = {h: self.powered[h] for h in self.hosts}
        self.link = {h: True for h in self.hosts}
        self.loss = {h: 0 for h in self.hosts}
        self.ds_up = {h: True for h in self.hosts}
        self.ds_down_at: dict[str, float] = {}
        self.link_down_at: dict[str, float] = {}
        self.isolated_applied: set[str] = set()
        self.redis_up = True
        self.hb_count = {h: 0 for h in self.hosts}
        self.beats: dict[str, tuple[float, str]] = {}  # Redis: (written at, value) of each host's heartbeat key (its clock)
        self.views: dict[str, tuple[float, dict]] = {}  # Redis: (written at, view) each agent published
        self.ds_files: dict[str, dict] = {}  # the shared datastore: each host's heartbeat file
        self.ds_counter = {h: 0 for h in self.hosts}
        self.actual: dict[str, set[str]] = {v.id: {v.host} for v in self.vms.values() if v.host}
        self.defined: dict[str, set[str]] = {h: {v.id for v in self.vms.values() if v.host == h} for h in self.hosts}
        self.holder: dict[str, str | None] = {v.id: v.host for v in self.vms.values() if v.host}
        self.released_by: dict[str, dict[str, float]] = {}  # host -> {VM its isolation response released: when}
        self.desired_on: set[str] = {v.id for v in self.vms.values() if v.host}  # what should run (the invariant's view)
        self.hang: dict[str, str] = {}  # vm -> "once" | "forever"
        self.guest_seq: dict[str, int] = {}
        self.guest_reported: dict[str, int] = {}
        self.fail_start: set[str] = set()
        self.stop_reason: dict[str, str] = {}  # VM -> the lifecycle reason its agent reported when it stopped it
        self.waking: dict[str, float] = {}
        # the inventory (what the database says)
        self.recorded: dict[str, str | None] = {v.id: v.host for v in self.vms.values() if v.host}
        self.power_on: set[str] = {v.id for v in self.vms.values() if v.host}
        # the monitors: production's loop in a simulated environment; m1 active, m2 standby
        self.ha_env = SimHaEnvironment(self)
        grace = float(spec.get("redis_grace", 0.0))
        self.monitors = [HaMonitor(self.ha_env, "m1", grace, _MONITOR_LOG), HaMonitor(self.ha_env, "m2", grace, _MONITOR_LOG)]
        self.dead_monitor: HaMonitor | None = None
        self._next_monitor = 3
        if self.ha_on:
            # The world ran before t=0: every live host has beaten and written its datastore
            # heartbeat file once, and published what it read.
            for h in sorted(self.hosts):
                if self.alive[h]:
                    self.beats[h] = (0.0, "0")
                    if self.ds_channel.get(h, True):
                        self.ds_files[h] = {"n": 0, "at": 0.0, "holds": sorted(v for v, x in self.holder.items() if x == h), "released": []}
            for h in sorted(self.hosts):
                if self.alive[h]:
                    self.views[h] = (0.0, {peer: dict(f) for peer, f in self.ds_files.items()})
            self.ha_env.quiet = True
            self.monitors[0].try_acquire()
            self.monitors[0].run_pass()  # it has been watching: every heartbeat is known at t=0
            self.ha_env.quiet = False

    # -- the world -------------------------------------------------------------------------
    def ha_run(self, vm_id: str, host: str) -> None:
        """The VM starts on ``host`` (an HA start): defined and holding its disks there."""
        self.actual.setdefault(vm_id, set()).add(host)
        self.defined.setdefault(host, set()).add(vm_id)
        self.vms[vm_id] = replace(self.vms[vm_id], host=host)
        self.holder[vm_id] = host
        for rel in self.released_by.values():
            rel.pop(vm_id, None)
        self.guest_seq.pop(vm_id, None)
        self.stop_reason.pop(vm_id, None)

    def _ha_kill(self, vm_id: str, host: str, release: bool) -> None:
        self.actual.get(vm_id, set()).discard(host)
        if self.vms[vm_id].host == host:
            left = self.actual.get(vm_id)
            self.vms[vm_id] = replace(self.vms[vm_id], host=next(iter(left)) if left else None)
        if release and self.holder.get(vm_id) == host:
            self.holder[vm_id] = None
            self.released_by.setdefault(host, {})[vm_id] = self.t

    def _vms_on(self, host: str) -> list[str]:
        return sorted(v for v, hs in self.actual.items() if host in hs)

    def _active_monitor(self) -> HaMonitor | None:
        return next((m for m in self.monitors if m.active), None)

    # -- dispatch --------------------------------------------------------------------------
    def _ha_dispatch(self, cmd: str, words: list[str], payload: Any, stopped: set[str]) -> bool:
        if not self.ha_on:
            return False
        if words[0] == "delay" and len(words) == 2:
            end = self.t + float(words[1])
            while self.t < end - 1e-9:
                self.t = min(end, self.t + 1.0)
                self._ha_tick(stopped)
            return True
        if words[0] == "host" and len(words) >= 3 and words[2:] in (["crash"], ["power", "off"]):
            h = words[1]
            self.host(h)
            victims = self._vms_on(h)
            self.alive[h] = False
            self.powered[h] = False
            for v in victims:
                self._ha_kill(v, h, release=False)
                stopped.add(v)
            self.say(f"{h} lost power" + (f"; its VMs died: {', '.join(victims)}" if victims else ""), 1)
            return True
        if words[0] == "host" and len(words) == 4 and words[2:] == ["power", "on"]:
            h = words[1]
            self.alive[h] = self.powered[h] = True
            for v, holder in list(self.holder.items()):
                if holder == h and h not in self.actual.get(v, set()):
                    self.holder[v] = None  # a booted host holds no disk: nothing runs there
            self.say(f"{h} booted (runs nothing, holds no disk)", 1)
            return True
        if words[0] == "network" and len(words) >= 3:
            h = words[1]
            self.host(h)
            if words[2] == "down":
                self.link[h] = False
                self.link_down_at[h] = self.t
            elif words[2] == "up":
                self.link[h] = True
                self.link_down_at.pop(h, None)
                self.isolated_applied.discard(h)
            elif words[2] == "loss":
                self.loss[h] = int(words[3])
            else:
                return False
            self.say(f"{h} link {' '.join(words[2:])}", 1)
            return True
        if words[0] == "datastore" and len(words) == 3:
            h = words[1]
            self.ds_up[h] = words[2] == "up"
            if self.ds_up[h]:
                self.ds_down_at.pop(h, None)
            else:
                self.ds_down_at[h] = self.t
            self.say(f"{h} datastores {words[2]}", 1)
            return True
        if cmd in ("redis down", "redis up"):
            self.redis_up = cmd == "redis up"
            if self.redis_up:  # a restarted Redis has lost its keys, the monitor's lock with them
                self.beats.clear()
                self.views.clear()
                self.ha_env.lock_owner = None
            self.say("Redis " + ("restarted (its keys are gone)" if self.redis_up else "stopped"), 1)
            return True
        if cmd == "monitor fail":
            m = self._active_monitor()
            if m is None:
                self.say("no active monitor", 1)
                return True
            # It stops renewing its lock; a new standby process starts in its place.
            self.monitors.remove(m)
            self.dead_monitor = m
            self.monitors.append(HaMonitor(self.ha_env, f"m{self._next_monitor}", m.redis_return_grace, _MONITOR_LOG))
            self._next_monitor += 1
            self.say(f"active monitor {m.owner} (token {m.token}) died", 1)
            return True
        if cmd == "monitor stale-write":
            m = self.dead_monitor
            if m is None or m.token is None:
                self.say("no dead monitor to come back", 1)
                return True
            old = m.token
            m.run_pass()  # it still believes it is active
            if m.token is None:
                self.say(f"old monitor {m.owner} acts with token {old}: refused (fence at {self.ha_env.token_row})", 1)
            else:
                self.say(f"old monitor {m.owner} acts with token {old}: ACCEPTED", 1)
                self.failures.append(f"[t={_num(self.t)}] a stale monitor's write was accepted")
            return True
        if words[0] == "vm" and len(words) >= 3 and words[2] == "hang":
            self.hang[words[1]] = "forever" if words[3:] == ["forever"] else "once"
            self.say(f"guest {words[1]} hangs" + (" for good" if words[3:] == ["forever"] else ""), 1)
            return True
        if words[0] == "vm" and words[2:4] == ["moved", "unrecorded"] and len(words) == 6:
            v, h = words[1], words[5]
            for was in self.actual.get(v, set()):
                self.defined.get(was, set()).discard(v)
            self.actual[v] = {h}
            self.defined.setdefault(h, set()).add(v)
            self.vms[v] = replace(self.vms[v], host=h)
            self.holder[v] = h
            self.say(f"{v} now runs on {h} (and holds its disks there); the inventory still says {self.recorded.get(v)}", 1)
            return True
        if words[0] == "vm" and words[2:] == ["fail", "start"]:
            self.fail_start.add(words[1])
            self.say(f"next start of {words[1]} will fail", 1)
            return True
        if cmd == "ha capacity":
            self._ha_capacity()
            return True
        if words[:3] == ["power", "on", "vm"] and len(words) == 4:
            vm = self.vm(words[3])
            if vm.host is None:
                d = ha.admit(self.snapshot(), vm, None, self.admission)
                if not d.ok:
                    self.say(f"REFUSED [{d.code}]: {d.reason}", 1)
                    return True
                self._place_one(vm.id)
                if self.vms[vm.id].host:
                    h = self.vms[vm.id].host
                    self.actual[vm.id] = {h}
                    self.defined.setdefault(h, set()).add(vm.id)
                    self.holder[vm.id] = h
                    self.recorded[vm.id] = h
                    self.desired_on.add(vm.id)
                    self.power_on.add(vm.id)
                return True
            return False
        if words[:2] == ["migrate", "vm"] and len(words) == 5:
            vm = self.vm(words[2])
            d = ha.admit(self.snapshot(), vm, words[4], self.admission, action="migration")
            if not d.ok:
                self.say(f"REFUSED [{d.code}]: {d.reason}", 1)
                return True
            return False
        return False

    def _ha_after_event(self, event: str) -> None:
        """Bookkeeping after a non-HA event moved or stopped VMs (migrate, power off vm)."""
        if not self.ha_on:
            return
        for v in self.vms.values():
            hs = self.actual.get(v.id, set())
            if v.host is not None and v.host not in hs and len(hs) <= 1:
                for was in hs:
                    self.defined.get(was, set()).discard(v.id)
                self.actual[v.id] = {v.host}
                self.defined.setdefault(v.host, set()).add(v.id)
                self.holder[v.id] = v.host
                self.recorded[v.id] = v.host
            if v.host is None and v.id in self.desired_on and not hs and v.id not in self.ha_env.restarts and event.startswith("power off vm"):
                self.desired_on.discard(v.id)
                self.power_on.discard(v.id)
                self.holder[v.id] = None

    def _ha_capacity(self) -> None:
        c = ha.failover_capacity(self.snapshot(), self.admission)
        self.say(
            f"failover capacity ({c.policy}): {c.hosts} active hosts, memory {_num(c.used_memory_mib)}/{_num(c.total_memory_mib)} MiB "
            f"used, {_num(c.reserved_memory_mib)} reserved; vCPUs {_num(c.used_vcpus)}/{_num(c.total_vcpus)}, "
            f"{_num(c.reserved_vcpus)} reserved; tolerates {c.tolerated_host_failures} host failure(s); "
            f"{'OK' if c.ok else 'VIOLATED'}: {c.reason}",
            1,
        )

    # -- one simulated second --------------------------------------------------------------
    def _ha_tick(self, stopped: set[str]) -> None:
        t = self.t
        for h in self.hosts:  # hosts added by an event
            if h not in self.alive:
                self.alive[h], self.link[h], self.loss[h], self.ds_up[h], self.hb_count[h] = self.powered[h], True, 0, True, 0
                self.ds_counter[h] = 0
        tag = f"t={_num(t)}"
        self._agents(tag, stopped)
        for h, at in list(self.waking.items()):
            if t >= at:
                del self.waking[h]
                self.hosts[h] = replace(self.hosts[h], standby=False)
                self.alive[h] = self.powered[h] = True
                self.say(f"{tag} {h} woke up and joined", 1)
        self._reports(tag)
        for m in list(self.monitors):
            m.step()
        self._ha_invariants(tag)

    def _agents(self, tag: str, stopped: set[str]) -> None:
        t = self.t
        for h in sorted(self.hosts):
            if not self.alive[h]:
                continue
            if not self.link[h] and h not in self.isolated_applied:
                view = ha.IsolationView(t, 0.0, self.link_down_at[h], self.link_down_at[h])
                iso, why = ha.isolated(view, self.iso_delay)
                if iso:
                    self.isolated_applied.add(h)
                    acts = ha.isolation_actions(self.iso_response, self._vms_on(h))
                    self.say(
                        f"{tag} agent {h}: isolated ({why}); response {self.iso_response.value}" + (f": {', '.join(f'{a} {v}' for v, a in acts)}, disks released" if acts else ": VMs left running"), 1
                    )
                    for v, act in acts:
                        self._ha_kill(v, h, release=True)
                        stopped.add(v)
                        self.stop_reason[v] = "destroyed" if act == "stop" else "shutdown"  # the agent asked
            if not self.ds_up[h] and t - self.ds_down_at[h] >= self.lease_s:
                victims = self._vms_on(h)
                if victims:
                    self.say(f"{tag} agent {h}: datastore heartbeat not renewed for {_num(t - self.ds_down_at[h])} s: disk leases lapse, VMs killed: {', '.join(victims)}", 1)
                    for v in victims:
                        self._ha_kill(v, h, release=False)
                        stopped.add(v)
                        self.holder[v] = None  # the lease lapsed: nobody holds the disks
                        self.stop_reason[v] = "crashed"  # QEMU killed: libvirt's lifecycle event says crashed
            for v, since in list(self.released_by.get(h, {}).items()):
                if t - since > _RELEASED_FOR:
                    del self.released_by[h][v]
            # the network heartbeat: a key in Redis, written over the host's link
            if self.redis_up and self.link[h]:
                self.hb_count[h] += 1
                n = self.hb_count[h]
                if not (self.loss[h] and (n * 7) % _LOSS_PATTERN < self.loss[h] / 10):
                    self.beats[h] = (t, f"{t:g}")
            # the datastore heartbeat: this host's file on the shared datastores
            if self.ds_up[h] and self.ds_channel.get(h, True):
                self.ds_counter[h] += 1
                held = sorted(v for v, holder in self.holder.items() if holder == h)
                self.ds_files[h] = {"n": self.ds_counter[h], "at": t, "holds": held, "released": sorted(self.released_by.get(h, {}))}
        # each agent that reads the datastores and reaches Redis publishes what it read there
        for h in sorted(self.hosts):
            if self.alive[h] and self.link[h] and self.redis_up and self.ds_up[h]:
                self.views[h] = (t, {peer: dict(f) for peer, f in self.ds_files.items()})

    def _reports(self, tag: str) -> None:
        """Each reachable host reports its domains (services.orchestration.reports): a VM the inventory has
        powered on there but that is defined and not running there is now powered off; its
        guest heartbeat counter is the one VM monitoring reads."""
        for h in sorted(self.hosts):
            if not (self.alive[h] and self.link[h]):
                continue
            for v in sorted(self.vms):
                if h in self.actual.get(v, set()) and v not in self.hang:
                    self.guest_seq[v] = self.guest_seq.get(v, 0) + 1
                if h in self.actual.get(v, set()):
                    self.guest_reported[v] = self.guest_seq.get(v, 0)
                if self.recorded.get(v) == h and v in self.power_on and h not in self.actual.get(v, set()) and v in self.defined.get(h, set()):
                    self.power_on.discard(v)
                    self.say(f"{tag} report of {h}: {v} is poweredOff (inventory said poweredOn)", 1)
                    # How it stopped, as the reports record it (vms.unexpected_stop): the reason
                    # of its agent's lifecycle event, or "unobserved" when no agent saw it stop
                    # (its host lost power). The monitor decides on it.
                    reason = self.stop_reason.pop(v, "unobserved")
                    if reason in ha.UNEXPECTED_STOPS:
                        self.ha_env.stops[v] = (h, reason)

    def _ha_invariants(self, tag: str) -> None:
        for v, hs in self.actual.items():
            if len(hs) > 1:
                self.failures.append(f"[{tag}] {v} runs on {len(hs)} hosts: {', '.join(sorted(hs))}")

    def _accounted(self, v: str) -> bool:
        """HA has a reason for a VM that should run and runs nowhere."""
        row = self.ha_env.restarts.get(v)
        if row is not None:
            return True
        if any(v in rel for rel in self.released_by.values()):
            return True  # released by an isolation response: restarted once its host is declared
        rec = self.recorded.get(v)
        return rec is not None and self.ha_env.health_row.get(rec, ha.HostHealth.CONNECTED) != ha.HostHealth.FAILED and v in self.power_on

    def _ha_check_lost(self, where: str) -> None:
        if not self.ha_on:
            return
        for v in sorted(self.desired_on):
            if self.actual.get(v) or self._accounted(v):
                continue
            self.failures.append(f"{where}: VM {v} lost (should run, runs nowhere, HA gives no reason)")

    def finish(self) -> None:
        """End of scenario: every VM that should run runs, or HA said why not."""
        if not self.ha_on:
            return
        for v in sorted(self.desired_on):
            if self.actual.get(v):
                continue
            row = self.ha_env.restarts.get(v)
            if row is not None and row.reason:
                continue
            self.failures.append(f"[end] VM {v} lost: should run, runs nowhere, no reason logged by HA")
