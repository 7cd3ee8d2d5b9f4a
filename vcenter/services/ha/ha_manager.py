"""The HA monitor's loop, written once: leadership, observation, judgement, restarts and VM
monitoring, run against an environment.

The loop decides through vcenter.domain.ha and touches the world only through its
environment (``HaEnvironment``), as pve-ha-manager's Manager runs against Env.pm:
- production (vcenter.services.ha.ha_monitor): the Redis lock and heartbeat keys, the database
  (fenced writes, Events, restart Tasks sent to agents), DPM's power drivers, the monotonic
  clock;
- the golden scenarios (vcenter.sim.ha): a simulated cluster on a logical clock.

So a scenario exercises the same takeover, fencing, reconciliation, sighting, restart and
reset code as the ``vcenter ha`` process.

Environment interface:
- ``clock()``: the monitor's monotonic clock (liveness is judged on it).
- leadership: ``acquire_lock(owner)``, ``renew_lock(owner)``, ``release_lock(owner)`` (the
  first two raise ``Unreachable`` when the lock store does not answer), ``take_token(owner)``:
  the next fencing token, recorded with the takeover.
- ``inventory()``: the HA-enabled clusters (``HaCluster``) and the hosts HA judges.
- ``read_heartbeats(hosts)``: per host, its network heartbeat value (opaque; a change is a
  sighting) and the datastore view its agent published (what it read in its peers' datastore
  heartbeat files: {peer: {n, at, holds, released}}), or raises ``Unreachable``;
  ``host_key(name)``: the host a view's peer name means.
- ``writes()``: a context manager giving an ``HaStore``, one transaction of the monitor's
  state (host health, waiting restarts, freezes, resets, the unexpected stops not yet
  handled). A write made with a stale fencing token raises ``StaleToken`` and the transaction
  is dropped.

What HA restarts: the VMs of a host it declared failed ("failed"), the VMs an isolation
response stopped and released ("released", "stopped"), and a VM that stopped unexpectedly
("crashed": QEMU died, or a report found it shut off with no lifecycle event seen, e.g. its host
rebooted faster than the detection time, or while HA was frozen). The reports only record such
a stop on the VM; this loop decides on it (``ha.restart_after_stop``) through the store, in
production and in the scenarios alike. Never restarted: a stop someone asked for (a user's
Task, a guest shutdown, a destroy from outside, a suspend), VMs of clusters without HA, a VM
HA already restarts or a task holds.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from vcenter.domain import ha

# The production process' logger: its messages keep their name whichever module runs the loop.
log = logging.getLogger("vcenter.services.ha.ha_monitor")


class Unreachable(Exception):
    """The lock and heartbeat store (Redis) did not answer."""


class StaleToken(Exception):
    """A write carried a fencing token lower than the highest one seen: refused."""


@dataclass(frozen=True)
class MonitoredHost:
    key: Hashable  # the environment's host id (the domain sees str(key))
    maintenance: bool = False
    standby: bool = False


@dataclass(frozen=True)
class HaCluster:
    key: Hashable
    detection_s: float
    vm_monitoring: ha.VmMonitoringSettings  # enabled: whether any VM may be watched


@dataclass(frozen=True)
class RestartRow:
    """A VM waiting for an HA restart, as the store holds it."""

    vm: Hashable
    from_host: Hashable
    cause: str
    attempts: int
    next_try_at: float | None  # wall clock (a schedule, not liveness)
    snapshot: Any  # VmSnapshot, host None
    priority: ha.Priority


@dataclass(frozen=True)
class WatchedVm:
    """A VM VM monitoring may judge (per-VM overrides already applied)."""

    key: Hashable
    host: Hashable | None
    powered_on: bool
    restart_pending: bool
    guest_seq: Any  # the guest heartbeat counter the agent last reported
    handle: Any = None  # the environment's own object, given back to reset_vm


@dataclass(frozen=True)
class UnexpectedStop:
    """A stop nobody asked for, not yet handled (as the store recorded it): the facts
    ``ha.restart_after_stop`` decides on, and the environment's keys of the VM and its host."""

    vm: Hashable
    host: Hashable | None
    uuid: str
    fact: ha.StoppedVm


