"""Alembic builds the schema on SQLite and PostgreSQL 15, and it matches the models."""
from __future__ import annotations

from datetime import datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, select

from tests.conftest import fresh_postgres
from vcenter.db.migrate import upgrade
from vcenter.db.models import Base, Datacenter, Event
from vcenter.db.session import session_scope

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def migrated_url(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}" if request.param == "sqlite" else fresh_postgres()
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
