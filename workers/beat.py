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


def make_orchestrator_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = make_celery(settings)
    tasks.register(app, settings)
    app.conf.beat_schedule = tasks.beat_schedule(settings)
    app.conf.redbeat_redis_url = settings.redis_url
    app.conf.redbeat_redis_use_ssl = tls_options(settings)
    # One effective scheduler whatever the count of beats (vcenter.messaging.beat_lock).
    app.conf.redbeat_lock_key = beat_lock.BEAT_LOCK_KEY
    app.conf.redbeat_lock_timeout = beat_lock.lock_ttl(settings)
    app.conf.beat_max_loop_interval = beat_lock.tick_interval(settings)
    return app
