"""`vcenter backup` / `vcenter restore` on SQLite and PostgreSQL: every row and key file comes
back equal (across engines too), ids are not given again, an older revision is migrated
forward, and the refusals (damaged archive, newer revision, database holding data) touch
nothing. A restored server managing the same real host: tests/libvirtd/test_backup_restore_real.py."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from tests.conftest import fresh_postgres, make_settings, migrated_postgres, migrated_sqlite
from vcenter.db.migrate import migrations_dir, upgrade
from vcenter.db.models import Base
from vcenter.services.housekeeping import server_backup
from vcenter.services.housekeeping.server_backup import BackupRefused, backup, encode_value, restore

# this release's newest schema revision (what a restore migrates to, what a backup records)
HEAD = max(p.name.split("_", 1)[0] for p in migrations_dir().joinpath("versions").glob("0*.py"))

T0 = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=timezone.utc)


def empty_server_database(kind: str, tmp_path: Path, name: str) -> str:
    """An empty database at the head revision (as `vcenter db upgrade` leaves it): a copy of
    the one migrated once per test session (tests/conftest.py)."""
    if kind == "sqlite":
        return migrated_sqlite(tmp_path / name)
    return migrated_postgres("" if name == "source.db" else "_restore")


def fill(url: str) -> None:
    """Rows that exercise the format: a folder whose parent has a higher id, a deleted user
    (its id must not come back), SQL NULL and JSON null in one JSON column, microseconds."""
    tables = Base.metadata.tables
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(tables["datacenters"].insert(), [{"id": 1, "name": "dc1", "created_at": T0, "updated_at": T0}])
        folders = tables["folders"]
        conn.execute(folders.insert(), [{"id": 1, "name": "child", "datacenter_id": 1, "parent_id": None, "created_at": T0, "updated_at": T0}])
        conn.execute(folders.insert(), [{"id": 2, "name": "parent", "datacenter_id": 1, "parent_id": None, "created_at": T0, "updated_at": T0}])
        conn.execute(folders.update().where(folders.c.id == 1).values(parent_id=2))
        users = tables["users"]
        for name in ("alice", "bob"):
            conn.execute(users.insert().values(username=name, password_hash="x", created_at=T0, updated_at=T0))
        conn.execute(users.delete().where(users.c.username == "bob"))
        tasks = tables["tasks"]
        conn.execute(tasks.insert(), [{"kind": "vm.create", "object_type": "vm", "object_id": 1, "params": {"a": [1, 2.5, "ü"]}, "result": None, "created_at": T0}])
        conn.execute(tasks.insert().values(kind="vm.start", object_type="vm", object_id=1, params={}, result=sa.JSON.NULL, created_at=T0))
        conn.execute(tasks.insert(), [{"kind": "vm.stop", "object_type": "vm", "object_id": 1, "params": {}, "result": {"ok": True}, "created_at": T0, "finished_at": T0}])
    engine.dispose()


def all_rows(url: str) -> dict[str, list]:
    """Every table's rows as the archive encodes them (so that engines compare), plus whether
    each JSON value is SQL NULL."""
    engine = sa.create_engine(url)
    found = {}
    with engine.connect() as conn:
        metadata = sa.MetaData()
        metadata.reflect(conn)
        for table in metadata.sorted_tables:
            if table.name == "alembic_version":
                continue
            kinds = [server_backup.column_kind(c) for c in table.columns]
            nulls = [c.is_(None) for c, k in zip(table.columns, kinds) if k == "json"]
            rows = conn.execute(sa.select(*table.columns, *nulls).order_by(*table.primary_key.columns)).all()
            found[table.name] = [[encode_value(v, k) for v, k in zip(row[: len(kinds)], kinds)] + list(row[len(kinds) :]) for row in rows]
    engine.dispose()
    return found


def keys_of(key_dir: Path) -> dict[str, bytes]:
    return {p.relative_to(key_dir).as_posix(): p.read_bytes() for p in sorted(key_dir.rglob("*")) if p.is_file()}


def make_keys(key_dir: Path) -> None:
    (key_dir / "tls").mkdir(parents=True)
    (key_dir / "ca").mkdir()
    for name, data in (("command-signing.pem", b"signing"), ("tls/api.crt", b"cert"), ("tls/api.key", b"key"), ("ca/ca.key", b"ca key"), ("ca/ca.crt", b"ca cert")):
        (key_dir / name).write_bytes(data)
        os.chmod(key_dir / name, 0o600)


@pytest.mark.parametrize("source_kind,target_kind", [("sqlite", "sqlite"), ("postgresql", "postgresql"), ("sqlite", "postgresql")])
def test_round_trip_gives_back_every_row_and_key_file(tmp_path, source_kind, target_kind):
    source_url = empty_server_database(source_kind, tmp_path, "source.db")
    fill(source_url)
    source = make_settings(tmp_path / "a", database_url=source_url)
    make_keys(Path(source.key_dir))
    archive = tmp_path / "server.tar.gz"

    summary = backup(source, archive)
    assert summary.rows == sum(len(rows) for rows in all_rows(source_url).values())
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    with tarfile.open(archive) as tar:
        assert tar.getnames()[0] == "manifest.json"
        assert all(stat.S_IMODE(m.mode) == 0o600 for m in tar.getmembers())
        manifest = json.load(tar.extractfile("manifest.json"))
    assert manifest["format_version"] == 1 and manifest["database"]["revision"] == HEAD and manifest["product_version"]
    assert {k["file"] for k in manifest["keys"]} == {"keys/command-signing.pem", "keys/tls/api.crt", "keys/tls/api.key", "keys/ca/ca.key", "keys/ca/ca.crt"}

    # An empty server: its schema migrated (a fresh signing key made by `db upgrade`).
    target_url = empty_server_database(target_kind, tmp_path, "target.db")
    target = make_settings(tmp_path / "b", database_url=target_url)
    Path(target.key_dir).mkdir(parents=True)
    (Path(target.key_dir) / "command-signing.pem").write_bytes(b"a fresh key of the empty server")
    done = restore(target, archive)

    assert all_rows(target_url) == all_rows(source_url)
    assert keys_of(Path(target.key_dir)) == keys_of(Path(source.key_dir))
    assert all(stat.S_IMODE(p.stat().st_mode) == (0o700 if p.is_dir() else 0o600) for p in Path(target.key_dir).rglob("*"))
    assert done.moved_aside and keys_of(Path(done.moved_aside[0])) == {"command-signing.pem": b"a fresh key of the empty server"}
    # Bob's id (2) is never given again; the next folder follows the highest.
    engine = sa.create_engine(target_url)
    with engine.begin() as conn:
        conn.execute(Base.metadata.tables["users"].insert().values(username="carol", password_hash="x", created_at=T0, updated_at=T0))
        assert conn.execute(sa.text("SELECT id FROM users WHERE username = 'carol'")).scalar() == 3
        conn.execute(Base.metadata.tables["folders"].insert().values(name="new", datacenter_id=1, created_at=T0, updated_at=T0))
        assert conn.execute(sa.text("SELECT id FROM folders WHERE name = 'new'")).scalar() == 3
    engine.dispose()


def rewrite(archive: Path, change) -> None:
    """Rewrite the archive's members through ``change(name, data) -> data``."""
    with tarfile.open(archive) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(archive, "w:gz") as tar:
        for member, data in members:
            data = change(member.name, data)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))


