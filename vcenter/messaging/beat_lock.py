"""Beat, the periodic scheduler, runs once per system whatever the count of `vcenter beat`
processes: each takes celery-redbeat's lock in Redis (a key with a TTL, owned by a token) before
it schedules anything, and renews it on every tick; a second beat waits on the lock as a standby
and takes over when the first dies and its lock expires. Redis is the lock service, as for the
HA monitors (vcenter.services.ha); nothing else decides who schedules.

What this decides: the lock's key (what `vcenter healthcheck beat` looks for) and its TTL, the
setting ``beat_lock_ttl`` but never less than three ticks, so that a live beat renews it twice
before it could expire under it.
"""

from __future__ import annotations

from vcenter.core.settings import Settings

# celery-redbeat's own default name ("redbeat:" prefix + ":lock"), kept so that a deployment's
# running beats and this server agree during an upgrade.
BEAT_LOCK_KEY = "redbeat::lock"


def tick_interval(settings: Settings) -> float:
    """Beat wakes at least this often (its schedule's shortest period)."""
    return min(settings.reaper_period, settings.host_monitor_period)


def lock_ttl(settings: Settings) -> int:
    """Seconds the lock lives after its last renewal: a standby takes over within this."""
    return max(int(settings.beat_lock_ttl), int(3 * tick_interval(settings)) + 1)
