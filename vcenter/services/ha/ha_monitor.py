"""``vcenter ha``: the HA monitor, its own process, active/standby.

Vocabulary:
- lock: the Redis key ``vc:ha:lock`` (SET NX PX ``ha_lock_ttl``), renewed every ``ha_period``
  by the active monitor only while it still holds it (compare-and-expire). A standby polls it
  and takes over once it expired.
- fencing token: taken from the database on every takeover (``ha_monitor.token + 1``), not from
  Redis (a Redis restart would reset a counter there). Every HA write is fenced by it
  (``services.ha.ha.fence``), so a monitor that lost the lock while paused or cut off cannot act
  when it wakes up, even if it still believes it is active.
- passes: the active monitor counts each pass it completed in Redis (``HA_PASSES_KEY``), so a
  reader can wait until the monitor has looked N more times.
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
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from vcenter.core.clock import utcnow
from vcenter.core.settings import Settings
from vcenter.db.ha_models import HaRestart
from vcenter.db.models import VirtualMachine
from vcenter.domain import ha
from vcenter.messaging.contracts import HA_LOCK_KEY, HA_PASSES_KEY, ha_datastore_view_key, heartbeat_key
from vcenter.observability import metrics
from vcenter.observability.committed import after_commit
from vcenter.observability.listener import LoopWatch, start_listener
from vcenter.observability.metrics import REGISTRY, PoolCollector
from vcenter.schemas.ha import HaConfig
from vcenter.services.ha import ha as ha_service
from vcenter.services.tasks.events import record_event
from vcenter.services.ha.ha_manager import (
    HaCluster,
    HaMonitor,
    MonitoredHost,
    UnexpectedStop,
    Unreachable,
    WatchedVm,
)
from vcenter.services.tasks.runtime import Runtime
from vcenter.services.inventory.vm_spec import vm_spec

log = logging.getLogger(__name__)

LOCK_KEY = HA_LOCK_KEY
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


class DatabaseStore:
    """The monitor's state in the database, one transaction (vcenter.services.ha.ha's writes)."""

    def __init__(self, session: Session, configs: Mapping[int, HaConfig]) -> None:
        self.session = session
        self.configs = configs
        self.now: datetime | None = None

    def load_health(self) -> dict[str, ha.HostHealth]:
        return ha_service.load_health(self.session)

    def reconcile(self, token: int) -> list[ha.Reconciled]:
        return ha_service.reconcile_restarts(self.session, token)

    def record_reconciled(self, settled: Sequence[ha.Reconciled]) -> None:
        record_event(
            self.session,
            "ha.monitor.reconciled",
            f"HA monitor reconciled after takeover: {len(settled)} restart(s) settled",
            reason="HA_RECONCILED",
            data={"settled": [{"vm": r.vm_id, "verdict": r.verdict, "reason": r.reason} for r in settled]},
        )

    def set_frozen(self, token: int, frozen: str | None, owner: str) -> None:
        ha_service.set_frozen(self.session, token, frozen, owner)

    def record_transitions(self, token: int, transitions: Sequence[ha.Transition]) -> list[Hashable]:
        recorded = list(ha_service.record_transitions(self.session, token, transitions))
        for t in transitions:
            self.count_verdict(metrics.ha_host_verdict(t.after.value))
        return recorded

    def count_verdict(self, verdict: str) -> None:
        after_commit(self.session, lambda: metrics.HA_VERDICTS.labels(verdict).inc())

    def add_candidates(self, host: Hashable, cause: str, vm_uuids=None, power_state: str = "poweredOn") -> list[Hashable]:
        return list(ha_service.add_candidates(self.session, int(host), cause, vm_uuids, power_state=power_state))

    def vm_uuids(self) -> dict[Hashable, str]:
        return dict(self.session.execute(VirtualMachine.__table__.select().with_only_columns(VirtualMachine.id, VirtualMachine.libvirt_uuid)).all())

    def unexpected_stops(self) -> list[UnexpectedStop]:
        return [UnexpectedStop(vm.id, vm.host_id, vm.libvirt_uuid, fact) for vm, fact in ha_service.unexpected_stops(self.session)]

    def stops_handled(self, token: int, stops: Sequence[UnexpectedStop]) -> None:
        ha_service.stops_handled(self.session, token, [(int(s.vm), s.fact.reason) for s in stops])

    def waiting_restarts(self, token: int, cluster: HaCluster) -> list[HaRestart]:
        return ha_service.waiting_restarts(self.session, token, int(cluster.key))

    def restart_inputs(self, cluster: HaCluster, rows: list[HaRestart], health: Mapping[str, ha.HostHealth]):
        cfg = self.configs[int(cluster.key)]
        snap, restarts, self.now = ha_service.restart_inputs(self.session, int(cluster.key), cfg, rows, health)
        failover = [str(h) for h in cfg.admission.failover_hosts] if cfg.admission.kind == "failover-hosts" else []
        return snap, restarts, self.now.timestamp(), ha_service.restart_settings(cfg), failover

    def start_restart(self, token: int, start: ha.Start, placement: Any, holder: Hashable | None) -> bool:
        return ha_service.start_restart(self.session, token, start, placement.to_dict() if placement is not None else None, holder, _spec_for)

    def note_wait(self, wait: ha.Wait) -> None:
        ha_service.note_wait(self.session, wait, self.now)

    def give_up(self, wait: ha.Wait) -> None:
        ha_service.give_up(self.session, wait)

    def wake(self, cluster: HaCluster, plan: ha.RestartPlan) -> None:
        ha_service.wake_standby_hosts(self.session, self.configs[int(cluster.key)], plan)

    def watched_vms(self, cluster: HaCluster) -> list[WatchedVm]:
        cfg = self.configs[int(cluster.key)]
        out = []
        for vm in self.session.scalars(select(VirtualMachine).where(VirtualMachine.cluster_id == cluster.key)):
            if not ha_service.vm_monitored(cfg, vm.id):
                continue
            # Read lazily by the loop, in its order: a VM skipped early costs no more queries.
            out.append(_LazyWatchedVm(self.session, vm))
        return out

    def reset_ages(self, vm: WatchedVm, window_s: float) -> list[float]:
        wall = utcnow()
        return [(wall - at).total_seconds() for at in ha_service.resets_in_window(self.session, vm.key, window_s)]

    def reset_vm(self, token: int, vm: WatchedVm, verdict: ha.VmVerdict) -> bool:
        reset = ha_service.reset_vm(self.session, token, vm.handle, verdict) is not None
        if reset:
            self.count_verdict("vm_reset")
        return reset

    def record_reset_limit(self, vm: WatchedVm, verdict: ha.VmVerdict) -> None:
        ha_service.record_reset_limit(self.session, vm.handle, verdict)
        self.count_verdict("vm_reset_limit")


class _LazyWatchedVm:
    """A WatchedVm over a VirtualMachine row: ``restart_pending`` is asked of the database only
    when the loop reads it (after ``powered_on``), as the loop did before it had a store."""

    def __init__(self, session: Session, vm: VirtualMachine) -> None:
        self._session = session
        self.handle = vm
        self.key = vm.id
        self.host = vm.host_id
        self.powered_on = vm.power_state == "poweredOn"

    @property
    def restart_pending(self) -> bool:
        return self._session.get(HaRestart, self.key) is not None

    @property
    def guest_seq(self) -> Any:
        return (self.handle.guest_info or {}).get("seq")


class RedisDbEnvironment:
    """Production's HA environment: the Redis lock and heartbeat keys, the database."""

    def __init__(self, runtime: Any, clock: Callable[[], float]) -> None:
        self.runtime = runtime
        self.settings: Settings = runtime.settings
        self.redis: redis.Redis = runtime.redis
        self.clock = clock
        self.configs: dict[int, HaConfig] = {}

    def acquire_lock(self, owner: str) -> bool:
        try:
            return bool(self.redis.set(LOCK_KEY, owner, nx=True, px=int(self.settings.ha_lock_ttl * 1000)))
        except redis.RedisError as exc:
            raise Unreachable(str(exc)) from exc

    def renew_lock(self, owner: str) -> bool:
        try:
            return bool(self.redis.eval(_RENEW, 1, LOCK_KEY, owner, int(self.settings.ha_lock_ttl * 1000)))
        except redis.RedisError as exc:
            raise Unreachable(str(exc)) from exc

    def release_lock(self, owner: str) -> None:
        try:
            self.redis.eval(_RELEASE, 1, LOCK_KEY, owner)
        except redis.RedisError:
            pass

    def count_pass(self) -> None:
        """One more completed pass under HA_PASSES_KEY."""
        try:
            self.redis.incr(HA_PASSES_KEY)
        except redis.RedisError:
            pass  # uncounted; a Redis outage costs the monitor its lock anyway

    def take_token(self, owner: str) -> int:
        """The fencing token comes from the database (``ha_monitor.token + 1``), not from Redis:
        a Redis restart would reset a counter there."""
        with self.runtime.transaction() as session:
            from vcenter.db.ha_models import HaMonitor

            row = session.get(HaMonitor, 1, with_for_update=True)
            if row is None:
                row = HaMonitor(id=1, token=0, owner="")
                session.add(row)
            row.token += 1
            row.owner = owner
            token = row.token
            record_event(session, "ha.monitor.active", f"HA monitor {owner} took the lock (token {token}); reconciling before any restart", reason="HA_TAKEOVER", data={"token": token, "owner": owner})
        return token

    def inventory(self) -> tuple[list[HaCluster], list[MonitoredHost]]:
        with self.runtime.sessions() as session:
            clusters = ha_service.ha_clusters(session)
            hosts = ha_service.monitored_hosts(session)
            session.expunge_all()
        self.configs = {c.id: cfg for c, cfg in clusters}
        out = []
        for c, cfg in clusters:
            s = cfg.vm_monitoring
            out.append(HaCluster(c.id, cfg.detection_s, ha.VmMonitoringSettings(True, s.failure_interval_s, s.min_uptime_s, s.max_resets, s.window_s)))
        return out, [MonitoredHost(h.id, h.maintenance, h.standby) for h in hosts]

    def read_heartbeats(self, hosts: Sequence[MonitoredHost]) -> list[tuple[Any, Mapping[str, Any] | None]]:
        try:
            pipe = self.redis.pipeline()
            for h in hosts:
                pipe.get(heartbeat_key(h.key))
                pipe.get(ha_datastore_view_key(h.key))
            values = pipe.execute()
        except redis.RedisError as exc:
            raise Unreachable(str(exc)) from exc
        out = []
        for i in range(len(hosts)):
            beat, view = values[2 * i], values[2 * i + 1]
            try:
                peers = json.loads(view) if view is not None else None
            except ValueError:
                peers = None
            out.append((beat, peers))
        return out

    def host_key(self, name: str) -> int:
        return int(name)

    @contextmanager
    def writes(self) -> Iterator[DatabaseStore]:
        with self.runtime.transaction() as session:
            yield DatabaseStore(session, self.configs)


