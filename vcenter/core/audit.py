"""Who is acting, from where: set per request by the API, read when an Event is recorded, so
every audit record carries the source address without threading it through every call.

The address is the client's as vcenter.api.client_address decides it: the TCP peer, or behind a
configured trusted proxy the rightmost untrusted ``X-Forwarded-For`` entry; never an address a
client merely wrote into a header. The per-address login limit reads the same value."""

from __future__ import annotations

from contextvars import ContextVar

request_source: ContextVar[str | None] = ContextVar("request_source", default=None)
