"""Who is acting, from where: set per request by the API, read when an Event is recorded, so
every audit record carries the source address without threading it through every call."""
from __future__ import annotations

from contextvars import ContextVar

request_source: ContextVar[str | None] = ContextVar("request_source", default=None)
