"""Alembic environment: vcenter.db metadata; the URL comes from VCENTER_DATABASE_URL."""

from __future__ import annotations

from alembic import context

from vcenter.core.settings import get_settings
from vcenter.db.models import Base
from vcenter.db.session import make_engine

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or get_settings().database_url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def _run(connection) -> None:
    if connection.dialect.name == "sqlite":
        _run_on_sqlite(connection)
        return
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def _run_on_sqlite(connection) -> None:
    """Every revision of the run in one transaction, committed after the foreign-key check or
    rolled back whole.

    Python's sqlite3 driver opens a transaction only before INSERT, UPDATE and DELETE, so each
    DDL statement used to commit (and sync to disk) by itself: a failed revision left the file
    half-migrated, and a fresh database cost ~570 syncs (1.5-2.5 s; 0.8 s now). With the
    driver's own transaction handling off, the BEGIN below holds them all."""
    # Batch migrations rebuild a SQLite table by copy, drop and rename: with foreign keys on,
    # the drop would cascade into every table referring to it (group members, tokens, VM
    # disks...). Off for the migration (outside a transaction, where SQLite honours it),
    # checked and back on after.
    connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
    connection.commit()
    driver = connection.connection.driver_connection
    legacy = driver.isolation_level
    driver.isolation_level = None
    try:
        # begun before configure(): Alembic then sees an outside transaction and commits none
        # of its own after each revision
        connection.exec_driver_sql("BEGIN")
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        try:
            context.run_migrations()
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"migration left rows whose foreign keys point nowhere: {broken[:10]}")
        except BaseException:
            connection.rollback()
            raise
        connection.commit()
    finally:
        driver.isolation_level = legacy
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")
        connection.commit()


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:
        _run(connectable)
        return
    engine = make_engine(_url())
    with engine.connect() as connection:
        _run(connection)
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
