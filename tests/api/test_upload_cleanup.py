"""The periodic cleanup of the upload folder on a real database (sqlite and PostgreSQL) and a
real folder: expired exports and uploads, an abandoned export, a failed upload, a partial file
and an orphan go, each with an Event; what a running task uses, what is young, and a transfer
still writing stay. Beat runs it (orchestrator.upload_cleanup)."""

from __future__ import annotations

import os
import time
from datetime import timedelta

from sqlalchemy import select

from vcenter.core.clock import utcnow
from vcenter.db.models import Event, Task, Upload
from vcenter.db.session import session_scope
from vcenter.services.housekeeping import upload_cleanup


def _file(folder: str, name: str, idle_s: float = 0) -> str:
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(b"x" * 1000)
    if idle_s:
        old = time.time() - idle_s
        os.utime(path, (old, old))
    return path


def test_cleanup_removes_expired_abandoned_and_stray_and_keeps_the_rest(settings, tmp_path):
    settings = settings.model_copy(update={"upload_dir": str(tmp_path / "uploads"), "export_retention": 7 * 86400.0, "upload_retention": 2 * 86400.0, "upload_abandoned_after": 3600.0})
    folder = settings.upload_dir
    os.makedirs(folder, exist_ok=True)
    now = utcnow()
    specs = {  # name: (kind, state, age, has a file, used by an active task)
        "old-export": ("export", "ready", timedelta(days=8), True, False),
        "new-export": ("export", "ready", timedelta(days=1), True, False),
        "old-upload": ("upload", "ready", timedelta(days=3), True, False),
        "busy-upload": ("upload", "ready", timedelta(days=30), True, True),
        "stuck-export": ("export", "receiving", timedelta(hours=2), False, False),
        "pushing-export": ("export", "receiving", timedelta(hours=2), False, True),
        "failed-upload": ("upload", "failed", timedelta(hours=2), False, False),
    }
    ids = {}
    with session_scope(settings.database_url) as session:
        for name, (kind, state, age, has_file, busy) in specs.items():
            path = _file(folder, name, idle_s=age.total_seconds()) if has_file else ""
            row = Upload(kind=kind, filename=f"{name}.ova", path=path, state=state, created_at=now - age)
            session.add(row)
            session.flush()
            ids[name] = row.id
            if busy:
                session.add(Task(kind="vm.import", state="running", step="downloading", object_type="vm", object_id=1, username="u", params={"upload_id": row.id}))
    partial_old = _file(folder, "dead.part", idle_s=7200)
    partial_live = _file(folder, "live.part")
    orphan = _file(folder, "orphan", idle_s=7200)

    with session_scope(settings.database_url) as session:
        result = upload_cleanup.run(session, settings)
    assert sorted((r["filename"], r["reason"]) for r in result["rows"]) == [
        ("failed-upload.ova", "failed"),
        ("old-export.ova", "expired"),
        ("old-upload.ova", "expired"),
        ("stuck-export.ova", "abandoned"),
    ]
    assert result["stray"] == ["dead.part", "orphan"]
    assert sorted(os.listdir(folder)) == ["busy-upload", "live.part", "new-export"]
    assert not os.path.exists(partial_old) and not os.path.exists(orphan) and os.path.exists(partial_live)
    with session_scope(settings.database_url) as session:
        left = {r.filename for r in session.scalars(select(Upload))}
        assert left == {"new-export.ova", "busy-upload.ova", "pushing-export.ova"}
        events = {(e.kind, e.object_name) for e in session.scalars(select(Event).where(Event.kind.like("upload.%")))}
        assert events == {
            ("upload.expired", "old-export.ova"),
            ("upload.expired", "old-upload.ova"),
            ("upload.abandoned", "stuck-export.ova"),
            ("upload.failed_removed", "failed-upload.ova"),
            ("upload.stray_removed", "dead.part"),
            ("upload.stray_removed", "orphan"),
        }

    # A second pass finds nothing more to do.
    with session_scope(settings.database_url) as session:
        assert upload_cleanup.run(session, settings) == {"rows": [], "stray": []}


def test_beat_runs_the_cleanup():
    from vcenter.core.settings import Settings
    from workers.orchestrator.tasks import beat_schedule

    entry = beat_schedule(Settings(upload_cleanup_period=42.0))["upload-cleanup"]
    assert entry == {"task": "orchestrator.upload_cleanup", "schedule": 42.0}
