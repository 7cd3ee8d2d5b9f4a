"""What the API's /metrics reads from the database and Redis at scrape time: tasks queued or
running by kind and state, the outbox's backlog and the age of its oldest message, and the
heartbeat age of every trusted host's agent (vcenter.observability.metrics.ServerStateCollector
turns it into gauges).

Only open tasks are counted (the ``state`` index answers it): finished tasks are counted as
they finish by ``vcenter_tasks_total``, and a count over the whole history would scan it.
A heartbeat's age is read from the key's remaining time to live on Redis' clock
(``heartbeat_ttl`` minus PTTL: the agent sets the key with that TTL on every beat), so neither
the agent's nor the API host's clock enters it."""

from __future__ import annotations

from sqlalchemy import func, select

from vcenter.core.clock import as_utc, utcnow
from vcenter.db.models import Host, OutboxMessage, Task
from vcenter.domain.states import TaskState
from vcenter.messaging.contracts import heartbeat_key
from vcenter.observability.metrics import ServerState
from vcenter.services.tasks.runtime import Runtime

OPEN = (TaskState.QUEUED.value, TaskState.RUNNING.value)


def heartbeat_age(ttl: float, pttl_ms: int) -> float | None:
    """Seconds since the key was last set with ``ttl``, from its remaining PTTL; None when the
    key is gone (PTTL -2) or has no expiry (-1: not an agent's heartbeat)."""
    if pttl_ms < 0:
        return None
    return max(0.0, ttl - pttl_ms / 1000.0)


def read_state(runtime: Runtime) -> ServerState:
    with runtime.sessions() as session:
        open_tasks = [(kind, state, int(count)) for kind, state, count in session.execute(select(Task.kind, Task.state, func.count()).where(Task.state.in_(OPEN)).group_by(Task.kind, Task.state))]
        pending, oldest = session.execute(select(func.count(), func.min(OutboxMessage.created_at)).where(OutboxMessage.sent_at.is_(None))).one()
        hosts = list(session.execute(select(Host.id, Host.name).where(Host.trust_state == "trusted", Host.standby.is_(False)).order_by(Host.id)))
    lag = max(0.0, (utcnow() - as_utc(oldest)).total_seconds()) if oldest is not None else 0.0
    pipe = runtime.redis.pipeline(transaction=False)
    for host_id, _name in hosts:
        pipe.pttl(heartbeat_key(host_id))
    ttls = pipe.execute() if hosts else []
    ttl = runtime.settings.heartbeat_ttl
    return ServerState(open_tasks, int(pending or 0), lag, [(host_id, name, heartbeat_age(ttl, int(left))) for (host_id, name), left in zip(hosts, ttls)])
