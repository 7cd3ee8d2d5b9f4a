"""Central Celery tasks, thin wrappers over services: relay the outbox, reap tasks whose
agent died, judge host heartbeats. Each runs in one transaction and is safe to run twice."""

from __future__ import annotations

import logging

from celery import Celery

from vcenter.core.settings import Settings
from vcenter.observability.metrics import DRS_PASS, ROLLUP
from vcenter.services.housekeeping import reaper
from vcenter.services.tasks import idempotency
from vcenter.services.tasks.runtime import Runtime

log = logging.getLogger(__name__)


def register(app: Celery, settings: Settings) -> Runtime:
    runtime = Runtime.build(settings)
    runtime.celery = app

    @app.task(name="orchestrator.relay_outbox", ignore_result=True)
    def relay_outbox() -> int:
        return runtime.relay_outbox()

    @app.task(name="orchestrator.reap_tasks", ignore_result=True)
    def reap_tasks() -> dict:
        with runtime.transaction() as session:
            counts = reaper.reap(session, settings)
            counts["events_purged"] = reaper.purge_events(session, settings)
            counts["refusals_purged"] = reaper.purge_refusals(session, settings)
            counts["idempotency_keys_purged"] = idempotency.purge(session, settings)
        if any(counts.values()):
            log.info("reaper: %s", counts)
        return counts

    @app.task(name="orchestrator.advance_sagas", ignore_result=True)
    def advance_sagas() -> None:
        with runtime.transaction() as session:
            reaper.advance_sagas(session)

    @app.task(name="orchestrator.drs", ignore_result=True)
    def drs_pass() -> list:
        from vcenter.services.drs import drs

        with DRS_PASS.time(), runtime.transaction() as session:
            return drs.run_due(session, settings)

    @app.task(name="orchestrator.dpm", ignore_result=True)
    def dpm_pass() -> list:
        from vcenter.services.drs import dpm

        with runtime.transaction() as session:
            return dpm.run_due(session, settings)

    @app.task(name="orchestrator.backups", ignore_result=True)
    def backups_pass() -> list:
        from vcenter.services.protection import backups

        with runtime.transaction() as session:
            return backups.run_due(session, settings)

    @app.task(name="orchestrator.upload_cleanup", ignore_result=True)
    def upload_cleanup_pass() -> dict:
        from vcenter.services.housekeeping import upload_cleanup

        with runtime.transaction() as session:
            return upload_cleanup.run(session, settings)

    @app.task(name="orchestrator.monitor_hosts", ignore_result=True)
    def monitor_hosts() -> None:
        try:
            runtime.check_redis()
        except Exception as exc:
            # With Redis down no heartbeat is readable: judge nobody rather than everybody.
            log.warning("host monitor skipped: Redis unreachable (%s)", exc)
            return
        with runtime.transaction() as session:
            reaper.monitor_hosts(session, runtime.host_alive)

    @app.task(name="orchestrator.metrics_rollup", ignore_result=True)
    def metrics_rollup() -> dict:
        from vcenter.services.monitoring import metrics

        with ROLLUP.time():
            with runtime.transaction() as session:
                counts = {"rolled": metrics.rollup(session, settings)}
            with runtime.transaction() as session:
                counts["purged"] = metrics.purge(session, settings)
        if any(counts.values()):
            log.info("metrics: %s", counts)
        return counts

    @app.task(name="orchestrator.alarms", ignore_result=True)
    def evaluate_alarms() -> dict:
        from vcenter.services.monitoring import alarms

        with runtime.transaction() as session:
            return alarms.evaluate(session, settings)

    @app.task(name="orchestrator.alarm_webhooks", ignore_result=True)
    def alarm_webhooks() -> dict:
        from vcenter.services.monitoring import alarms

        return alarms.deliver_webhooks(runtime.transaction, settings)

    return runtime


def beat_schedule(settings: Settings) -> dict:
    return {
        "relay-outbox": {"task": "orchestrator.relay_outbox", "schedule": settings.reaper_period},
        "reap-tasks": {"task": "orchestrator.reap_tasks", "schedule": settings.reaper_period},
        "advance-sagas": {"task": "orchestrator.advance_sagas", "schedule": settings.reaper_period},
        "drs": {"task": "orchestrator.drs", "schedule": settings.drs_period},
        "dpm": {"task": "orchestrator.dpm", "schedule": settings.dpm_period},
        "monitor-hosts": {"task": "orchestrator.monitor_hosts", "schedule": settings.host_monitor_period},
        "backups": {"task": "orchestrator.backups", "schedule": settings.backup_schedule_period},
        "upload-cleanup": {"task": "orchestrator.upload_cleanup", "schedule": settings.upload_cleanup_period},
        "metrics-rollup": {"task": "orchestrator.metrics_rollup", "schedule": settings.metrics_rollup_period},
        "alarms": {"task": "orchestrator.alarms", "schedule": settings.alarm_period},
        "alarm-webhooks": {"task": "orchestrator.alarm_webhooks", "schedule": settings.alarm_period},
    }
