"""Which of Celery's own log lines an idle process keeps.

Beat sends the housekeeping tasks (outbox relay, reaper, host monitor, ...) every few seconds,
and Celery logs each one at INFO three times: beat's "Sending due task", the worker's
"received" and "succeeded": about 160 lines a minute from an idle worker and 80 from beat, in
which the one line that mattered drowned. Those lines of the periodic tasks are routine and
count as DEBUG; a periodic task's failure, and every line about any other task (the operations
users asked for), stay as Celery logs them. A periodic task that does something says so in its
own log lines."""

from __future__ import annotations

import logging
from collections.abc import Iterable

# the loggers Celery writes those lines to (celery.beat is redbeat's too)
ROUTINE_LOGGERS = ("celery.beat", "celery.worker.strategy", "celery.app.trace")


def task_name_of(record: logging.LogRecord) -> str | None:
    """The task a Celery log line is about: the worker's lines carry a context dict with its
    name; beat's "Sending due task %s (%s)" the entry's name, then the task's."""
    args = record.args
    if isinstance(args, dict):
        name = args.get("name")
        return name if isinstance(name, str) else None
    if record.name == "celery.beat" and isinstance(args, tuple) and len(args) == 2:
        return str(args[1])
    return None


def is_routine(record: logging.LogRecord, periodic: frozenset[str]) -> bool:
    return record.levelno == logging.INFO and task_name_of(record) in periodic


class RoutineAsDebug(logging.Filter):
    """Turns the routine lines into DEBUG ones, kept only where DEBUG is on."""

    def __init__(self, periodic: Iterable[str]) -> None:
        super().__init__()
        self.periodic = frozenset(periodic)

    def filter(self, record: logging.LogRecord) -> bool:
        if not is_routine(record, self.periodic):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)


def quiet_routine_task_lines(periodic: Iterable[str]) -> None:
    """Install the filter on Celery's loggers for the tasks named in ``periodic``."""
    routine = RoutineAsDebug(periodic)
    for name in ROUTINE_LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, RoutineAsDebug)]:
            logger.removeFilter(old)
        logger.addFilter(routine)
