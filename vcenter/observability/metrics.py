"""The metric families of every virtcenter process, named by Prometheus' conventions
(``vcenter_`` prefix, counters ending ``_total``, durations in ``_seconds``).

One registry per process (``REGISTRY``), not prometheus_client's global default one, so what
a process serves is exactly its role's part of this catalogue (``ROLE_FAMILIES``, joined by
``set_role``) plus the process and Python collectors; each process serves it on its own port (multiprocess correctness: no process reports another's
counters). Counters count what this process did: a task transition is counted by the
process that committed it (the API for accepted and finished tasks, the worker for the ones
its reaper ends, the HA monitor for its restarts), so a dashboard sums over the processes.

The library is prometheus_client (the Prometheus project's own Python client): its text
exposition is what ``promtool check metrics`` reads, its histograms and label handling are
thread-safe, and a hand-written exposition would repeat it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

# Durations from a few milliseconds (an outbox relay) to minutes (a queue backed up).
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# A live migration's pause: libvirt's default limit is 300 ms.
DOWNTIME_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0)

PROCESS_INFO = Gauge("vcenter_process_info", "1 for each running virtcenter process: its role and release", ["role", "version"], registry=None)
LOOP_AGE = Gauge("vcenter_process_loop_age_seconds", "seconds since this process's main loop last turned (liveness)", registry=None)

TASKS = Counter("vcenter_tasks", "task state transitions committed by this process, by task kind and the state entered", ["kind", "state"], registry=None)
QUEUE_WAIT = Histogram("vcenter_task_queue_wait_seconds", "from a task's creation to its start (queued to running)", ["kind"], buckets=SECONDS_BUCKETS, registry=None)
MIGRATION_DOWNTIME = Histogram("vcenter_migration_downtime_seconds", "the pause of a VM at the switch-over of a live migration, as its agent reported it", buckets=DOWNTIME_BUCKETS, registry=None)

CELERY_TASKS = Counter("vcenter_celery_tasks", "Celery tasks this worker or agent ran, by task name and outcome", ["task", "outcome"], registry=None)
CELERY_TASK_SECONDS = Histogram("vcenter_celery_task_seconds", "run time of the Celery tasks this worker or agent ran", ["task"], buckets=SECONDS_BUCKETS, registry=None)

DRS_PASS = Histogram("vcenter_drs_pass_seconds", "duration of a DRS pass over every DRS-enabled cluster", buckets=SECONDS_BUCKETS, registry=None)
DRS_MOVES = Counter("vcenter_drs_moves", "VM moves DRS passes proposed, by outcome (applied: a migration started at once; recommended: left to the operator)", ["outcome"], registry=None)
ROLLUP = Histogram("vcenter_metrics_rollup_seconds", "duration of a performance-counter rollup and retention pass", buckets=SECONDS_BUCKETS, registry=None)

HA_VERDICTS = Counter(
    "vcenter_ha_verdicts",
    "verdicts of the active HA monitor: host health transitions (host_connected, host_isolated, host_failed) and VM monitoring actions (vm_reset, vm_reset_limit)",
    ["verdict"],
    registry=None,
)
HA_ACTIVE = Gauge("vcenter_ha_monitor_active", "1 while this HA monitor holds the lock (active), 0 standing by", registry=None)
HA_PASS = Histogram("vcenter_ha_pass_seconds", "duration of an active HA monitor's pass", buckets=SECONDS_BUCKETS, registry=None)

BEAT_SENT = Counter("vcenter_beat_tasks_sent", "periodic tasks this beat sent, by task name", ["task"], registry=None)
BEAT_ACTIVE = Gauge("vcenter_beat_scheduler_active", "1 while this beat holds the scheduler lock and sends the schedule, 0 waiting for it", registry=None)

AGENT_HEARTBEATS = Counter("vcenter_agent_heartbeats", "heartbeats this agent wrote to Redis, by outcome (ok, failed)", ["outcome"], registry=None)

HA_HOST_VERDICTS = {"connected": "host_connected", "isolated": "host_isolated", "failed": "host_failed"}


# What each role serves besides the process and Python collectors: a family only where it can
# move (an HA gauge on the API would read 0 forever and miscount the monitors).
TASK_TRANSITIONS = (TASKS, QUEUE_WAIT)
ROLE_FAMILIES: dict[str, tuple[Any, ...]] = {
    "api": (*TASK_TRANSITIONS, MIGRATION_DOWNTIME),
    "worker": (LOOP_AGE, *TASK_TRANSITIONS, CELERY_TASKS, CELERY_TASK_SECONDS, DRS_PASS, DRS_MOVES, ROLLUP),
    "beat": (LOOP_AGE, BEAT_SENT, BEAT_ACTIVE),
    "ha": (LOOP_AGE, *TASK_TRANSITIONS, HA_VERDICTS, HA_ACTIVE, HA_PASS),
    "agent": (LOOP_AGE, CELERY_TASKS, CELERY_TASK_SECONDS, AGENT_HEARTBEATS),
}
_registered: set[int] = set()


def register(*collectors: Any) -> None:
    """Add collectors to this process's registry, each once (tests start several roles in one process)."""
    for collector in collectors:
        if id(collector) not in _registered:
            REGISTRY.register(collector)
            _registered.add(id(collector))


