"""How every process of virtcenter reaches Redis: one URL (VCENTER_REDIS_URL), and when it is a
``rediss://`` URL, TLS that verifies Redis's certificate and host name against
VCENTER_REDIS_CA (a CA bundle file; the system's trust store when unset).

Agents on the hypervisors reach Redis over the management network (their command queues and
heartbeats), so a deployment gives Redis a password and TLS; the same options go to the plain
clients (heartbeats, locks, health), to Celery's broker and to celery-redbeat, decided here
once."""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import urlsplit

import redis

from vcenter.core.settings import Settings


def uses_tls(url: str) -> bool:
    return urlsplit(url).scheme == "rediss"


def tls_options(settings: Settings) -> dict[str, Any] | None:
    """The TLS options of a Redis connection (redis-py's and kombu's names), or None for a
    plain ``redis://`` URL. Always verified: a certificate that does not chain to the CA or
    does not name the host is refused, never accepted for convenience."""
    if not uses_tls(settings.redis_url):
        return None
    return {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": settings.redis_ca, "ssl_check_hostname": True}


def connect(settings: Settings, **options: Any) -> redis.Redis:
    """A client of the settings' Redis (``options``: timeouts and the like)."""
    return redis.Redis.from_url(settings.redis_url, **(tls_options(settings) or {}), **options)
