"""Logging set-up shared by every process: one line per event, saying what happened."""

from __future__ import annotations

import json
import logging
import sys


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return json.dumps(body)


def celery_quiet(as_json: bool) -> list[str]:
    """Celery's global options for a process logging JSON: ``--quiet`` drops the start-up banner
    it prints as plain text (its log records reach our handler like every other)."""
    return ["--quiet"] if as_json else []


def setup_logging(level: str = "INFO", as_json: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Python's warnings (Celery's "running as root" among them) become records of this handler
    # too, or they would be the plain multi-line exceptions in a JSON stream.
    logging.captureWarnings(as_json)
    # One line per HTTP request of the agent's client would drown what happened.
    logging.getLogger("httpx").setLevel(logging.WARNING)
