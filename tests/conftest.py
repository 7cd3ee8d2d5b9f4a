"""Shared fixtures: settings on a throw-away database, the API app, an administrator.

Real services come from the test command (scripts/test.sh): VCENTER_TEST_REDIS_URL and
VCENTER_TEST_PG_URL name the Redis and PostgreSQL it started.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vcenter.core.settings import Settings

# Passwords are hashed with argon2id as in production, at its lowest costs: at the default ones
# (vcenter.core.settings) each user created and each login cost 0.1-0.2 s of CPU, more than half
# of the API tier. Set in the environment, so the servers and agents tests start inherit them.
for _name, _value in (("VCENTER_PASSWORD_HASH_TIME_COST", "1"), ("VCENTER_PASSWORD_HASH_MEMORY_COST", "8"), ("VCENTER_PASSWORD_HASH_PARALLELISM", "1")):
    os.environ.setdefault(_name, _value)


def xdist_worker() -> int | None:
    """The index of this pytest-xdist worker (PYTEST_XDIST_WORKER gw0, gw1, ...), None when the
    tests run in one process."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else None


def redis_db_url(url: str, db: int) -> str:
    """The Redis URL ``url`` with database number ``db``: a test module (or an xdist worker)
    that starts its own processes keeps their queues, heartbeats and locks apart."""
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


def worker_redis_url(url: str, worker: int | None) -> str:
    """Each xdist worker its own Redis database (1, 2, ...; the URL's own without xdist): every
    test numbers its hosts from 1, so workers sharing one would see each other's heartbeats,
    locks and queues."""
    return url if worker is None else redis_db_url(url, worker + 1)


def worker_pg_url(url: str | None, worker: int | None) -> str | None:
    """Each xdist worker its own PostgreSQL database (vcenter_test_gw0, ...), and so its own
    migrated template: a test drops and re-creates its database."""
    if url is None or worker is None:
        return url
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return parsed.set(database=f"{parsed.database}_gw{worker}").render_as_string(hide_password=False)


REDIS_URL = worker_redis_url(os.environ.get("VCENTER_TEST_REDIS_URL", "redis://127.0.0.1:6391/0"), xdist_worker())
PG_URL = worker_pg_url(os.environ.get("VCENTER_TEST_PG_URL"), xdist_worker())


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": f"sqlite:///{tmp_path / 'vcenter.db'}",
        "redis_url": REDIS_URL,
        "task_lease": 5.0,
        "reaper_period": 0.5,
        "host_monitor_period": 0.5,
        "heartbeat_period": 0.2,
        "heartbeat_ttl": 1.0,
        "agent_report_period": 2.0,
        "agent_reconnect_delay": 0.3,
        "task_queue_timeout": 60.0,
        "celery_visibility_timeout": 3600.0,
        "key_dir": str(tmp_path / "keys"),
        # Each test its own upload folder: the upload cleanup job removes files it does not know.
        "upload_dir": str(tmp_path / "uploads"),
        # Datastores of a test live in /srv/... (never touched: simulated hosts) or below
        # tmp_path (agents on real files): both are datastore roots, for the server and agents.
        "datastore_roots": f"/var/lib/virtcenter/datastores,/srv,/mnt,{tmp_path}",
        "agent_datastore_roots": f"/var/lib/virtcenter/datastores,/srv,/mnt,{tmp_path}",
        # Event/task streams end within a fraction of a second and task waits are short: a
        # test (or the fuzzer) that opens one without meaning to follow it is not held up.
        "feed_poll_period": 0.05,
        "feed_stream_max_lifetime": 0.2,
        "task_wait_max": 1.0,
    }
    values.update(overrides)
    return Settings(**values)


def fresh_postgres() -> str:
    """An empty schema in the test PostgreSQL started by the test command."""
    from sqlalchemy import create_engine, text

    if not PG_URL:
        pytest.fail("VCENTER_TEST_PG_URL is not set: run the tests through `make test`, which starts PostgreSQL")
    _ensure_database()
    _WORKER_DATABASE["template_schema"] = False
    engine = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return PG_URL


# Migrated once per test session and copied for each test: running every migration for each
# test cost about 1 s on SQLite and 0.5 s on PostgreSQL, minutes over the API tier.
_TEMPLATES: dict[str, str] = {}
# Whether the worker's PostgreSQL database holds the template's schema, changed since by the
# rows of `settings` tests only: then emptying it is enough (see reset_postgres).
_WORKER_DATABASE = {"template_schema": False}
# The template's own rows (tables the migrations seed) and sequence positions, read once.
_TEMPLATE_STATE: dict[str, object] = {}


def _maintenance_engine():
    """An engine on PostgreSQL's maintenance database (databases are created from there)."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    return create_engine(make_url(PG_URL).set(database="postgres"), isolation_level="AUTOCOMMIT")


def _ensure_database() -> None:
    """Create PG_URL's database if it is missing (an xdist worker's own, on its first use)."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    name = make_url(PG_URL).database
    engine = _maintenance_engine()
    try:
        with engine.connect() as conn:
            if conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}).first() is None:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()


