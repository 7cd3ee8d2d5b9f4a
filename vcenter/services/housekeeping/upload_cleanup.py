"""The periodic cleanup of the upload folder (beat: ``orchestrator.upload_cleanup`` every
``upload_cleanup_period``): expired exports and uploads, abandoned or failed transfers, and
stray files (partial ``.part`` files, files no row names) go, each removal logged and recorded
as an Event (``upload.expired``, ``upload.abandoned``, ``upload.failed_removed``,
``upload.stray_removed``). What goes is decided by vcenter.domain.upload_cleanup; this module
reads the rows, the tasks and the folder, and removes. Safe to run twice, and alongside
transfers: a row an active task names is never touched, and a file being written stays fresh.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vcenter.core.clock import utcnow
from vcenter.core.settings import Settings
from vcenter.db.models import Task, Upload
from vcenter.domain import upload_cleanup as plan
from vcenter.domain.states import TaskState
from vcenter.services.tasks.events import record_event

log = logging.getLogger(__name__)

EVENTS = {"expired": "upload.expired", "abandoned": "upload.abandoned", "failed": "upload.failed_removed"}


def _in_use(session: Session) -> set[int]:
    active = session.scalars(select(Task).where(Task.state.in_((TaskState.QUEUED.value, TaskState.RUNNING.value))))
    return {int(t.params["upload_id"]) for t in active if isinstance((t.params or {}).get("upload_id"), int)}


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def run(session: Session, settings: Settings) -> dict[str, Any]:
    """One cleanup pass; {"rows": [{"id", "filename", "reason", "file_removed"}], "stray": [names]}."""
    now = utcnow()
    in_use = _in_use(session)
    rows = list(session.scalars(select(Upload).order_by(Upload.id)))
    views = [plan.UploadView(r.id, r.kind, r.state, (now - r.created_at).total_seconds(), r.id in in_use) for r in rows]
    removals = plan.rows_to_remove(views, upload_retention_s=settings.upload_retention, export_retention_s=settings.export_retention, abandoned_after_s=settings.upload_abandoned_after)
    by_id = {r.id: r for r in rows}
    done = []
    for removal in removals:
        row = by_id[removal.upload_id]
        removed = bool(row.path) and _unlink(row.path)
        what = "exported OVA" if row.kind == "export" else "upload"
        message = {
            "expired": f"{what} {row.filename} removed: past its retention",
            "abandoned": f"{what} {row.filename} removed: its transfer never completed",
            "failed": f"failed {what} {row.filename} removed",
        }[removal.reason]
        log.info("upload cleanup: %s (upload %s, file %s)", message, row.id, "removed" if removed else "absent")
        record_event(session, EVENTS[removal.reason], message, object_type="upload", object_id=row.id, object_name=row.filename, reason=removal.reason)
        session.delete(row)
        done.append({"id": row.id, "filename": row.filename, "reason": removal.reason, "file_removed": removed})
    stray = []
    folder = settings.upload_dir
    if os.path.isdir(folder):
        remaining = {os.path.basename(r.path) for r in rows if r.path and r.id not in {d["id"] for d in done}}
        wall = time.time()
        files = []
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False):
                    try:
                        files.append((entry.name, wall - entry.stat(follow_symlinks=False).st_mtime))
                    except FileNotFoundError:
                        continue
        for name in plan.stray_files(files, remaining, settings.upload_abandoned_after):
            if _unlink(os.path.join(folder, name)):
                log.info("upload cleanup: stray file %s removed", name)
                record_event(
                    session,
                    "upload.stray_removed",
                    f"stray file {name} of the upload folder removed" + (" (a transfer that never finished)" if name.endswith(".part") else " (no upload names it)"),
                    object_type="upload",
                    object_name=name,
                )
                stray.append(name)
    return {"rows": done, "stray": stray}
