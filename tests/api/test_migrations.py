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


def test_upgrading_to_0016_keeps_rows_that_refer_to_rebuilt_tables_and_backfills_actors(tmp_path):
    """0016 rebuilds users, groups and the inventory tables on SQLite (AUTOINCREMENT): with
    foreign keys on, each rebuild's drop cascaded into group members, tokens and sessions."""
    from sqlalchemy import text

    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0015")
    engine = create_engine(url)
    stamp = "'2026-01-01 00:00:00+00:00'"
    with engine.begin() as conn:
        for name in ("alice", "system"):
            conn.execute(text(f"INSERT INTO users (username, password_hash, is_admin, disabled, created_at, updated_at) VALUES ('{name}', 'x', 0, 0, {stamp}, {stamp})"))
        conn.execute(text(f"INSERT INTO groups (name, created_at, updated_at) VALUES ('ops', {stamp}, {stamp})"))
        conn.execute(text("INSERT INTO group_members (group_id, user_id) VALUES (1, 1)"))
        conn.execute(text(f"INSERT INTO datacenters (name, version, created_at, updated_at) VALUES ('dc', 1, {stamp}, {stamp})"))
        for actor in ("alice", "system"):
            conn.execute(text(f"INSERT INTO events (at, username, kind, message, data) VALUES ({stamp}, '{actor}', 'x', 'y', '{{}}')"))
        # A permission of a user deleted before 0016, and one on a datacenter gone before it.
        conn.execute(text("INSERT INTO roles (name, privileges, builtin, description, created_at, updated_at) VALUES ('r', '[]', 0, '', " + stamp + ", " + stamp + ")"))
        for principal, object_type, object_id in ((99, "root", 0), (1, "datacenter", 42), (1, "datacenter", 1)):
            conn.execute(
                text(
                    f"INSERT INTO permissions (principal_type, principal_id, role_id, object_type, object_id, propagate, created_at, updated_at) "
                    f"VALUES ('user', {principal}, 1, '{object_type}', {object_id}, 1, {stamp}, {stamp})"
                )
            )
    engine.dispose()
    upgrade(url)
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT group_id, user_id FROM group_members")).all() == [(1, 1)]
        assert conn.execute(text("SELECT username, user_id FROM events ORDER BY id")).all() == [("alice", 1), ("system", None)]
        assert conn.execute(text("SELECT principal_id, object_type, object_id FROM permissions")).all() == [(1, "datacenter", 1)]
        assert "AUTOINCREMENT" in conn.execute(text("SELECT sql FROM sqlite_master WHERE name = 'vms'")).scalar()
    engine.dispose()


def test_ids_are_never_reused_and_permissions_die_with_their_object(migrated_url):
    from vcenter.db.models import Permission, Role, User

    with session_scope(migrated_url) as session:
        role = Role(name="r", privileges=[])
        user = User(username="u", password_hash="x")
        first, second = Datacenter(name="a"), Datacenter(name="b")
        session.add_all([role, user, first, second])
        session.flush()
        session.add(Permission(principal_type="user", principal_id=user.id, role_id=role.id, object_type="datacenter", object_id=second.id))
        deleted_id = second.id
    with session_scope(migrated_url) as session:
        session.delete(session.get(Datacenter, deleted_id))
    with session_scope(migrated_url) as session:
        assert session.scalars(select(Permission)).all() == []
        third = Datacenter(name="c")
        session.add(third)
        session.flush()
        assert third.id > deleted_id


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_failed_upgrade_leaves_the_database_at_its_revision_before(tmp_path, kind):
    """One transaction for the whole run on both engines: 0021 fails (its table is already
    there), so 0020's switch table and column are not left behind, the recorded revision stays
    0019, and the rows are as they were. SQLite used to commit each DDL statement by itself."""
    from sqlalchemy import inspect, text

    url = f"sqlite:///{tmp_path / 'm.db'}" if kind == "sqlite" else fresh_postgres()
    upgrade(url, "0019")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO datacenters (name, version, created_at, updated_at) VALUES ('kept', 1, '2026-01-01 00:00:00+00:00', '2026-01-01 00:00:00+00:00')"))
        conn.execute(text("CREATE TABLE host_certificates (id INTEGER PRIMARY KEY)"))
    with pytest.raises(Exception, match="host_certificates"):
        upgrade(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0019"
        assert conn.execute(text("SELECT name FROM datacenters")).scalars().all() == ["kept"]
        assert "switches" not in inspect(conn).get_table_names()
        assert "switch_id" not in {c["name"] for c in inspect(conn).get_columns("portgroups")}
        if kind == "sqlite":  # foreign keys are on again for the next connection's pragma
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []
    engine.dispose()