class HaStore(Protocol):
    def load_health(self) -> dict[str, ha.HostHealth]: ...
    def reconcile(self, token: int) -> list[ha.Reconciled]: ...
    def record_reconciled(self, settled: Sequence[ha.Reconciled]) -> None: ...
    def set_frozen(self, token: int, frozen: str | None, owner: str) -> None: ...
    def record_transitions(self, token: int, transitions: Sequence[ha.Transition]) -> list[Hashable]: ...
    def add_candidates(self, host: Hashable, cause: str, vm_uuids: Iterable[str] | None = None, power_state: str = "poweredOn") -> list[Hashable]: ...
    def vm_uuids(self) -> dict[Hashable, str]: ...
    def unexpected_stops(self) -> list[UnexpectedStop]: ...
    def stops_handled(self, token: int, stops: Sequence[UnexpectedStop]) -> None: ...
    def waiting_restarts(self, token: int, cluster: HaCluster) -> list[Any]: ...
    def restart_inputs(self, cluster: HaCluster, rows: list[Any], health: Mapping[str, ha.HostHealth]) -> tuple[Any, list[RestartRow], float, ha.RestartSettings, list[str]]: ...
    def start_restart(self, token: int, start: ha.Start, placement: Any, holder: Hashable | None) -> bool: ...
    def note_wait(self, wait: ha.Wait) -> None: ...
    def give_up(self, wait: ha.Wait) -> None: ...
    def wake(self, cluster: HaCluster, plan: ha.RestartPlan) -> None: ...
    def watched_vms(self, cluster: HaCluster) -> list[WatchedVm]: ...
    def reset_ages(self, vm: WatchedVm, window_s: float) -> list[float]: ...
    def reset_vm(self, token: int, vm: WatchedVm, verdict: ha.VmVerdict) -> bool: ...
    def record_reset_limit(self, vm: WatchedVm, verdict: ha.VmVerdict) -> None: ...


class HaEnvironment(Protocol):
    def clock(self) -> float: ...
    def acquire_lock(self, owner: str) -> bool: ...
    def renew_lock(self, owner: str) -> bool: ...
    def release_lock(self, owner: str) -> None: ...
    def take_token(self, owner: str) -> int: ...
    def count_pass(self) -> None: ...
    def inventory(self) -> tuple[list[HaCluster], list[MonitoredHost]]: ...
    def read_heartbeats(self, hosts: Sequence[MonitoredHost]) -> list[tuple[Any, Mapping[str, Any] | None]]: ...
    def host_key(self, name: str) -> Hashable: ...
    def writes(self) -> AbstractContextManager[HaStore]: ...


def restart_candidate(row: RestartRow, holders: Mapping[Hashable, Hashable | None]) -> ha.RestartCandidate:
    """Without datastore data on the VM, a failed host is assumed to hold its disks (a
    declared-failed holder lets the restart go); the other causes were reported as released."""
    holder = holders.get(row.vm, row.from_host if row.cause == "failed" else None)
    return ha.RestartCandidate(row.snapshot, row.priority, str(row.from_host), None if holder is None else str(holder), row.attempts, row.next_try_at, row.cause)


