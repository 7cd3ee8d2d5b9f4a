"""The server's backup and restore (`vcenter backup FILE`, `vcenter restore FILE`): what one
archive holds, what a restore accepts, and how it lands without leaving half a server.

The archive is a gzip-compressed tar, mode 0600:
- ``manifest.json`` first: format and format version, the product release that wrote it, the
  database's Alembic revision and dialect, the creation time, and per file its SHA-256;
- ``database/NNN-<table>.jsonl``: every table's rows (the Alembic bookkeeping table excepted),
  in foreign-key dependency order, one JSON array per row in the manifest's column order;
  datetimes as ISO 8601 in UTC; a JSON column's value wrapped in a one-element list, so that
  SQL NULL (``null``) and a stored JSON null (``[null]``) stay apart;
- ``keys/...``: the whole key directory (settings.key_dir: command signing key, self-signed TLS
  material, and whatever else the server keeps there), and ``signing-key/...`` when the command
  signing key lives outside it.

Why a logical format rather than pg_dump or SQLite's file copy: one format for both engines
(a SQLite server's backup restores into PostgreSQL and back), no client binary whose version
must match the server's, and every row readable and checksummed. The rows are read in one
snapshot: PostgreSQL in a REPEATABLE READ, read-only transaction; SQLite from a copy made by
SQLite's online backup API. So a backup runs while the server runs.

A restore checks the whole archive (format, every checksum, no file more or less) before it
touches anything, then: refuses a database holding data (``DATABASE_NOT_EMPTY``) unless forced;
builds the schema at the archive's revision, loads the rows, runs the migrations forward to
this release's head (an archive of a revision this release does not know is from a newer one:
``ARCHIVE_REVISION_NEWER``), and brings id sequences to where the source left them (ids of
deleted users, groups and roles are never given again). PostgreSQL: all of it in one
transaction. SQLite: into a new file beside the database, renamed over it when complete. The
key directory is staged beside the live one and swapped in after the database committed; what
was there before is kept beside it (``<key_dir>.before-restore-<time>``), as is a forced SQLite
database.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import sqlite3
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path, PurePosixPath
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, make_url

from vcenter.core.clock import utcnow
from vcenter.core.errors import VcError
from vcenter.core.release import release
from vcenter.core.settings import Settings
from vcenter.db.session import make_engine

log = logging.getLogger(__name__)

FORMAT = "virtcenter-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DB_DIR = "database"
KEYS_DIR = "keys"
SIGNING_KEY_DIR = "signing-key"
BATCH = 1000
# Rows a fresh server writes itself (migrations, first start): a database holding only these is
# empty. Table -> the column that marks such a row.
SEEDED = {"roles": "builtin", "alarm_definitions": "builtin"}
ALEMBIC_TABLE = "alembic_version"


class BackupRefused(VcError):
    """A backup or restore that cannot go on; ``code`` names why."""

    status = 409
    code = "BACKUP_REFUSED"


# --- pure decisions ------------------------------------------------------------------------
def manifest_problem(manifest: Any) -> str | None:
    """Why a manifest cannot be read by this release, or None."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return "not a virtcenter backup manifest"
    version = manifest.get("format_version")
    if not isinstance(version, int) or version < 1:
        return f"format version {version!r} is not one"
    if version > FORMAT_VERSION:
        return f"format version {version} is newer than this release reads ({FORMAT_VERSION})"
    db = manifest.get("database")
    if not isinstance(db, dict) or not isinstance(db.get("revision"), str) or not isinstance(db.get("tables"), list):
        return "the manifest names no database revision or tables"
    return None


def expected_files(manifest: dict[str, Any]) -> dict[str, str]:
    """Archive member name -> SHA-256 for every file the manifest lists."""
    files = {t["file"]: t["sha256"] for t in manifest["database"]["tables"]}
    files.update({k["file"]: k["sha256"] for k in manifest.get("keys", [])})
    return files


def safe_member(name: str) -> bool:
    """A member name a restore may write: relative, no '..', below one of the archive's folders."""
    path = PurePosixPath(name)
    return not path.is_absolute() and ".." not in path.parts and (name == MANIFEST or (len(path.parts) > 1 and path.parts[0] in (DB_DIR, KEYS_DIR, SIGNING_KEY_DIR)))