class HaMonitorProcess(HaMonitor):
    """The ``vcenter ha`` process: the HA monitor (vcenter.services.ha.ha_manager) on Redis and
    the database, a pass every ``ha_period``."""

    def __init__(self, runtime: Any, owner: str | None = None, clock: Callable[[], float] = time.monotonic, on_turn: Callable[[], None] = lambda: None) -> None:
        env = RedisDbEnvironment(runtime, clock)
        super().__init__(env, owner or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}", runtime.settings.ha_redis_return_grace)
        self.runtime = runtime
        self.settings: Settings = runtime.settings
        self.clock = clock
        self.stop_event = threading.Event()
        self.on_turn = on_turn  # the process's liveness (vcenter.observability.listener.LoopWatch)

    @property
    def redis(self) -> redis.Redis:
        return self.env.redis

    @redis.setter
    def redis(self, client: redis.Redis) -> None:
        self.env.redis = client

    def run(self) -> None:
        log.info("HA monitor %s starting (standby until it holds the lock)", self.owner)
        while not self.stop_event.is_set():
            started = self.clock()
            was_active = self.active
            try:
                self.step()
            except Exception:
                log.exception("HA monitor pass failed")
            if was_active and self.active:
                metrics.HA_PASS.observe(self.clock() - started)
            metrics.HA_ACTIVE.set(1 if self.active else 0)
            self.on_turn()
            self.stop_event.wait(max(0.0, self.settings.ha_period - (self.clock() - started)))
        self.release()


def _spec_for(session, vm: VirtualMachine, host_id: int):
    return vm_spec(session, vm, host_id)


def run_ha(settings: Settings) -> None:
    runtime = Runtime.build(settings)
    watch = LoopWatch(settings.process_stall_after)
    REGISTRY.register(PoolCollector(runtime.database_pools))
    start_listener("ha", settings.ha_metrics_listen, watch, {"database": runtime.check_database, "redis": runtime.check_redis}, settings.metrics_token)
    monitor = HaMonitorProcess(runtime, on_turn=watch.stamp)
    try:
        monitor.run()
    except KeyboardInterrupt:
        monitor.stop_event.set()
        monitor.release()