def set_role(role: str, version: str) -> None:
    """This process is ``role``: its families join the registry, its info metric says so."""
    register(PROCESS_INFO, *ROLE_FAMILIES.get(role, ()))
    PROCESS_INFO.labels(role, version).set(1)


def task_entered(kind: str, state: str) -> None:
    TASKS.labels(kind, state).inc()


def ha_host_verdict(health: str) -> str:
    """The verdict label of a host health transition into ``health``."""
    return HA_HOST_VERDICTS.get(health, f"host_{health}")


class PoolCollector(Collector):
    """The database connection pools of this process, read at scrape time: connections in use
    and the most the pool opens (pool_size + max_overflow). ``pools`` yields (name, pool) pairs
    of SQLAlchemy pools; a pool without a size (SQLite's) reports its connections in use only."""

    def __init__(self, pools: Callable[[], Iterable[tuple[str, Any]]]) -> None:
        self.pools = pools

    def collect(self) -> Iterator[Metric]:
        in_use = GaugeMetricFamily("vcenter_db_pool_connections_in_use", "database connections checked out of this process's pool", labels=["database"])
        most = GaugeMetricFamily("vcenter_db_pool_connections_max", "the most connections this process's pool opens (pool_size + max_overflow)", labels=["database"])
        for name, pool in self.pools():
            checkedout = getattr(pool, "checkedout", None)
            if checkedout is None:
                continue
            in_use.add_metric([name], float(checkedout()))
            size, overflow = getattr(pool, "size", None), getattr(pool, "_max_overflow", None)
            if callable(size) and isinstance(overflow, int):
                most.add_metric([name], float(size() + max(overflow, 0)))
        yield in_use
        yield most


class ServerState:
    """What the API reads from the database and Redis at scrape time (vcenter.services.monitoring.scrape)."""

    def __init__(self, open_tasks: Iterable[tuple[str, str, int]], outbox_pending: int, outbox_lag: float, heartbeats: Iterable[tuple[int, str, float | None]]) -> None:
        self.open_tasks = list(open_tasks)  # (kind, state, count) of tasks queued or running
        self.outbox_pending = outbox_pending
        self.outbox_lag = outbox_lag  # age of the oldest message not yet relayed; 0 when none
        self.heartbeats = list(heartbeats)  # (host id, name, heartbeat age or None: no heartbeat key)


class ServerStateCollector(Collector):
    """Gauges of the whole system read at scrape time by the API (one query each, not counters
    kept in memory, so every replica reports the same truth): open tasks by kind and state, the
    outbox's backlog and lag, every agent's heartbeat age as the server sees it in Redis."""

    def __init__(self, read: Callable[[], ServerState]) -> None:
        self.read = read

    def describe(self) -> list[Metric]:
        return []  # no database read when registered

    def collect(self) -> Iterator[Metric]:
        ok = GaugeMetricFamily("vcenter_state_scrape_ok", "1 when this scrape read the database and Redis, 0 when it could not (the gauges below are then missing)")
        try:
            state = self.read()
        except Exception:
            ok.add_metric([], 0.0)
            yield ok
            return
        ok.add_metric([], 1.0)
        yield ok
        tasks = GaugeMetricFamily("vcenter_tasks_open", "tasks queued or running now, by kind and state (from the database)", labels=["kind", "state"])
        for kind, task_state, count in state.open_tasks:
            tasks.add_metric([kind, task_state], float(count))
        yield tasks
        yield GaugeMetricFamily("vcenter_outbox_pending", "outbox messages not yet relayed to the broker", value=float(state.outbox_pending))
        yield GaugeMetricFamily("vcenter_outbox_lag_seconds", "age of the oldest outbox message not yet relayed (0 when none waits)", value=state.outbox_lag)
        age = GaugeMetricFamily("vcenter_agent_heartbeat_age_seconds", "seconds since each trusted host's agent last renewed its heartbeat key in Redis (Redis' clock)", labels=["host_id", "host"])
        missing = GaugeMetricFamily("vcenter_agent_heartbeat_missing", "1 for a trusted host (not in standby) whose heartbeat key expired or never existed", labels=["host_id", "host"])
        for host_id, name, seconds in state.heartbeats:
            if seconds is not None:
                age.add_metric([str(host_id), name], seconds)
            missing.add_metric([str(host_id), name], 0.0 if seconds is not None else 1.0)
        yield age
        yield missing


class ProcessCatalogue(Collector):
    """The process's ``REGISTRY`` inside another registry (the API application's)."""

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


# Every known label value from the start, at 0: a series that exists before its first event
# lets rate() and alerts see the first one (Prometheus' instrumentation guidance).
for _verdict in (*HA_HOST_VERDICTS.values(), "vm_reset", "vm_reset_limit"):
    HA_VERDICTS.labels(_verdict)
for _outcome in ("applied", "recommended"):
    DRS_MOVES.labels(_outcome)
for _outcome in ("ok", "failed"):
    AGENT_HEARTBEATS.labels(_outcome)