def file_problems(expected: dict[str, str], found: dict[str, str]) -> list[str]:
    """What differs between the files the manifest lists and those found (name -> SHA-256)."""
    problems = [f"{name}: missing" for name in sorted(set(expected) - set(found))]
    problems += [f"{name}: not in the manifest" for name in sorted(set(found) - set(expected))]
    problems += [f"{name}: checksum {found[name][:12]}... is not the manifest's {expected[name][:12]}..." for name in sorted(set(expected) & set(found)) if found[name] != expected[name]]
    return problems


def encode_value(value: Any, kind: str) -> Any:
    """A column value as the archive holds it; ``kind`` is datetime, json or plain."""
    if kind == "json":
        return None if value is None else [value]
    if value is None:
        return None
    if kind == "datetime":
        if value.tzinfo is None:  # SQLite keeps UTC without its zone
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc).isoformat()
    if isinstance(value, (str, int, float, bool)):
        return value
    raise BackupRefused(f"a value of type {type(value).__name__} has no place in the archive", code="BACKUP_UNSUPPORTED_VALUE")


def decode_value(value: Any, kind: str, naive_utc: bool) -> Any:
    """The archive's value as the target column takes it (``naive_utc``: SQLite's datetimes)."""
    if kind == "json":
        if value is None:
            return None
        return sa.JSON.NULL if value[0] is None else value[0]
    if value is None or kind != "datetime":
        return value
    moment = datetime.fromisoformat(value).astimezone(timezone.utc)
    return moment.replace(tzinfo=None) if naive_utc else moment


def column_kind(column: sa.Column) -> str:
    if isinstance(column.type, sa.JSON):
        return "json"
    if isinstance(column.type, sa.DateTime):
        return "datetime"
    return "plain"


# --- archive I/O ---------------------------------------------------------------------------
@dataclass
class _Staged:
    """A file written into the staging folder, with its archive name and digest."""

    name: str
    path: Path
    sha256: str
    size: int


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_files(settings: Settings) -> Iterator[tuple[str, Path]]:
    """(archive name, path) of every file of the key directory, and of the signing key when it
    lies outside it."""
    key_dir = Path(settings.key_dir)
    if key_dir.is_dir():
        for path in sorted(key_dir.rglob("*")):
            if path.is_file():
                yield f"{KEYS_DIR}/{path.relative_to(key_dir).as_posix()}", path
    signing = Path(settings.command_signing_key) if settings.command_signing_key else None
    if signing is not None and signing.is_file() and key_dir.resolve() not in signing.resolve().parents:
        yield f"{SIGNING_KEY_DIR}/{signing.name}", signing


@dataclass
class BackupSummary:
    path: Path
    revision: str
    tables: int
    rows: int
    key_files: int
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)


