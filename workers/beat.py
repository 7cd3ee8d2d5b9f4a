"""The periodic schedule and the Celery app of the orchestrator workers. Beat runs once per
system: celery-redbeat keeps the schedule in Redis behind a lock, so a second beat waits
(vcenter.messaging.beat_lock)."""

from __future__ import annotations

from celery import Celery

from vcenter.core.settings import Settings, get_settings
from vcenter.messaging import beat_lock
from vcenter.messaging.celery_app import make_celery
from vcenter.messaging.redis_link import tls_options
from workers.orchestrator import tasks


def observe_worker(app: Celery, settings: Settings) -> None:
    """The worker's liveness (its consumer's loop), task counters, database pool and listener."""
    from vcenter.observability import celery_probe
    from vcenter.observability.listener import LoopWatch, start_listener
    from vcenter.observability.metrics import REGISTRY, PoolCollector

    runtime = app.vc_runtime
    watch = LoopWatch(settings.process_stall_after)
    celery_probe.count_tasks()
    celery_probe.watch_consumer(app, watch)
    REGISTRY.register(PoolCollector(runtime.database_pools))
    start_listener("worker", settings.worker_metrics_listen, watch, {"database": runtime.check_database, "redis": runtime.check_redis}, settings.metrics_token)


def observed_scheduler(app: Celery, settings: Settings) -> type:
    """Beat's scheduler (celery-redbeat's) stamping beat's liveness; beat's listener started.
    Beat needs Redis only (the schedule and its lock live there)."""
    from vcenter.observability import celery_probe
    from vcenter.observability.listener import LoopWatch, start_listener

    watch = LoopWatch(settings.process_stall_after)
    scheduler = celery_probe.watched_scheduler(watch)
    start_listener("beat", settings.beat_metrics_listen, watch, {"redis": app.vc_runtime.check_redis}, settings.metrics_token)
    return scheduler


def make_orchestrator_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = make_celery(settings)
    app.vc_runtime = tasks.register(app, settings)  # the worker's health listener checks its database and Redis
    app.conf.beat_schedule = tasks.beat_schedule(settings)
    app.conf.redbeat_redis_url = settings.redis_url
    app.conf.redbeat_redis_use_ssl = tls_options(settings)
    # One effective scheduler whatever the count of beats (vcenter.messaging.beat_lock).
    app.conf.redbeat_lock_key = beat_lock.BEAT_LOCK_KEY
    app.conf.redbeat_lock_timeout = beat_lock.lock_ttl(settings)
    app.conf.beat_max_loop_interval = beat_lock.tick_interval(settings)
    return app
