"""Celery's lines about periodic tasks count as DEBUG; failures and other tasks' lines do not
(vcenter.messaging.routine_logs). The lines are logged through Celery's own loggers, with its
own formats and arguments."""

from __future__ import annotations

import logging

import pytest
from celery.app import trace
from celery.utils.log import get_logger

from vcenter.messaging.routine_logs import quiet_routine_task_lines

PERIODIC = ["orchestrator.reap_tasks", "orchestrator.relay_outbox"]


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def lines():
    root = logging.getLogger()
    handler, level = Lines(), root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    quiet_routine_task_lines(PERIODIC)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)
    for name in ("celery.beat", "celery.worker.strategy", "celery.app.trace"):
        logging.getLogger(name).filters.clear()


def worker_lines(name: str) -> None:
    context = {"id": "t-1", "name": name, "return_value": None, "runtime": 0.01, "args": (), "kwargs": {}, "eta": None}
    get_logger("celery.worker.strategy").info(trace.LOG_RECEIVED, context)
    trace.info(trace.LOG_SUCCESS, context)


def beat_line(entry: str, task: str) -> None:
    get_logger("celery.beat").info("Scheduler: Sending due task %s (%s)", entry, task)


def test_an_idle_schedule_logs_nothing_at_info(lines):
    for _ in range(3):
        beat_line("reap-tasks", "orchestrator.reap_tasks")
        worker_lines("orchestrator.reap_tasks")
        worker_lines("orchestrator.relay_outbox")
    assert lines.records == []


def test_other_tasks_and_failures_keep_their_lines(lines):
    worker_lines("agent.vm_power_on")
    beat_line("drs-once", "orchestrator.drs")
    trace.logger.error("Task %(name)s[%(id)s] %(description)s: %(exc)s", {"name": "orchestrator.reap_tasks", "id": "t-2", "description": "raised unexpected", "exc": "boom"})
    kept = [(r.name, r.levelname) for r in lines.records]
    assert kept == [("celery.worker.strategy", "INFO"), ("celery.app.trace", "INFO"), ("celery.beat", "INFO"), ("celery.app.trace", "ERROR")]


def test_with_debug_on_the_routine_lines_come_back_as_debug(lines):
    logging.getLogger().setLevel(logging.DEBUG)
    worker_lines("orchestrator.reap_tasks")
    assert [r.levelname for r in lines.records] == ["DEBUG", "DEBUG"]
    assert "orchestrator.reap_tasks" in lines.records[0].getMessage()