def backup(settings: Settings, dest: Path) -> BackupSummary:
    """Write the archive of this server's database and key material to ``dest`` (mode 0600;
    written beside it and renamed, so a failed backup leaves no partial file)."""
    dest = dest.resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".vcenter-backup-", dir=dest.parent))  # mode 0700
    try:
        with _snapshot(settings.database_url, staging) as conn:
            revision = _current_revision(conn)
            if revision is None:
                raise BackupRefused("the database has no Alembic revision: run `vcenter db upgrade` first", code="DATABASE_NOT_MIGRATED")
            tables, staged, rows = _dump_tables(conn, staging)
            sequences = _read_sequences(conn)
            dialect = conn.dialect.name
        keys = []
        for name, path in _key_files(settings):
            data = path.read_bytes()
            keys.append({"file": name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
            staged.append(_Staged(name, path, keys[-1]["sha256"], len(data)))
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "product_version": release(),
            "created_at": utcnow().isoformat(),
            "database": {"dialect": dialect, "revision": revision, "tables": tables, "sequences": sequences},
            "keys": keys,
            "signing_key_file": settings.command_signing_key if any(k["file"].startswith(SIGNING_KEY_DIR + "/") for k in keys) else None,
        }
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as raw:
                with tarfile.open(fileobj=raw, mode="w:gz") as tar:
                    _add_member(tar, MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
                    for item in staged:
                        with open(item.path, "rb") as f:
                            _add_member(tar, item.name, f, item.size)
                raw.flush()
                os.fsync(raw.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, dest)
        finally:
            if tmp.exists():
                tmp.unlink()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return BackupSummary(dest, revision, len(tables), rows, len(keys), manifest)


def _add_member(tar: tarfile.TarFile, name: str, data: bytes | Any, size: int | None = None) -> None:
    info = tarfile.TarInfo(name)
    info.mode = 0o600
    info.mtime = int(utcnow().timestamp())
    if isinstance(data, bytes):
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    else:
        info.size = size or 0
        tar.addfile(info, data)


class _snapshot:
    """A connection that reads one consistent snapshot of the server's database."""

    def __init__(self, url: str, staging: Path):
        self.url, self.staging = url, staging
        self.engine: sa.Engine | None = None
        self.conn: Connection | None = None

    def __enter__(self) -> Connection:
        parsed = make_url(self.url)
        if parsed.get_backend_name() == "sqlite":
            source = parsed.database
            if not source or not Path(source).exists():
                raise BackupRefused(f"no SQLite database at {source!r}", code="DATABASE_MISSING")
            copy = self.staging / "snapshot.db"
            with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as src, sqlite3.connect(copy) as dst:
                src.backup(dst)  # SQLite's online backup: one consistent copy while the server writes
            self.engine = sa.create_engine(f"sqlite:///{copy}")
            self.conn = self.engine.connect()
            return self.conn
        self.engine = make_engine(self.url)
        self.conn = self.engine.connect().execution_options(isolation_level="REPEATABLE READ")
        self.conn.begin()
        self.conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        return self.conn

    def __exit__(self, *exc: Any) -> None:
        if self.conn is not None:
            self.conn.close()
        if self.engine is not None:
            self.engine.dispose()


def _current_revision(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def _reflect(conn: Connection) -> list[sa.Table]:
    metadata = sa.MetaData()
    metadata.reflect(conn)
    return [t for t in metadata.sorted_tables if t.name != ALEMBIC_TABLE]


def _dump_tables(conn: Connection, staging: Path) -> tuple[list[dict[str, Any]], list[_Staged], int]:
    entries, staged, total = [], [], 0
    (staging / DB_DIR).mkdir()
    for number, table in enumerate(_reflect(conn), start=1):
        columns = list(table.columns)
        kinds = [column_kind(c) for c in columns]
        # A JSON column is read twice: its value, and whether it is SQL NULL (a stored JSON
        # null reads back as None too).
        selected: list[Any] = list(columns) + [c.is_(None) for c, k in zip(columns, kinds) if k == "json"]
        order = list(table.primary_key.columns) or columns
        name = f"{DB_DIR}/{number:03d}-{table.name}.jsonl"
        path = staging / name
        digest, rows = hashlib.sha256(), 0
        with open(path, "wb") as out:
            result = conn.execution_options(yield_per=BATCH).execute(sa.select(*selected).order_by(*order))
            for row in result:
                null_flags = iter(row[len(columns) :])
                values = []
                for value, kind in zip(row[: len(columns)], kinds):
                    if kind == "json":
                        values.append(None if next(null_flags) else [value])
                    else:
                        values.append(encode_value(value, kind))
                line = (json.dumps(values, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
                out.write(line)
                digest.update(line)
                rows += 1
        entries.append({"name": table.name, "file": name, "columns": [c.name for c in columns], "kinds": kinds, "rows": rows, "sha256": digest.hexdigest()})
        staged.append(_Staged(name, path, digest.hexdigest(), path.stat().st_size))
        total += rows
    return entries, staged, total


def _id_column(table: sa.Table) -> sa.Column | None:
    pk = list(table.primary_key.columns)
    return pk[0] if len(pk) == 1 and isinstance(pk[0].type, sa.Integer) else None


def _read_sequences(conn: Connection) -> dict[str, int]:
    """Table -> the highest id ever given (beyond the rows still there): SQLite's AUTOINCREMENT
    counters, PostgreSQL's sequences."""
    if conn.dialect.name == "sqlite":
        if not conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").first():
            return {}
        return {name: int(seq) for name, seq in conn.exec_driver_sql("SELECT name, seq FROM sqlite_sequence")}
    found = {}
    for table in _reflect(conn):
        column = _id_column(table)
        if column is None:
            continue
        sequence = conn.execute(sa.text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table.name, "c": column.name}).scalar()
        if sequence:
            last, called = conn.execute(sa.text(f"SELECT last_value, is_called FROM {sequence}")).one()
            found[table.name] = int(last) if called else int(last) - 1
    return found


# --- restore -------------------------------------------------------------------------------
@dataclass
class RestoreSummary:
    revision: str
    migrated_to: str
    tables: int
    rows: int
    key_files: int
    moved_aside: list[str]
    product_version: str


def read_archive(archive: Path, into: Path) -> dict[str, Any]:
    """Check the archive and write its files below ``into``; its manifest. Nothing else is
    touched, and nothing is trusted before every checksum matched."""
    try:
        tar = tarfile.open(archive, "r:*")
    except (OSError, tarfile.TarError) as exc:
        raise BackupRefused(f"{archive} is not a readable archive: {exc}", code="ARCHIVE_INVALID") from None
    found: dict[str, str] = {}
    manifest: Any = None
    with tar:
        for member in tar:
            if not member.isfile() or not safe_member(member.name):
                raise BackupRefused(f"{archive}: unexpected member {member.name!r}", code="ARCHIVE_INVALID")
            source = tar.extractfile(member)
            assert source is not None
            if member.name == MANIFEST:
                try:
                    manifest = json.loads(source.read())
                except ValueError as exc:
                    raise BackupRefused(f"{archive}: the manifest is not JSON: {exc}", code="ARCHIVE_INVALID") from None
                continue
            target = into / member.name
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            digest = hashlib.sha256()
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            found[member.name] = digest.hexdigest()
    if manifest is None:
        raise BackupRefused(f"{archive} holds no {MANIFEST}", code="ARCHIVE_INVALID")
    problem = manifest_problem(manifest)
    if problem:
        raise BackupRefused(f"{archive}: {problem}", code="ARCHIVE_FORMAT_UNSUPPORTED" if "newer" in problem else "ARCHIVE_INVALID")
    problems = file_problems(expected_files(manifest), found)
    if problems:
        raise BackupRefused(f"{archive} is damaged: {'; '.join(problems[:5])}", code="ARCHIVE_CHECKSUM_MISMATCH", details=problems)
    return manifest


def check_revision(revision: str, product_version: str) -> None:
    """Refuse an archive whose revision this release's migrations do not know (a newer one)."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    from vcenter.db.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    try:
        known = script.get_revision(revision) is not None
    except CommandError:
        known = False
    if not known:
        raise BackupRefused(
            f"the archive's database is at revision {revision} (release {product_version}), which this release ({release()}, head {script.get_current_head()}) does not know: restore it with that release or a newer one",
            code="ARCHIVE_REVISION_NEWER",
        )


def tables_holding_data(conn: Connection) -> list[str]:
    """The tables with rows a fresh server would not have written itself."""
    busy = []
    for table in _reflect(conn):
        query = sa.select(sa.literal(1)).select_from(table)
        marker = SEEDED.get(table.name)
        if marker is not None and marker in table.columns:
            query = query.where(sa.not_(table.columns[marker]))
        if conn.execute(query.limit(1)).first():
            busy.append(table.name)
    return busy


def restore(settings: Settings, archive: Path, force: bool = False) -> RestoreSummary:
    """Restore ``archive`` into the configured database and key directory (see the module)."""
    archive = archive.resolve()
    key_dir = Path(settings.key_dir).resolve()
    key_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".vcenter-restore-", dir=key_dir.parent))
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    try:
        manifest = read_archive(archive, staging / "archive")
        db = manifest["database"]
        check_revision(db["revision"], str(manifest.get("product_version")))
        url = settings.database_url
        if make_url(url).get_backend_name() == "sqlite":
            moved, migrated_to = _restore_sqlite(url, staging, db, force, stamp)
        else:
            moved, migrated_to = _restore_transaction(url, staging / "archive", db, force), "head"
        try:
            moved += _swap_keys(settings, staging / "archive", manifest, stamp)
        except OSError as exc:  # the database is in: say so, and how to finish
            raise BackupRefused(
                f"the database is restored, but the key directory could not be put in place ({exc}); fix that and run the restore again with --force", code="RESTORE_KEYS_FAILED"
            ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    rows = sum(int(t["rows"]) for t in db["tables"])
    return RestoreSummary(db["revision"], migrated_to, len(db["tables"]), rows, len(manifest.get("keys", [])), moved, str(manifest.get("product_version")))


def _refuse_if_busy(conn: Connection, force: bool) -> bool:
    busy = tables_holding_data(conn)
    if busy and not force:
        raise BackupRefused(
            f"the database holds data (tables {', '.join(busy[:8])}{'...' if len(busy) > 8 else ''}): restore into an empty database, or pass --force to replace it", code="DATABASE_NOT_EMPTY"
        )
    return bool(busy)


def _restore_sqlite(url: str, staging: Path, db: dict[str, Any], force: bool, stamp: str) -> tuple[list[str], str]:
    """Into a new file beside the database, renamed over it once complete."""
    target = Path(make_url(url).database or "")
    busy = False
    if target.exists():
        engine = sa.create_engine(f"sqlite:///{target}")
        try:
            with engine.connect() as conn:
                busy = _refuse_if_busy(conn, force)
        finally:
            engine.dispose()
    target.parent.mkdir(parents=True, exist_ok=True)
    building = target.with_name(f".{target.name}.restoring-{os.getpid()}")
    building.unlink(missing_ok=True)
    building_url = f"sqlite:///{building}"
    try:
        _migrate(building_url, db["revision"], None)
        engine = make_engine(building_url)
        try:
            with engine.begin() as conn:
                _load(conn, staging / "archive", db)
            _migrate(building_url, "head", None)
            with engine.begin() as conn:
                _apply_sequences(conn, db)
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise BackupRefused(f"restored rows whose foreign keys point nowhere: {broken[:5]}", code="ARCHIVE_INCONSISTENT")
            with engine.connect() as conn:  # one file, no write-ahead log beside it, before the rename
                conn.exec_driver_sql("PRAGMA journal_mode=DELETE")
        finally:
            engine.dispose()
        moved = []
        if target.exists() and busy:
            aside = target.with_name(f"{target.name}.before-restore-{stamp}")
            os.replace(target, aside)
            moved.append(str(aside))
        for suffix in ("-wal", "-shm"):  # the old database's log must not be replayed into the new one
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        os.replace(building, target)
    finally:
        for path in (building, Path(f"{building}-wal"), Path(f"{building}-shm"), Path(f"{building}-journal")):
            path.unlink(missing_ok=True)
    return moved, "head"


def _restore_transaction(url: str, files: Path, db: dict[str, Any], force: bool) -> list[str]:
    """PostgreSQL: drop what is there, build the schema at the archive's revision, load, migrate
    forward, set the sequences: one transaction, committed at the end or not at all."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            with conn.begin():
                _refuse_if_busy(conn, force)
                existing = sa.MetaData()
                existing.reflect(conn)
                existing.drop_all(conn)
                _migrate(url, db["revision"], conn)
                _load(conn, files, db)
                _migrate(url, "head", conn)
                _apply_sequences(conn, db)
    finally:
        engine.dispose()
    return []


def _migrate(url: str, revision: str, conn: Connection | None) -> None:
    from alembic import command

    from vcenter.db.migrate import alembic_config

    config = alembic_config(url)
    if conn is not None:
        config.attributes["connection"] = conn
    command.upgrade(config, revision)


def _lines(path: Path) -> Iterator[list[Any]]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def _batches(items: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _load(conn: Connection, files: Path, db: dict[str, Any]) -> None:
    """Empty every table (a fresh schema holds the seeded rows), then load the archive's rows in
    its order; a column referring to its own table is set after the rows it may name."""
    metadata = sa.MetaData()
    metadata.reflect(conn)
    for table in reversed(metadata.sorted_tables):
        if table.name != ALEMBIC_TABLE:
            conn.execute(table.delete())
    naive = conn.dialect.name == "sqlite"
    for entry in db["tables"]:
        table = metadata.tables.get(entry["name"])
        if table is None or set(entry["columns"]) != set(table.columns.keys()):
            raise BackupRefused(f"table {entry['name']} of the archive does not match the schema at revision {db['revision']}", code="ARCHIVE_INCONSISTENT")
        for column in table.columns:  # SQL NULL stays NULL; JSON null is sa.JSON.NULL
            if isinstance(column.type, sa.JSON):
                column.type.none_as_null = True
        names, kinds = entry["columns"], entry["kinds"]
        id_column = _id_column(table)
        later = [fk.parent.name for fk in table.foreign_keys if fk.column.table is table]
        if later and id_column is None:
            raise BackupRefused(f"table {table.name} refers to itself without a single id column", code="ARCHIVE_INCONSISTENT")
        updates: dict[str, list[dict[str, Any]]] = {name: [] for name in later}

        def rows(entry: dict[str, Any] = entry) -> Iterator[dict[str, Any]]:
            for values in _lines(files / entry["file"]):
                row = {name: decode_value(value, kind, naive) for name, value, kind in zip(names, values, kinds)}
                for name in later:
                    if row[name] is not None:
                        assert id_column is not None
                        updates[name].append({"_id": row[id_column.name], "_value": row[name]})
                        row[name] = None
                yield row

        for batch in _batches(rows(), BATCH):
            conn.execute(table.insert(), batch)
        for name, pending in updates.items():
            if pending:
                assert id_column is not None
                statement = table.update().where(id_column == sa.bindparam("_id")).values({name: sa.bindparam("_value")})
                for batch in _batches(pending, BATCH):
                    conn.execute(statement, batch)


def _apply_sequences(conn: Connection, db: dict[str, Any]) -> None:
    """Each id counter at the highest id the source ever gave, or the highest id present."""
    given = {str(k): int(v) for k, v in db.get("sequences", {}).items()}
    for table in _reflect(conn):
        column = _id_column(table)
        if column is None:
            continue
        top = max(int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(column), 0))).scalar() or 0), given.get(table.name, 0))
        if conn.dialect.name == "sqlite":
            if conn.exec_driver_sql("SELECT 1 FROM sqlite_sequence WHERE name = ?", (table.name,)).first():
                conn.exec_driver_sql("UPDATE sqlite_sequence SET seq = ? WHERE name = ?", (top, table.name))
            elif table.name in given or _autoincrement(conn, table.name):
                conn.exec_driver_sql("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table.name, top))
            continue
        sequence = conn.execute(sa.text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table.name, "c": column.name}).scalar()
        if sequence:
            conn.execute(sa.text("SELECT setval(:s, :v, :called)"), {"s": sequence, "v": max(top, 1), "called": top > 0})


def _autoincrement(conn: Connection, table: str) -> bool:
    sql = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).scalar() or ""
    return "AUTOINCREMENT" in str(sql).upper()


