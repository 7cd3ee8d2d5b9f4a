"""Alembic builds the schema on SQLite and PostgreSQL 15, and it matches the models."""
from __future__ import annotations

from datetime import datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, select, text

from tests.conftest import PG_URL
from vcenter.db.migrate import upgrade
from vcenter.db.models import Base, Datacenter, Event
from vcenter.db.session import session_scope

pytestmark = pytest.mark.integration


def _fresh_pg() -> str:
    if not PG_URL:
        pytest.fail("VCENTER_TEST_PG_URL is not set: run the tests through `make test`, which starts PostgreSQL")
    engine = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return PG_URL


@pytest.fixture(params=["sqlite", "postgresql"])
def migrated_url(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}" if request.param == "sqlite" else _fresh_pg()
    upgrade(url)
    return url


def test_models_and_migrations_agree(migrated_url):
    engine = create_engine(migrated_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    engine.dispose()
    assert diff == [], f"models and migrations differ: {diff}"


def test_timestamps_are_utc_and_timezone_aware(migrated_url):
    with session_scope(migrated_url) as session:
        session.add(Datacenter(name="tz"))
    with session_scope(migrated_url) as session:
        dc = session.scalar(select(Datacenter).where(Datacenter.name == "tz"))
        assert isinstance(dc.created_at, datetime)
        assert dc.created_at.utcoffset().total_seconds() == 0
        assert dc.created_at.tzinfo is not None


def test_naive_datetimes_are_refused(migrated_url):
    with pytest.raises(Exception, match="naive"):
        with session_scope(migrated_url) as session:
            session.add(Event(kind="x", message="y", at=datetime(2026, 1, 1)))
