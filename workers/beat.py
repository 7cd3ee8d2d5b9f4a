"""The periodic schedule and the Celery app of the orchestrator workers. Beat runs once per
system: celery-redbeat keeps the schedule in Redis behind a lock, so a second beat waits."""

from __future__ import annotations

from celery import Celery

from vcenter.core.settings import Settings, get_settings
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
    app.conf.redbeat_lock_timeout = max(int(settings.reaper_period * 5), 30)
    app.conf.beat_max_loop_interval = min(settings.reaper_period, settings.host_monitor_period)
    return app