def migrated_postgres(suffix: str = "") -> str:
    """The test PostgreSQL database (or a second one beside it, named with ``suffix``) at the
    head revision, with nothing in it: a copy (CREATE DATABASE ... TEMPLATE) of a database
    migrated once per session; connections left on the previous test's database are closed
    (WITH (FORCE))."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from vcenter.db.migrate import upgrade

    if not PG_URL:
        pytest.fail("VCENTER_TEST_PG_URL is not set: run the tests through `make test`, which starts PostgreSQL")
    url = make_url(PG_URL)
    template = f"{url.database}_template"
    name = f"{url.database}{suffix}"
    engine = _maintenance_engine()
    try:
        with engine.connect() as conn:
            if "postgresql" not in _TEMPLATES:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)'))
                conn.execute(text(f'CREATE DATABASE "{template}"'))
                upgrade(url.set(database=template).render_as_string(hide_password=False))
                _TEMPLATES["postgresql"] = template
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    finally:
        engine.dispose()
    if not suffix:  # handed to a test that may change more than rows
        _WORKER_DATABASE["template_schema"] = False
    return url.set(database=name).render_as_string(hide_password=False)


def _template_state(conn) -> dict[str, object]:
    """The rows the migrations seeded and where each sequence stands, in the template."""
    from sqlalchemy import select, text

    from vcenter.db.models import Base

    rows = {}
    for table in Base.metadata.sorted_tables:
        found = [dict(r._mapping) for r in conn.execute(select(table))]
        if found:
            rows[table.name] = found
    sequences = conn.execute(text("SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = 'public'")).all()
    return {"rows": rows, "sequences": sequences}


def reset_postgres() -> str:
    """The worker's PostgreSQL database as migrated_postgres() leaves it, made in 10-50 ms by
    emptying its tables when only a `settings` test's rows changed it (re-creating it from the
    template cost 0.5-1 s of the database server's time for each test); otherwise, or if
    emptying fails, re-created. Other connections to it (a previous test's pools) are closed
    first, as DROP DATABASE ... WITH (FORCE) would."""
    from sqlalchemy import create_engine, text

    from vcenter.db.models import Base

    if not _WORKER_DATABASE["template_schema"]:
        url = migrated_postgres()
        _WORKER_DATABASE["template_schema"] = True
        return url
    engine = create_engine(PG_URL)
    try:
        with engine.begin() as conn:
            if not _TEMPLATE_STATE:
                template = create_engine(make_url_of(PG_URL, _TEMPLATES["postgresql"]))
                with template.connect() as tconn:
                    _TEMPLATE_STATE.update(_template_state(tconn))
                template.dispose()
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"))
            conn.execute(text("; ".join(f'DELETE FROM "{t.name}"' for t in reversed(Base.metadata.sorted_tables))))
            for table in Base.metadata.sorted_tables:
                seeded = _TEMPLATE_STATE["rows"].get(table.name)  # type: ignore[attr-defined]
                if seeded:
                    conn.execute(table.insert(), seeded)
            for name, last in _TEMPLATE_STATE["sequences"]:  # type: ignore[attr-defined]
                conn.execute(text("SELECT setval(:s, :v, :called)"), {"s": f'"{name}"', "v": last or 1, "called": last is not None})
        return PG_URL
    except Exception:
        _WORKER_DATABASE["template_schema"] = False
        return reset_postgres()
    finally:
        engine.dispose()


def make_url_of(url: str, database: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=database).render_as_string(hide_password=False)


def migrated_sqlite(path: Path) -> str:
    """A SQLite database file at ``path`` at the head revision: a copy of one migrated once
    per session."""
    import shutil
    import tempfile

    from vcenter.db.migrate import upgrade

    if "sqlite" not in _TEMPLATES:
        template = Path(tempfile.mkdtemp(prefix="vc-sqlite-template-")) / "vcenter.db"
        upgrade(f"sqlite:///{template}")
        _TEMPLATES["sqlite"] = str(template)
    shutil.copyfile(_TEMPLATES["sqlite"], path)
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request, tmp_path: Path) -> Settings:
    """Settings on a migrated, empty database: every test using it runs on both databases."""
    url = reset_postgres() if request.param == "postgresql" else migrated_sqlite(tmp_path / "vcenter.db")
    return make_settings(tmp_path, database_url=url)


TIERS = ("unit", "api", "system", "libvirtd", "lab", "e2e")


def pytest_collection_finish(session) -> None:
    """The modules and test items collected live as long as the run: out of the garbage
    collector's reach (vcenter.api.app.freeze_start_up_objects says why), its full collections
    then walk only what the tests make."""
    import gc

    gc.collect()
    gc.freeze()


def pytest_collection_modifyitems(config, items) -> None:
    """Every test carries the marker of its tier, named by its folder under tests/."""
    root = Path(__file__).resolve().parent
    for item in items:
        try:
            tier = Path(str(item.fspath)).resolve().relative_to(root).parts[0]
        except ValueError:
            continue
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test that ran on a Stack (or a lab) reports the tails of its process logs: a
    CI run keeps nothing but this output."""
    report = yield
    if report.failed and call.when in ("setup", "call"):
        seen = set()
        for value in getattr(item, "funcargs", {}).values():
            tails = getattr(value, "log_tails", None)
            if callable(tails) and id(value) not in seen:
                seen.add(id(value))
                report.sections.append((f"process logs of {type(value).__name__}", tails()))
    return report
