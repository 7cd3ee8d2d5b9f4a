"""HA events of the golden scenario runner (mixed into ``runner.Sim``): timed failure detection,
isolation, restarts, admission control and VM monitoring on the logical clock.

A scenario turns HA on with ``ha: {..}`` in cluster.yaml:
  detection (5), isolation_response (leave-powered-on | power-off | shutdown), isolation_delay (3),
  lease (3: an agent that cannot renew its datastore heartbeat this long kills its VMs, whose
  disk leases lapse), default_priority (medium), lock_ttl (3: a standby monitor takes over this
  long after the active one died), wake (3: seconds a standby host takes to power on),
  restart: {retry_base, retry_max, max_attempts}, admission: {kind, host_failures, cpu_percent,
  memory_percent, failover_hosts}, vm_monitoring: {enabled, failure_interval, min_uptime,
  max_resets, window}. Per VM: ``restart_priority``; per host: ``datastore_heartbeat`` (true).

With HA on, ``delay N`` runs the agents and the monitor once per simulated second. Events:
  host H crash | host H power off      power loss: the host and its VMs die at once
  host H power on                      the host boots (nothing runs; it holds no disks)
  network H down|up                    the host's link (Redis and isolation addresses unreachable)
  network H loss P                     P % of the host's heartbeats lost (deterministic pattern)
  datastore H down|up                  the host loses / regains its shared datastores
  redis down|up                        Redis stops / restarts (its keys are lost)
  monitor fail                         the active monitor dies; the standby takes over after lock_ttl
  monitor stale-write                  the dead monitor, come back, tries to act with its old token
  vm X hang [forever]                  the guest stops its heartbeat (a reset cures it unless forever)
  vm X fail start                      the next start of X fails (its Task ends in error)
  vm X moved unrecorded to H           X runs (and holds its disks) on H; the inventory missed it
  ha capacity                          log the failover capacity under the admission policy
  power on vm X / migrate vm X to H    checked by admission control first (then placement)

Invariants (whatever the log says), after every second and every event: no VM runs on two
hosts; no start is attempted while the VM's disks are held by a live holder that did not
release them; no VM lost: every VM that should run either runs or is accounted for by HA with
a reason (waiting, frozen, given up, restart disabled, left on an isolated host).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from vcenter.domain import ha

_LOSS_PATTERN = 10  # heartbeat n is lost when (n * 7) % 10 < P/10: spread, never long bursts


def _num(x: float) -> str:
    return f"{x:.0f}" if abs(x - round(x)) < 1e-6 else f"{x:.1f}"


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
        self.admission = ha.AdmissionPolicy(ha.AdmissionKind(a.get("kind", "host-failures")), int(a.get("host_failures", 1)),
                                            float(a.get("cpu_percent", 25)), float(a.get("memory_percent", 25)),
                                            frozenset(a.get("failover_hosts", [])))
        # Dedicated failover hosts: placement and DRS keep them empty (HA restarts may use them).
        for h in ha.reserved_hosts(self.admission) if self.ha_on else ():
            self.hosts[h] = replace(self.host(h), failover=True)
        m = spec.get("vm_monitoring") or {"enabled": False}
        self.vmmon = ha.VmMonitoringSettings(bool(m.get("enabled", True)), float(m.get("failure_interval", 30)),
                                             float(m.get("min_uptime", 30)), int(m.get("max_resets", 3)), float(m.get("window", 3600)))
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
        self.actual: dict[str, set[str]] = {v.id: {v.host} for v in self.vms.values() if v.host}
        self.holder: dict[str, str | None] = {v.id: v.host for v in self.vms.values() if v.host}
        self.released: dict[str, tuple[str, str]] = {}  # vm -> (host that let it go, cause)
        self.desired_on: set[str] = {v.id for v in self.vms.values() if v.host}
        self.hang: dict[str, str] = {}  # vm -> "once" | "forever"
        self.fail_start: set[str] = set()
        self.started_at: dict[str, float] = {v.id: 0.0 for v in self.vms.values() if v.host}
        self.guest_seen: dict[str, float] = {}
        self.resets: dict[str, list[float]] = {}
        self.limit_logged: set[str] = set()
        # the monitor (its persisted state survives a takeover)
        self.recorded: dict[str, str | None] = {v.id: v.host for v in self.vms.values() if v.host}
        self.health: dict[str, ha.HostHealth] = {}
        self.net_seen: dict[str, float] = {}
        self.ds_seen: dict[str, float] = {}
        self.observing_since = 0.0
        self.monitor_down_at: float | None = None
        self.token = 1
        self.frozen: str | None = None
        self.pending_restart: dict[str, ha.RestartCandidate] = {}
        self.wait_reason: dict[str, str] = {}
        self.gave_up: dict[str, str] = {}
        self.waking: dict[str, float] = {}
        self.left_on: set[str] = set()

    # -- helpers ---------------------------------------------------------------------------
    def _ha_run(self, vm_id: str, host: str) -> None:
        self.actual.setdefault(vm_id, set()).add(host)
        self.vms[vm_id] = replace(self.vms[vm_id], host=host)
        self.holder[vm_id] = host
        self.released.pop(vm_id, None)
        self.started_at[vm_id] = self.t
        self.guest_seen.pop(vm_id, None)

    def _ha_kill(self, vm_id: str, host: str, release: bool, cause: str = "released") -> None:
        self.actual.get(vm_id, set()).discard(host)
        if self.vms[vm_id].host == host:
            left = self.actual.get(vm_id)
            self.vms[vm_id] = replace(self.vms[vm_id], host=next(iter(left)) if left else None)
        if release and self.holder.get(vm_id) == host:
            self.holder[vm_id] = None
            self.released[vm_id] = (host, cause)

    def _vms_on(self, host: str) -> list[str]:
        return sorted(v for v, hs in self.actual.items() if host in hs)

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
                    if self.recorded.get(v) == h and v not in self.pending_restart:
                        self.released[v] = (h, "crashed")
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
                for v, (rh, cause) in list(self.released.items()):
                    if rh == h and cause == "released":  # now reported over the network too
                        self.released[v] = (h, "stopped")
                        if v in self.pending_restart:
                            self.pending_restart[v] = replace(self.pending_restart[v], cause="stopped")
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
            self.say("Redis " + ("restarted (its keys are gone)" if self.redis_up else "stopped"), 1)
            return True
        if cmd == "monitor fail":
            self.monitor_down_at = self.t
            self.say(f"active monitor (token {self.token}) died", 1)
            return True
        if cmd == "monitor stale-write":
            old = self.token - 1
            ok = ha.fence_ok(old, self.token)
            self.say(f"old monitor acts with token {old}: " + ("ACCEPTED" if ok else f"refused (fence at {self.token})"), 1)
            if ok:
                self.failures.append(f"[t={_num(self.t)}] a stale monitor's write was accepted")
            return True
        if words[0] == "vm" and len(words) >= 3 and words[2] == "hang":
            self.hang[words[1]] = "forever" if words[3:] == ["forever"] else "once"
            self.say(f"guest {words[1]} hangs" + (" for good" if words[3:] == ["forever"] else ""), 1)
            return True
        if words[0] == "vm" and words[2:4] == ["moved", "unrecorded"] and len(words) == 6:
            v, h = words[1], words[5]
            self.actual[v] = {h}
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
                    self.holder[vm.id] = h
                    self.recorded[vm.id] = h
                    self.desired_on.add(vm.id)
                    self.started_at[vm.id] = self.t
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
                self.actual[v.id] = {v.host}
                self.holder[v.id] = v.host
                self.recorded[v.id] = v.host
            if v.host is None and v.id in self.desired_on and not hs and v.id not in self.pending_restart and event.startswith("power off vm"):
                self.desired_on.discard(v.id)
                self.recorded.pop(v.id, None)
                self.holder[v.id] = None

    def _ha_capacity(self) -> None:
        c = ha.failover_capacity(self.snapshot(), self.admission)
        self.say(f"failover capacity ({c.policy}): {c.hosts} active hosts, memory {_num(c.used_memory_mib)}/{_num(c.total_memory_mib)} MiB "
                 f"used, {_num(c.reserved_memory_mib)} reserved; vCPUs {_num(c.used_vcpus)}/{_num(c.total_vcpus)}, "
                 f"{_num(c.reserved_vcpus)} reserved; tolerates {c.tolerated_host_failures} host failure(s); "
                 f"{'OK' if c.ok else 'VIOLATED'}: {c.reason}", 1)

    # -- one simulated second --------------------------------------------------------------
    def _ha_tick(self, stopped: set[str]) -> None:
        t = self.t
        for h in self.hosts:  # hosts added by an event
            if h not in self.alive:
                self.alive[h], self.link[h], self.loss[h], self.ds_up[h], self.hb_count[h] = self.powered[h], True, 0, True, 0
        tag = f"t={_num(t)}"
        # agents
        for h in sorted(self.hosts):
            if not self.alive[h]:
                continue
            if self.redis_up and self.link[h]:
                self.hb_count[h] += 1
            if not self.link[h] and h not in self.isolated_applied:
                view = ha.IsolationView(t, 0.0, self.link_down_at[h], self.link_down_at[h])
                iso, why = ha.isolated(view, self.iso_delay)
                if iso:
                    self.isolated_applied.add(h)
                    acts = ha.isolation_actions(self.iso_response, self._vms_on(h))
                    self.say(f"{tag} agent {h}: isolated ({why}); response {self.iso_response.value}"
                             + (f": {', '.join(f'{a} {v}' for v, a in acts)}, disks released" if acts else ": VMs left running"), 1)
                    for v, _ in acts:
                        self._ha_kill(v, h, release=True)
                        stopped.add(v)
            if not self.ds_up[h] and t - self.ds_down_at[h] >= self.lease_s:
                victims = self._vms_on(h)
                if victims:
                    self.say(f"{tag} agent {h}: datastore heartbeat not renewed for {_num(t - self.ds_down_at[h])} s: "
                             f"disk leases lapse, VMs killed: {', '.join(victims)}", 1)
                    for v in victims:
                        self._ha_kill(v, h, release=False)
                        stopped.add(v)
                        self.holder[v] = None  # the lease lapsed: nobody holds the disks
                        self.released[v] = (h, "fenced")
        for h, at in list(self.waking.items()):
            if t >= at:
                del self.waking[h]
                self.hosts[h] = replace(self.hosts[h], standby=False)
                self.alive[h] = self.powered[h] = True
                self.say(f"{tag} {h} woke up and joined", 1)
        # the monitor
        if self.monitor_down_at is not None:
            if t - self.monitor_down_at < self.lock_ttl:
                return
            self.monitor_down_at = None
            self.token += 1
            self.observing_since = t
            self.say(f"{tag} standby monitor took the lock (token {self.token}); reconciling before any restart", 1)
            self._ha_reconcile(tag)
        if not self.redis_up:
            self.observing_since = t  # nothing is seen; silence will count from the recovery
        else:
            for h in self.hosts:
                if not (self.alive[h] and self.link[h]):
                    continue
                n = self.hb_count[h]
                if self.loss[h] and (n * 7) % _LOSS_PATTERN < self.loss[h] / 10:
                    continue
                self.net_seen[h] = t
        for h in self.hosts:
            if self.alive[h] and self.ds_up[h] and self.ds_channel.get(h, True):
                self.ds_seen[h] = t
        obs = [ha.HostObservation(h, self.net_seen.get(h), self.ds_seen.get(h), self.ds_channel.get(h, True),
                                  monitored=not (self.hosts[h].standby or self.hosts[h].maintenance))
               for h in sorted(self.hosts)]
        j = ha.judge(self.health, obs, ha.MonitorView(t, self.observing_since, self.redis_up, "" if self.redis_up else "connection refused"), self.det)
        if j.frozen != self.frozen:
            self.say(f"{tag} monitor " + (f"FROZEN: {j.frozen}" if j.frozen else "unfrozen"), 1)
            self.frozen = j.frozen
        for tr in j.transitions:
            self.say(f"{tag} {tr.host_id}: {tr.before.value} -> {tr.after.value}: {tr.reason}", 1)
            conn = "connected" if tr.after == ha.HostHealth.CONNECTED else "notResponding"
            self.hosts[tr.host_id] = replace(self.hosts[tr.host_id], connection=conn)
            if tr.after == ha.HostHealth.FAILED:
                for v in sorted(vid for vid, rec in self.recorded.items() if rec == tr.host_id):
                    self._ha_candidate(v, tr.host_id, holder=self.holder.get(v))
        self.health = dict(j.health)
        # released VMs (isolation response, lapsed leases): read by peers from the datastore
        for v, (h, cause) in sorted(self.released.items()):
            if self.recorded.get(v) == h and v not in self.pending_restart and not self.actual.get(v):
                self._ha_candidate(v, h, holder=None, cause=cause)
        # VMs left running on an isolated host are accounted for
        self.left_on = {v for v, rec in self.recorded.items() if rec and self.health.get(rec) == ha.HostHealth.ISOLATED and self.actual.get(v)}
        self._ha_restart(tag)
        self._ha_vm_monitoring(tag)
        self._ha_invariants(tag)

    def _ha_candidate(self, vm_id: str, from_host: str, holder: str | None, cause: str = "failed") -> None:
        if vm_id in self.pending_restart or vm_id not in self.desired_on:
            return
        self.pending_restart[vm_id] = ha.RestartCandidate(replace(self.vms[vm_id], host=None), self.priority.get(vm_id, self.default_priority),
                                                         from_host, holder, cause=cause)

    def _ha_reconcile(self, tag: str) -> None:
        desired = {v: self.recorded.get(v) for v in sorted(self.desired_on)}
        known = [h for h in self.hosts if self.alive[h] and self.link[h]]
        actual = {v: [h for h in hs if h in known] for v, hs in self.actual.items()}
        verdicts = ha.reconcile(desired, actual, known, self.health)
        counts: dict[str, int] = {}
        for r in verdicts:
            counts[r.verdict] = counts.get(r.verdict, 0) + 1
        self.say(f"{tag} reconciled {len(verdicts)} protected VMs: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())), 2)
        for r in verdicts:
            if r.verdict != "ok":
                self.say(f"{tag} reconcile {r.vm_id}: {r.verdict}: {r.reason}", 2)
            if r.verdict == "moved":
                self.recorded[r.vm_id] = r.hosts[0]

    def _ha_restart(self, tag: str) -> None:
        if not self.pending_restart:
            return
        # holders as the monitor sees them: a released VM has none
        cands = [replace(c, holder=self.holder.get(v)) for v, c in sorted(self.pending_restart.items())]
        plan = ha.plan_restarts(self.snapshot(), cands, self.health, self.t, self.restart, frozen=self.frozen,
                                failover_hosts=self.admission.failover_hosts)
        for s in plan.starts:
            c = self.pending_restart[s.vm_id]
            if self.actual.get(s.vm_id):
                self.failures.append(f"[{tag}] HA started {s.vm_id} on {s.host_id} while it runs on {', '.join(sorted(self.actual[s.vm_id]))}")
            holder = self.holder.get(s.vm_id)
            if holder is not None and self.alive.get(holder) and self.ds_up.get(holder):
                self.failures.append(f"[{tag}] HA started {s.vm_id} while its disks are held by live host {holder}")
            if s.vm_id in self.fail_start:
                self.fail_start.discard(s.vm_id)
                n, nxt = ha.after_failed_start(c, self.t, self.restart)
                self.say(f"{tag} restart {s.vm_id} on {s.host_id} (try {s.attempt}) FAILED" + (f"; retry at t={_num(nxt)}" if nxt else "; HA gives up"), 1)
                if nxt is None:
                    del self.pending_restart[s.vm_id]
                    self.gave_up[s.vm_id] = "start failed too often"
                else:
                    self.pending_restart[s.vm_id] = replace(c, attempts=n, next_try_at=nxt)
                continue
            self.say(f"{tag} restart {s.vm_id} on {s.host_id} (try {s.attempt}): {s.reason}", 1)
            self._ha_run(s.vm_id, s.host_id)
            self.recorded[s.vm_id] = s.host_id
            del self.pending_restart[s.vm_id]
            self.wait_reason.pop(s.vm_id, None)
        for w in plan.waits + plan.skipped:
            if w.reason.startswith("retry ") and w.vm_id in self.wait_reason:
                continue  # the backoff was announced with the failed try
            if self.wait_reason.get(w.vm_id) != w.reason:
                self.say(f"{tag} {w.vm_id} waits: {w.reason}", 1)
                self.wait_reason[w.vm_id] = w.reason
            c = self.pending_restart.get(w.vm_id)
            if c is not None and w.attempts != c.attempts:
                self.pending_restart[w.vm_id] = replace(c, attempts=w.attempts, next_try_at=w.until)
        for w in plan.gave_up:
            self.say(f"{tag} {w.vm_id}: {w.reason}", 1)
            del self.pending_restart[w.vm_id]
            self.gave_up[w.vm_id] = w.reason
        for h in plan.wake:
            if h not in self.waking:
                self.waking[h] = self.t + self.wake_s
                self.say(f"{tag} capacity short: waking standby host {h} through its power driver", 1)

    def _ha_vm_monitoring(self, tag: str) -> None:
        if not self.vmmon.enabled:
            return
        for v in sorted(self.desired_on):
            hs = self.actual.get(v, set())
            if len(hs) != 1:
                continue
            h = next(iter(hs))
            if v not in self.hang and self.alive[h]:
                self.guest_seen[v] = self.t
            w = ha.VmWatch(v, True, self.health.get(h) == ha.HostHealth.CONNECTED, self.started_at.get(v), self.guest_seen.get(v),
                           tuple(self.resets.get(v, [])))
            verdict = ha.watch_vm(w, self.t, self.observing_since, self.vmmon)
            if verdict.action == "reset" and not self.frozen:
                self.say(f"{tag} reset {v} on {h}: {verdict.reason}", 1)
                self.resets.setdefault(v, []).append(self.t)
                self.limit_logged.discard(v)
                if self.hang.get(v) == "once":
                    del self.hang[v]
            elif verdict.action == "limit" and v not in self.limit_logged:
                self.say(f"{tag} {v}: {verdict.reason}", 1)
                self.limit_logged.add(v)

    def _ha_invariants(self, tag: str) -> None:
        for v, hs in self.actual.items():
            if len(hs) > 1:
                self.failures.append(f"[{tag}] {v} runs on {len(hs)} hosts: {', '.join(sorted(hs))}")

    def _ha_check_lost(self, where: str) -> None:
        if not self.ha_on:
            return
        for v in sorted(self.desired_on):
            if self.actual.get(v):
                continue
            if v in self.pending_restart or v in self.released:
                continue
            if v in self.gave_up:
                continue
            rec = self.recorded.get(v)
            if rec is not None and self.health.get(rec, ha.HostHealth.CONNECTED) != ha.HostHealth.FAILED and v not in self.released:
                continue  # not detected yet: the monitor has not declared its host failed
            self.failures.append(f"{where}: VM {v} lost (should run, runs nowhere, HA gives no reason)")

    def finish(self) -> None:
        """End of scenario: every VM that should run runs, or HA said why not."""
        if not self.ha_on:
            return
        for v in sorted(self.desired_on):
            if self.actual.get(v):
                continue
            if v in self.pending_restart and v in self.wait_reason:
                continue
            if v in self.gave_up:
                continue
            self.failures.append(f"[end] VM {v} lost: should run, runs nowhere, no reason logged by HA")

