"""The Celery application shared by the server side, the orchestrator workers and the agents.

JSON only; acks_late with reject_on_worker_lost so a command whose worker died is redelivered;
a Redis visibility timeout above the longest command.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue  # type: ignore[attr-defined]  # kombu re-exports it without __all__

from vcenter.core.settings import Settings, get_settings
from vcenter.messaging.contracts import ORCHESTRATOR_QUEUE
from vcenter.messaging.redis_link import tls_options


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery("virtcenter", broker=settings.redis_url)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=ORCHESTRATOR_QUEUE,
        task_queues=[Queue(ORCHESTRATOR_QUEUE)],  # type: ignore[no-untyped-call]
        # A command whose consumer died unacknowledged is redelivered once the visibility
        # timeout passed, found by a sweep every ``unacked_restore_interval`` seconds
        # (throttle 1: kombu's default would sweep only every tenth interval).
        broker_transport_options={
            "visibility_timeout": settings.celery_visibility_timeout,
            "unacked_restore_interval": settings.celery_unacked_restore_interval,
            "unacked_restore_throttle": 1,
        },
        broker_use_ssl=tls_options(settings),  # None for redis://
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        worker_hijack_root_logger=False,
        timezone="UTC",
        enable_utc=True,
    )
    return app
