"""``vcenter ha``: the HA monitor, its own process, active/standby.

Vocabulary:
- lock: the Redis key ``vc:ha:lock`` (SET NX PX ``ha_lock_ttl``), renewed every ``ha_period``
  by the active monitor only while it still holds it (compare-and-expire). A standby polls it
  and takes over once it expired.
- fencing token: taken from the database on every takeover (``ha_monitor.token + 1``), not from
  Redis (a Redis restart would reset a counter there). Every HA write is fenced by it
  (``services.ha.fence``), so a monitor that lost the lock while paused or cut off cannot act
  when it wakes up, even if it still believes it is active.
- sighting: the monitor reads each host's heartbeat key every ``ha_period``; a value that
  changed is a sighting of the network channel at that instant of the monitor's monotonic clock.
  Datastore views (``vc:ha:ds:<host>``: what an agent read in its peers' datastore heartbeat
  files) give sightings of the datastore channel and who holds which disks.
- observing since: the takeover instant, and a grace (``ha_redis_return_grace``) after the
  instant Redis answered again after an outage; silence before it is never counted
  (vcenter.domain.ha).
- reconciliation: on takeover, restarts whose Task ended while no monitor watched are settled
  before anything new is started, and no host is declared before a full detection time of
  fresh observation.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from vcenter.core.settings import Settings
from vcenter.db.ha_models import HaRestart
from vcenter.db.models import Host, VirtualMachine
from vcenter.domain import ha
from vcenter.messaging.contracts import ha_datastore_view_key, heartbeat_key
from vcenter.services import ha as ha_service
from vcenter.services.events import record_event

log = logging.getLogger(__name__)

LOCK_KEY = "vc:ha:lock"
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"


class HaMonitorProcess:
    def __init__(self, runtime: Any, owner: str | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.runtime = runtime
        self.settings: Settings = runtime.settings
        self.redis: redis.Redis = runtime.redis
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.clock = clock
        self.token: int | None = None
        self.stop_event = threading.Event()
        self.observing_since = 0.0
        self.redis_down_at = float("-inf")  # when a standby last failed to reach Redis
        self.redis_ok = True
        self.net_last: dict[int, bytes | None] = {}
        self.net_seen: dict[int, float] = {}
        self.ds_last: dict[int, Any] = {}
        self.ds_seen: dict[int, float] = {}
        self.net_stamp: dict[int, float] = {}  # host clock in its last heartbeat seen
        self.ds_stamp: dict[int, float] = {}  # host clock in its last datastore heartbeat seen advancing
        self.holders: dict[str, int] = {}  # VM uuid -> host id whose datastore heartbeat lists it
        self.released: dict[int, set[str]] = {}  # host -> VM uuids its datastore heartbeat says it released
        self.health: dict[str, ha.HostHealth] = {}
        self.frozen: str | None = None
        self.guest_seq: dict[int, Any] = {}
        self.guest_seen: dict[int, float] = {}
        self.running_since: dict[int, float] = {}
        self.passes = 0
        self.limited: set[int] = set()  # VMs whose reset limit was reported
        self.vm_host: dict[int, int | None] = {}
        self.redis_error = ""

    # -- lock ------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.token is not None

    def _lock_value(self) -> str:
        return self.owner

    def try_acquire(self) -> bool:
        ttl = int(self.settings.ha_lock_ttl * 1000)
        try:
            got = self.redis.set(LOCK_KEY, self._lock_value(), nx=True, px=ttl)
        except redis.RedisError:
            self.redis_down_at = self.clock()
            return False
        if not got:
            return False
        with self.runtime.transaction() as session:
            from vcenter.db.ha_models import HaMonitor

            row = session.get(HaMonitor, 1, with_for_update=True)
            if row is None:
                row = HaMonitor(id=1, token=0, owner="")
                session.add(row)
            row.token += 1
            row.owner = self.owner
            token = row.token
            record_event(session, "ha.monitor.active", f"HA monitor {self.owner} took the lock (token {token}); reconciling before any restart",
                         reason="HA_TAKEOVER", data={"token": token, "owner": self.owner})
        self.token = token
        self._on_takeover()
        log.info("HA monitor %s active with token %s", self.owner, token)
        return True

    def renew(self) -> bool:
        """Keep the lock; False (and standby) when it is no longer ours."""
        try:
            ok = self.redis.eval(_RENEW, 1, LOCK_KEY, self._lock_value(), int(self.settings.ha_lock_ttl * 1000))
        except redis.RedisError:
            return True  # Redis down: frozen anyway; the fence refuses us if someone else took over
        if not ok:
            log.warning("HA monitor %s lost its lock (token %s): standing by", self.owner, self.token)
            self.token = None
        return bool(ok)

    def release(self) -> None:
        try:
            self.redis.eval("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end", 1, LOCK_KEY, self._lock_value())
        except redis.RedisError:
            pass
        self.token = None

    def _on_takeover(self) -> None:
        now = self.clock()
        # A takeover right after a Redis outage (the usual reason the lock changed hands) gets
        # the same grace as an active monitor that saw Redis come back.
        recent_outage = now - self.redis_down_at < self.settings.ha_redis_return_grace
        self.observing_since = now + (self.settings.ha_redis_return_grace if recent_outage else 0.0)
        self.net_last.clear()
        self.net_seen.clear()
        self.ds_last.clear()
        self.ds_seen.clear()
        self.net_stamp.clear()
        self.ds_stamp.clear()
        self.guest_seq.clear()
        self.guest_seen.clear()
        self.running_since.clear()
        self.vm_host.clear()
        with self.runtime.transaction() as session:
            self.health = ha_service.load_health(session)
            settled = ha_service.reconcile_restarts(session, self.token)
            record_event(session, "ha.monitor.reconciled", f"HA monitor reconciled after takeover: {len(settled)} restart(s) settled",
                         reason="HA_RECONCILED", data={"settled": [{"vm": r.vm_id, "verdict": r.verdict, "reason": r.reason} for r in settled]})

    # -- observation -----------------------------------------------------------------------
    def _observe(self, hosts: list[Host]) -> None:
        now = self.clock()
        try:
            pipe = self.redis.pipeline()
            for h in hosts:
                pipe.get(heartbeat_key(h.id))
                pipe.get(ha_datastore_view_key(h.id))
            values = pipe.execute()
            if not self.redis_ok:
                # Silence counts only from a while after Redis' return: every agent must first
                # reconnect and write its heartbeat key and its datastore view again (both
                # channels reach us through Redis), or a slow reconnect looks like a failure.
                self.observing_since = now + self.settings.ha_redis_return_grace
                log.info("HA monitor: Redis answers again")
            self.redis_ok = True
        except redis.RedisError as exc:
            if self.redis_ok:
                log.warning("HA monitor: Redis unhealthy: %s", exc)
            self.redis_ok = False
            self.redis_error = str(exc)
            return
        holders: dict[str, int] = {}
        released: dict[int, set[str]] = {}
        counters: dict[int, tuple[Any, float]] = {}  # peer -> (highest counter, its stamp) over every view
        for i, h in enumerate(hosts):
            beat, view = values[2 * i], values[2 * i + 1]
            if beat is not None and beat != self.net_last.get(h.id):
                self.net_seen[h.id] = now
                try:
                    self.net_stamp[h.id] = float(beat)
                except ValueError:
                    pass
            self.net_last[h.id] = beat
            if view is None:
                continue
            try:
                peers = json.loads(view)
            except ValueError:
                continue
            for peer, seen in peers.items():
                pid = int(peer)
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
        with self.runtime.sessions() as session:
            clusters = ha_service.ha_clusters(session)
            hosts = ha_service.monitored_hosts(session)
            session.expunge_all()
        if not clusters:
            return
        detection = min(cfg.detection_s for _, cfg in clusters)
        self._observe(hosts)
        now = self.clock()
        with_ds = set(self.ds_last)
        obs = [ha.HostObservation(str(h.id), self.net_seen.get(h.id), self.ds_seen.get(h.id), h.id in with_ds or h.id in self.ds_seen,
                                  monitored=not (h.maintenance or h.standby), net_stamp=self.net_stamp.get(h.id), ds_stamp=self.ds_stamp.get(h.id))
               for h in hosts]
        j = ha.judge(self.health, obs, ha.MonitorView(now, self.observing_since, self.redis_ok, self.redis_error),
                     ha.DetectionSettings(detection_s=detection))
        try:
            with self.runtime.transaction() as session:
                ha_service.set_frozen(session, self.token, j.frozen, self.owner)
                failed = ha_service.record_transitions(session, self.token, j.transitions)
                for hid in failed:
                    ha_service.add_candidates(session, hid, "failed")
                for hid, uuids in self.released.items():
                    if j.health.get(str(hid)) in (ha.HostHealth.ISOLATED, ha.HostHealth.FAILED):
                        ha_service.add_candidates(session, hid, "released", uuids)
                    elif j.health.get(str(hid)) == ha.HostHealth.CONNECTED and not j.frozen:
                        # Back before HA acted: its report made them powered off; they were
                        # stopped by the isolation response, not by anyone: restart them.
                        ha_service.add_candidates(session, hid, "stopped", uuids, power_state="poweredOff")
            self.health = dict(j.health)
            self.frozen = j.frozen
            for cluster, cfg in clusters:
                with self.runtime.transaction() as session:
                    vm_holders = self._vm_holders(session)
                    ha_service.plan_and_start(session, self.token, session.get(type(cluster), cluster.id), cfg, self.health, vm_holders, self.frozen, _spec_for)
            if not self.frozen:
                self._vm_monitoring(clusters, now)
        except ha_service.Fenced as exc:
            log.warning("HA monitor %s fenced out: %s", self.owner, exc)
            self.token = None

    def _vm_holders(self, session) -> dict[int, int | None]:
        if not self.holders and not self.ds_last:
            return {}
        out: dict[int, int | None] = {}
        for vm_id, uuid in session.execute(VirtualMachine.__table__.select().with_only_columns(VirtualMachine.id, VirtualMachine.libvirt_uuid)):
            out[vm_id] = self.holders.get(uuid)
        return out

    def _vm_monitoring(self, clusters, now: float) -> None:
        from sqlalchemy import select

        from vcenter.core.clock import utcnow

        for cluster, cfg in clusters:
            s = cfg.vm_monitoring
            settings = ha.VmMonitoringSettings(True, s.failure_interval_s, s.min_uptime_s, s.max_resets, s.window_s)
            with self.runtime.transaction() as session:
                for vm in session.scalars(select(VirtualMachine).where(VirtualMachine.cluster_id == cluster.id)):
                    if not ha_service.vm_monitored(cfg, vm.id):
                        continue
                    on = vm.power_state == "poweredOn"
                    host_net = self.net_seen.get(vm.host_id)
                    if not on or session.get(HaRestart, vm.id) is not None or host_net is None or now - host_net > settings.failure_interval_s / 2:
                        # Not running, or waiting for an HA restart, or its host is silent (HA's
                        # host judgement comes first): not judged; watched afresh afterwards.
                        self.running_since.pop(vm.id, None)
                        self.guest_seen.pop(vm.id, None)
                        continue
                    if self.vm_host.get(vm.id) != vm.host_id:  # restarted or moved: a new run
                        self.vm_host[vm.id] = vm.host_id
                        self.running_since[vm.id] = now
                        self.guest_seen.pop(vm.id, None)
                        self.guest_seq[vm.id] = (vm.guest_info or {}).get("seq")
                    self.running_since.setdefault(vm.id, now)
                    seq = (vm.guest_info or {}).get("seq")
                    if seq is not None and seq != self.guest_seq.get(vm.id):
                        if vm.id in self.guest_seq:
                            self.guest_seen[vm.id] = now
                        self.guest_seq[vm.id] = seq
                        self.guest_seen.setdefault(vm.id, now)
                    wall = utcnow()
                    resets = tuple(now - (wall - at).total_seconds() for at in ha_service.resets_in_window(session, vm.id, s.window_s))
                    connected = self.health.get(str(vm.host_id), ha.HostHealth.CONNECTED) == ha.HostHealth.CONNECTED
                    verdict = ha.watch_vm(ha.VmWatch(str(vm.id), True, connected, self.running_since[vm.id], self.guest_seen.get(vm.id), resets),
                                          now, self.observing_since, settings)
                    if verdict.action == "reset":
                        if ha_service.reset_vm(session, self.token, vm, verdict):
                            self.limited.discard(vm.id)
                            self.running_since[vm.id] = now
                            self.guest_seen.pop(vm.id, None)
                    elif verdict.action == "limit" and vm.id not in self.limited:
                        ha_service.record_reset_limit(session, vm, verdict)
                        self.limited.add(vm.id)

    # -- the loop --------------------------------------------------------------------------
    def step(self) -> None:
        if self.active:
            if self.renew():
                self.run_pass()
        else:
            self.try_acquire()

    def run(self) -> None:
        log.info("HA monitor %s starting (standby until it holds the lock)", self.owner)
        while not self.stop_event.is_set():
            started = self.clock()
            try:
                self.step()
            except Exception:
                log.exception("HA monitor pass failed")
            self.stop_event.wait(max(0.0, self.settings.ha_period - (self.clock() - started)))
        self.release()


def _spec_for(session, vm: VirtualMachine, host_id: int):
    from vcenter.services.vms import vm_spec

    return vm_spec(session, vm, host_id)


def run_ha(settings: Settings) -> None:
    from vcenter.services.runtime import Runtime

    monitor = HaMonitorProcess(Runtime.build(settings))
    try:
        monitor.run()
    except KeyboardInterrupt:
        monitor.stop_event.set()
        monitor.release()
