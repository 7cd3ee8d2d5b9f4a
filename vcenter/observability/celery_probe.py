"""Liveness and metrics of the Celery processes (the orchestrator worker, beat, the agent's
consumer): what turns their loop, and the tasks they run or send.

- worker and agent: a consumer bootstep stamps the process's ``LoopWatch`` from the worker's
  timer every few seconds while the consumer holds its broker connection; ``task_prerun`` and
  ``task_postrun`` count every task run (``vcenter_celery_tasks_total``,
  ``vcenter_celery_task_seconds``).
- beat: the scheduler stamps on every tick; until it holds the scheduler lock (celery-redbeat
  makes a second beat wait for it) the watch says it waits, which is live.
"""

from __future__ import annotations

import time
from typing import Any

from celery import Celery, bootsteps
from celery.signals import before_task_publish, task_postrun, task_prerun

from vcenter.observability.listener import LoopWatch
from vcenter.observability.metrics import BEAT_ACTIVE, BEAT_SENT, CELERY_TASK_SECONDS, CELERY_TASKS

_started: dict[str, float] = {}


def _prerun(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        _started[task_id] = time.perf_counter()


def _postrun(task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
    name = getattr(task, "name", None) or "unknown"
    CELERY_TASKS.labels(name, (state or "unknown").lower()).inc()
    began = _started.pop(task_id or "", None)
    if began is not None:
        CELERY_TASK_SECONDS.labels(name).observe(time.perf_counter() - began)


def count_tasks() -> None:
    """Count the tasks this process runs (worker, agent)."""
    task_prerun.connect(_prerun, weak=False)
    task_postrun.connect(_postrun, weak=False)


def watch_consumer(app: Celery, watch: LoopWatch) -> None:
    """Stamp ``watch`` from the worker's timer while its consumer is connected to the broker."""
    period = max(0.2, min(5.0, watch.stall_after / 4))

    class LoopStamp(bootsteps.StartStopStep):
        requires = {"celery.worker.consumer.tasks:Tasks"}

        def start(self, consumer: Any) -> None:
            def tick() -> None:
                if consumer.connection is not None and consumer.blueprint.state == bootsteps.RUN:
                    watch.stamp()

            watch.stamp()
            self.entry = consumer.timer.call_repeatedly(period, tick)

        def stop(self, consumer: Any) -> None:
            entry = getattr(self, "entry", None)
            if entry is not None:
                entry.cancel()

    app.steps["consumer"].add(LoopStamp)


def _sent(sender: str | None = None, **_: Any) -> None:
    BEAT_SENT.labels(sender or "unknown").inc()


def watched_scheduler(watch: LoopWatch) -> type:
    """celery-redbeat's scheduler, stamping ``watch`` on every tick; counts what beat sends."""
    from redbeat import RedBeatScheduler

    before_task_publish.connect(_sent, weak=False)
    watch.wait("waiting for the scheduler lock (another beat holds it)")
    BEAT_ACTIVE.set(0)

    class WatchedRedBeatScheduler(RedBeatScheduler):  # type: ignore[misc]
        def tick(self, *args: Any, **kwargs: Any) -> Any:
            watch.stamp()
            BEAT_ACTIVE.set(1)
            return super().tick(*args, **kwargs)

    return WatchedRedBeatScheduler