class HaMonitor:
    """One monitor: standby until it holds the lock, then a pass per period.

    Vocabulary:
    - fencing token: taken on every takeover; every write is fenced by it, so a monitor that
      lost the lock while paused or cut off cannot act when it wakes up.
    - sighting: a heartbeat value that changed since the last pass is a sighting of the
      network channel at that instant of the monitor's clock; the highest datastore counter
      any peer read rising is a sighting of the datastore channel.
    - observing since: the takeover instant, and a grace after the instant the heartbeat store
      answered again after an outage; silence before it is never counted.
    - reconciliation: on takeover, restarts that ended while no monitor watched are settled
      before anything new is started.
    """

    def __init__(self, env: HaEnvironment, owner: str, redis_return_grace: float, logger: logging.Logger = log) -> None:
        self.env = env
        self.log = logger
        self.owner = owner
        self.redis_return_grace = redis_return_grace
        self.token: int | None = None
        self.observing_since = 0.0
        self.redis_down_at = float("-inf")  # when a standby last failed to reach Redis
        self.redis_ok = True
        self.redis_error = ""
        self.net_last: dict[Hashable, Any] = {}
        self.net_seen: dict[Hashable, float] = {}
        self.ds_last: dict[Hashable, Any] = {}
        self.ds_seen: dict[Hashable, float] = {}
        self.net_stamp: dict[Hashable, float] = {}  # host clock in its last heartbeat seen
        self.ds_stamp: dict[Hashable, float] = {}  # host clock in its last datastore heartbeat seen advancing
        self.holders: dict[str, Hashable] = {}  # VM uuid -> host whose datastore heartbeat lists it
        self.released: dict[Hashable, set[str]] = {}  # host -> VM uuids its datastore heartbeat says it released
        self.health: dict[str, ha.HostHealth] = {}
        self.frozen: str | None = None
        self.guest_seq: dict[Hashable, Any] = {}
        self.guest_seen: dict[Hashable, float] = {}
        self.running_since: dict[Hashable, float] = {}
        self.passes = 0
        self.limited: set[Hashable] = set()  # VMs whose reset limit was reported
        self.vm_host: dict[Hashable, Hashable | None] = {}

    # -- leadership ------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.token is not None

    def try_acquire(self) -> bool:
        try:
            got = self.env.acquire_lock(self.owner)
        except Unreachable:
            self.redis_down_at = self.env.clock()
            return False
        if not got:
            return False
        self.token = self.env.take_token(self.owner)
        self._on_takeover()
        self.log.info("HA monitor %s active with token %s", self.owner, self.token)
        return True

    def renew(self) -> bool:
        """Keep the lock; False (and standby) when it is no longer ours."""
        try:
            ok = self.env.renew_lock(self.owner)
        except Unreachable:
            return True  # Redis down: frozen anyway; the fence refuses us if someone else took over
        if not ok:
            self.log.warning("HA monitor %s lost its lock (token %s): standing by", self.owner, self.token)
            self.token = None
        return bool(ok)

    def release(self) -> None:
        self.env.release_lock(self.owner)
        self.token = None

    def _on_takeover(self) -> None:
        now = self.env.clock()
        # A takeover right after a Redis outage (the usual reason the lock changed hands) gets
        # the same grace as an active monitor that saw Redis come back.
        recent_outage = now - self.redis_down_at < self.redis_return_grace
        self.observing_since = now + (self.redis_return_grace if recent_outage else 0.0)
        for d in (self.net_last, self.net_seen, self.ds_last, self.ds_seen, self.net_stamp, self.ds_stamp, self.guest_seq, self.guest_seen, self.running_since, self.vm_host):
            d.clear()
        with self.env.writes() as store:
            self.health = store.load_health()
            store.record_reconciled(store.reconcile(self.token))

    # -- observation -----------------------------------------------------------------------
    def observe(self, hosts: Sequence[MonitoredHost]) -> None:
        now = self.env.clock()
        try:
            values = self.env.read_heartbeats(hosts)
            if not self.redis_ok:
                # Silence counts only from a while after Redis' return: every agent must first
                # reconnect and write its heartbeat key and its datastore view again (both
                # channels reach us through Redis), or a slow reconnect looks like a failure.
                self.observing_since = now + self.redis_return_grace
                self.log.info("HA monitor: Redis answers again")
            self.redis_ok = True
        except Unreachable as exc:
            if self.redis_ok:
                self.log.warning("HA monitor: Redis unhealthy: %s", exc)
            self.redis_ok = False
            self.redis_error = str(exc)
            return
        holders: dict[str, Hashable] = {}
        released: dict[Hashable, set[str]] = {}
        counters: dict[int, tuple[Any, float]] = {}  # peer -> (highest counter, its stamp) over every view
        for h, (beat, peers) in zip(hosts, values):
            if beat is not None and beat != self.net_last.get(h.key):
                self.net_seen[h.key] = now
                try:
                    self.net_stamp[h.key] = float(beat)
                except ValueError:
                    pass
            self.net_last[h.key] = beat
            if peers is None:
                continue
            for peer, seen in peers.items():
                pid = self.env.host_key(peer)
                counter = seen.get("n")
                if isinstance(counter, (int, float)) and (pid not in counters or counter > counters[pid][0]):
                    counters[pid] = (counter, float(seen.get("at") or 0.0))
                for uuid in seen.get("holds", []):
                    holders[uuid] = pid
                if seen.get("released"):
                    released.setdefault(pid, set()).update(seen["released"])
        # Peers read a host's file at different instants: only the highest counter counts, and
        # only its increase is a sighting (a first reading may be an old file of a dead host).
        for pid, (counter, at) in counters.items():
            last = self.ds_last.get(pid)
            if last is not None and counter > last:
                self.ds_seen[pid] = now
                if at:
                    self.ds_stamp[pid] = max(self.ds_stamp.get(pid, 0.0), at)
            if last is None or counter > last:
                self.ds_last[pid] = counter
        self.holders = holders
        self.released = released

    # -- one pass --------------------------------------------------------------------------
    def run_pass(self) -> None:
        if not self.active:
            return
        self.passes += 1
        clusters, hosts = self.env.inventory()
        if not clusters:
            return
        detection = min(c.detection_s for c in clusters)
        self.observe(hosts)
        now = self.env.clock()
        with_ds = set(self.ds_last)
        obs = [
            ha.HostObservation(
                str(h.key),
                self.net_seen.get(h.key),
                self.ds_seen.get(h.key),
                h.key in with_ds or h.key in self.ds_seen,
                monitored=not (h.maintenance or h.standby),
                net_stamp=self.net_stamp.get(h.key),
                ds_stamp=self.ds_stamp.get(h.key),
            )
            for h in hosts
        ]
        j = ha.judge(self.health, obs, ha.MonitorView(now, self.observing_since, self.redis_ok, self.redis_error), ha.DetectionSettings(detection_s=detection))
        try:
            with self.env.writes() as store:
                store.set_frozen(self.token, j.frozen, self.owner)
                failed = store.record_transitions(self.token, j.transitions)
                for hid in failed:
                    store.add_candidates(hid, "failed")
                for hid, uuids in self.released.items():
                    if j.health.get(str(hid)) in (ha.HostHealth.ISOLATED, ha.HostHealth.FAILED):
                        store.add_candidates(hid, "released", uuids)
                    elif j.health.get(str(hid)) == ha.HostHealth.CONNECTED and not j.frozen:
                        # Back before HA acted: its report made them powered off; they were
                        # stopped by the isolation response, not by anyone: restart them.
                        store.add_candidates(hid, "stopped", uuids, power_state="poweredOff")
                self.handle_unexpected_stops(store)
            self.health = dict(j.health)
            self.frozen = j.frozen
            for cluster in clusters:
                with self.env.writes() as store:
                    self.restart_pass(store, cluster, self._vm_holders(store))
            if not self.frozen:
                self.vm_monitoring(clusters, now)
        except StaleToken as exc:
            self.log.warning("HA monitor %s fenced out: %s", self.owner, exc)
            self.token = None

    def handle_unexpected_stops(self, store: HaStore) -> list[Hashable]:
        """VMs that stopped without anyone asking (QEMU died; found shut off by a report, e.g.
        after their host rebooted within the detection time) become restart candidates with
        cause "crashed" when ``ha.restart_after_stop`` says so. Each fact is consumed once: the
        store clears it in this pass' fenced transaction, together with the candidates it made,
        so a standby that takes over neither loses one nor restarts a VM twice. After the causes
        above: a VM HA already restarts (failed, released, stopped) is not made a candidate again."""
        stops = store.unexpected_stops()
        added: list[Hashable] = []
        for s in stops:
            if s.host is not None and ha.restart_after_stop(s.fact) is None:
                added += store.add_candidates(s.host, "crashed", [s.uuid], power_state="poweredOff")
        if stops:
            store.stops_handled(self.token, stops)
        return added

    def _vm_holders(self, store: HaStore) -> dict[Hashable, Hashable | None]:
        if not self.holders and not self.ds_last:
            return {}
        return {vm: self.holders.get(uuid) for vm, uuid in store.vm_uuids().items()}

    def restart_pass(self, store: HaStore, cluster: HaCluster, holders: Mapping[Hashable, Hashable | None]) -> ha.RestartPlan | None:
        """One restart pass over the cluster's waiting VMs: starts, and reasons for the rest.
        ``holders``: VM -> host whose datastore heartbeat lists its disks (absent: the
        recorded host, conservatively; None: nobody holds them)."""
        rows = store.waiting_restarts(self.token, cluster)
        if not rows:
            return None
        snap, restarts, now, settings, failover_hosts = store.restart_inputs(cluster, rows, self.health)
        cands = [restart_candidate(r, holders) for r in restarts]
        plan = ha.plan_restarts(snap, cands, self.health, now, settings, frozen=self.frozen, failover_hosts=failover_hosts)
        results = {r.vm_id: r for r in plan.placement.results} if plan.placement else {}
        by_vm = {str(r.vm): r.vm for r in restarts}
        for s in plan.starts:
            store.start_restart(self.token, s, results.get(s.vm_id), holders.get(by_vm[s.vm_id]))
        for w in plan.waits + plan.skipped:
            store.note_wait(w)
        for w in plan.gave_up:
            store.give_up(w)
        store.wake(cluster, plan)
        return plan

    def vm_monitoring(self, clusters: Sequence[HaCluster], now: float) -> None:
        for cluster in clusters:
            settings = cluster.vm_monitoring
            with self.env.writes() as store:
                for vm in store.watched_vms(cluster):
                    host_net = self.net_seen.get(vm.host)
                    if not vm.powered_on or vm.restart_pending or host_net is None or now - host_net > settings.failure_interval_s / 2:
                        # Not running, or waiting for an HA restart, or its host is silent (HA's
                        # host judgement comes first): not judged; watched afresh afterwards.
                        self.running_since.pop(vm.key, None)
                        self.guest_seen.pop(vm.key, None)
                        continue
                    if self.vm_host.get(vm.key) != vm.host:  # restarted or moved: a new run
                        self.vm_host[vm.key] = vm.host
                        self.running_since[vm.key] = now
                        self.guest_seen.pop(vm.key, None)
                        self.guest_seq[vm.key] = vm.guest_seq
                    self.running_since.setdefault(vm.key, now)
                    seq = vm.guest_seq
                    if seq is not None and seq != self.guest_seq.get(vm.key):
                        if vm.key in self.guest_seq:
                            self.guest_seen[vm.key] = now
                        self.guest_seq[vm.key] = seq
                        self.guest_seen.setdefault(vm.key, now)
                    resets = tuple(now - age for age in store.reset_ages(vm, settings.window_s))
                    connected = self.health.get(str(vm.host), ha.HostHealth.CONNECTED) == ha.HostHealth.CONNECTED
                    verdict = ha.watch_vm(ha.VmWatch(str(vm.key), True, connected, self.running_since[vm.key], self.guest_seen.get(vm.key), resets), now, self.observing_since, settings)
                    if verdict.action == "reset":
                        if store.reset_vm(self.token, vm, verdict):
                            self.limited.discard(vm.key)
                            self.running_since[vm.key] = now
                            self.guest_seen.pop(vm.key, None)
                    elif verdict.action == "limit" and vm.key not in self.limited:
                        store.record_reset_limit(vm, verdict)
                        self.limited.add(vm.key)

    # -- the loop --------------------------------------------------------------------------
    def step(self) -> None:
        if self.active:
            if self.renew():
                self.run_pass()
                if self.active:  # completed, and not fenced off meanwhile: one more pass to count
                    self.env.count_pass()
        else:
            self.try_acquire()