def _swap_keys(settings: Settings, files: Path, manifest: dict[str, Any], stamp: str) -> list[str]:
    """The archive's key directory in place of the live one (kept beside it when it held
    anything); the signing key at its configured path when it was kept outside."""
    moved = []
    key_dir = Path(settings.key_dir).resolve()
    staged = files / KEYS_DIR
    if not staged.exists():
        staged.mkdir(mode=0o700)
    for path in staged.rglob("*"):
        os.chmod(path, 0o700 if path.is_dir() else 0o600)
    os.chmod(staged, 0o700)
    if key_dir.exists() and any(key_dir.iterdir()):
        aside = key_dir.with_name(f"{key_dir.name}.before-restore-{stamp}")
        os.replace(key_dir, aside)
        moved.append(str(aside))
    elif key_dir.exists():
        key_dir.rmdir()
    shutil.move(str(staged), str(key_dir))
    outside = files / SIGNING_KEY_DIR
    if outside.exists() and manifest.get("signing_key_file"):
        target = Path(settings.command_signing_key or manifest["signing_key_file"])
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if target.exists():
            aside_key = target.with_name(f"{target.name}.before-restore-{stamp}")
            os.replace(target, aside_key)
            moved.append(str(aside_key))
        source = next(outside.iterdir())
        _write_private(target, source.read_bytes())
    return moved