@pytest.fixture
def archived(tmp_path):
    """A SQLite server's archive, and settings of an empty SQLite server to restore it into."""
    url = migrated_sqlite(tmp_path / "source.db")
    fill(url)
    source = make_settings(tmp_path / "a", database_url=url)
    make_keys(Path(source.key_dir))
    archive = tmp_path / "server.tar.gz"
    backup(source, archive)
    return archive, make_settings(tmp_path / "b", database_url=f"sqlite:///{tmp_path / 'target.db'}")


def refused(settings, archive, code: str, force: bool = False) -> None:
    with pytest.raises(BackupRefused) as caught:
        restore(settings, archive, force=force)
    assert caught.value.code == code, caught.value.message
    assert not Path(settings.key_dir).exists()  # nothing was put in place


def test_a_damaged_file_is_refused_before_anything_is_touched(archived, tmp_path):
    archive, target = archived
    rewrite(archive, lambda name, data: data.replace(b"dc1", b"dcX") if "datacenters" in name else data)
    refused(target, archive, "ARCHIVE_CHECKSUM_MISMATCH")
    assert not (tmp_path / "target.db").exists()


def test_a_missing_or_extra_file_is_refused(archived):
    archive, target = archived
    rewrite(archive, lambda name, data: data.replace(b'"keys/ca/ca.crt"', b'"keys/ca/ca.crX"') if name == "manifest.json" else data)
    refused(target, archive, "ARCHIVE_CHECKSUM_MISMATCH")


