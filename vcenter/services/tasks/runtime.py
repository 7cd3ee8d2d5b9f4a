"""The process-wide wiring of the server side: settings, database sessions, the Celery
publisher and Redis. Built once per process; tests build their own."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.exc import DataError
from sqlalchemy.orm.exc import StaleDataError

from vcenter.core.errors import Invalid, StaleVersion, VcError
from vcenter.core.settings import Settings
from vcenter.domain.datastore_roots import parse_roots
from vcenter.db.session import sessionmaker_for
from vcenter.messaging.celery_app import make_celery
from vcenter.messaging.contracts import heartbeat_key
from vcenter.messaging.redis_link import connect
from vcenter.messaging.signing import CommandSigner
from vcenter.services.tasks import outbox, task_metrics  # noqa: F401  (task_metrics: counts the task transitions every session commits)
from vcenter.services.tasks.events import record_event

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    sessions: sessionmaker[Session]
    celery: Any
    redis: redis.Redis
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings) -> "Runtime":
        # A datastore root of '/' or /etc would allow what the roots exist to refuse: fail at start.
        parse_roots(settings.datastore_roots)
        return cls(
            settings=settings,
            sessions=sessionmaker_for(settings.database_url),
            celery=make_celery(settings),
            redis=connect(settings, socket_timeout=2, socket_connect_timeout=2),
        )

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One transaction; on commit, relay whatever it put in the outbox."""
        session = self.sessions()
        try:
            yield session
            dirty = session.info.pop("outbox_dirty", False)
            session.commit()
        except DataError as exc:
            # A value the database cannot hold (an id beyond its integer range, a NUL in
            # text): the client's mistake, not a server error.
            session.rollback()
            raise Invalid("a value is out of the range the server accepts", code="INVALID_VALUE") from exc
        except StaleDataError as exc:
            session.rollback()
            raise StaleVersion("the object changed while you were changing it; read it again") from exc
        except VcError as exc:
            session.rollback()
            if exc.audit:
                self._record_refusal(exc.audit)
            raise
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()
        if dirty:
            self.relay_outbox()

    def _record_refusal(self, audit: dict[str, Any]) -> None:
        """Refused attempts leave an Event in a transaction of their own."""
        with self.sessions() as session:
            record_event(session, **audit)
            session.commit()

    @property
    def signer(self) -> CommandSigner:
        """Signs commands to agents; the key is loaded (created on first use) when needed."""
        if "signer" not in self.extras:
            self.extras["signer"] = CommandSigner.from_settings(self.settings)
        return self.extras["signer"]

    def relay_outbox(self) -> int:
        try:
            return outbox.relay(self.sessions, self.celery, self.settings.outbox_batch, signer=self.signer)
        except Exception:  # the periodic relay will catch up; the transaction is committed
            log.exception("outbox relay failed; the periodic relay will retry")
            return 0

    def host_alive(self, host_id: int) -> bool:
        return bool(self.redis.exists(heartbeat_key(host_id)))

    def database_pools(self) -> list[tuple[str, Any]]:
        """The connection pool of this runtime's database (vcenter.observability.metrics.PoolCollector)."""
        return [("main", self.sessions.kw["bind"].pool)]

    def check_database(self) -> None:
        with self.sessions() as session:
            session.execute(text("SELECT 1"))

    def check_redis(self) -> None:
        self.redis.ping()