def test_not_an_archive_is_refused(tmp_path):
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar")
    refused(make_settings(tmp_path / "b"), tmp_path / "junk.tar.gz", "ARCHIVE_INVALID")


def test_a_newer_revision_or_format_is_refused(archived, tmp_path):
    archive, target = archived

    def newer(name, data):
        if name != "manifest.json":
            return data
        manifest = json.loads(data)
        manifest["database"]["revision"] = "0999"
        return json.dumps(manifest).encode()

    rewrite(archive, newer)
    refused(target, archive, "ARCHIVE_REVISION_NEWER")
    rewrite(archive, lambda name, data: data.replace(b'"format_version": 1', b'"format_version": 2') if name == "manifest.json" else data)
    refused(target, archive, "ARCHIVE_FORMAT_UNSUPPORTED")
    assert not (tmp_path / "target.db").exists()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_database_holding_data_is_refused_unless_forced(archived, tmp_path, kind):
    archive, _ = archived
    url = empty_server_database(kind, tmp_path, "busy.db")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(Base.metadata.tables["datacenters"].insert().values(name="other", created_at=T0, updated_at=T0))
    engine.dispose()
    target = make_settings(tmp_path / "b", database_url=url)
    refused(target, archive, "DATABASE_NOT_EMPTY")
    assert [r[1] for r in all_rows(url)["datacenters"]] == ["other"]

    done = restore(target, archive, force=True)
    assert [r[1] for r in all_rows(url)["datacenters"]] == ["dc1"]
    if kind == "sqlite":  # the replaced database is kept beside it
        assert [r[1] for r in all_rows(f"sqlite:///{done.moved_aside[0]}")["datacenters"]] == ["other"]


def test_a_failed_postgresql_restore_leaves_the_database_as_it_was(archived, tmp_path):
    """One transaction: the load fails after the old tables were dropped; all of it rolls back."""
    archive, _ = archived
    url = migrated_postgres()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(Base.metadata.tables["datacenters"].insert().values(name="other", created_at=T0, updated_at=T0))
    engine.dispose()

    def unfit(name, data):
        if name != "manifest.json":
            return data
        manifest = json.loads(data)
        table = next(t for t in manifest["database"]["tables"] if t["name"] == "tasks")
        table["columns"][-1] = "no_such_column"
        return json.dumps(manifest).encode()

    rewrite(archive, unfit)
    target = make_settings(tmp_path / "b", database_url=url)
    refused(target, archive, "ARCHIVE_INCONSISTENT", force=True)
    assert [r[1] for r in all_rows(url)["datacenters"]] == ["other"]


def test_an_older_revision_is_restored_and_migrated_forward(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0018")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO datacenters (name, version, created_at, updated_at) VALUES ('old-dc', 1, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"))
    engine.dispose()
    archive = tmp_path / "old.tar.gz"
    assert backup(make_settings(tmp_path / "a", database_url=url), archive).revision == "0018"

    target_url = fresh_postgres()
    done = restore(make_settings(tmp_path / "b", database_url=target_url), archive)
    assert done.revision == "0018"
    engine = sa.create_engine(target_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == HEAD
        assert conn.execute(sa.text("SELECT name, created_at FROM datacenters")).one() == ("old-dc", datetime(2026, 1, 1, tzinfo=timezone.utc))
    engine.dispose()


def test_the_commands_report_a_refusal_by_its_code(archived, tmp_path, monkeypatch):
    from vcenter.cli import app

    archive, target = archived
    monkeypatch.setenv("VCENTER_REDIS_URL", target.redis_url)
    runner = CliRunner()
    args = ["--database-url", target.database_url, "--key-dir", target.key_dir]
    first = runner.invoke(app, ["restore", str(archive), *args])
    assert first.exit_code == 0, first.output
    assert "restored" in first.output and f"revision {HEAD}" in first.output
    again = runner.invoke(app, ["restore", str(archive), *args])
    assert again.exit_code == 2 and "refused: DATABASE_NOT_EMPTY" in again.output
    out = runner.invoke(app, ["backup", str(tmp_path / "again.tar.gz"), *args])
    assert out.exit_code == 0 and f"revision {HEAD}" in out.output, out.output
