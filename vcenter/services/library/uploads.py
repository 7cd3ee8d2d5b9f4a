"""Uploads and exports: files the server stores for agents to pull, or that agents pushed.

An upload is streamed to ``settings.upload_dir`` under a temporary name while its SHA-256 and
size are computed; over ``settings.upload_max_bytes`` it is refused (413 UPLOAD_TOO_LARGE) and
nothing stays; a checksum given by the client that does not match is refused (422
UPLOAD_CHECKSUM_MISMATCH). An agent pulls an upload only for a task of its own host that names
it, and pushes an export only into the Upload row its task created.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vcenter.core.errors import Conflict, Forbidden, Invalid, NotFound, VcError
from vcenter.core.settings import Settings
from vcenter.db.models import Task, Upload
from vcenter.domain.datastore_paths import safe_file_name
from vcenter.domain.states import TaskState
from vcenter.services.tasks.events import record_event


class TooLarge(VcError):
    status = 413
    code = "UPLOAD_TOO_LARGE"


_SHA_RE = re.compile(r"^[0-9a-fA-F]{64}$")


def upload_read(row: Upload) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "filename": row.filename,
        "size_bytes": row.size_bytes,
        "sha256": row.sha256,
        "state": row.state,
        "username": row.username,
        "task_id": row.task_id,
        "created_at": row.created_at,
    }


async def receive(chunks: AsyncIterator[bytes], settings: Settings, *, declared_length: int | None = None, expected_sha256: str | None = None) -> tuple[str, int, str]:
    """Stream ``chunks`` into a new file of the upload folder; (path, size, sha256)."""
    if expected_sha256 is not None and not _SHA_RE.match(expected_sha256):
        raise Invalid("sha256: 64 hexadecimal digits", code="INVALID", details={"field": "sha256"})
    limit = settings.upload_max_bytes
    if declared_length is not None and declared_length > limit:
        raise TooLarge(f"the upload has {declared_length} bytes; the limit is {limit}")
    os.makedirs(settings.upload_dir, exist_ok=True)
    path = os.path.join(settings.upload_dir, uuid.uuid4().hex)
    tmp = path + ".part"
    h = hashlib.sha256()
    size = 0
    try:
        with open(tmp, "wb") as f:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"the upload exceeds the limit of {limit} bytes")
                h.update(chunk)
                f.write(chunk)
        digest = h.hexdigest()
        if expected_sha256 is not None and digest != expected_sha256.lower():
            raise Invalid(f"the upload's SHA-256 is {digest}, not the {expected_sha256} given", code="UPLOAD_CHECKSUM_MISMATCH")
        os.rename(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path, size, digest


def record(session: Session, user: str, filename: str, path: str, size: int, sha256: str) -> Upload:
    row = Upload(kind="upload", filename=safe_file_name(filename), path=path, size_bytes=size, sha256=sha256, state="ready", username=user)
    session.add(row)
    session.flush()
    record_event(session, "upload.stored", f"upload {row.filename} stored ({size} bytes, SHA-256 {sha256[:12]}…)", username=user, object_type="upload", object_id=row.id, object_name=row.filename)
    return row


def get(session: Session, upload_id: int) -> Upload:
    row = session.get(Upload, upload_id)
    if row is None:
        raise NotFound(f"upload {upload_id} not found", code="UPLOAD_NOT_FOUND")
    return row


def ready(session: Session, upload_id: int, field: str = "upload_id") -> Upload:
    row = session.get(Upload, upload_id)
    if row is None:
        raise Invalid(f"{field}: upload {upload_id} does not exist", code="INVALID_REFERENCE", details={"field": field})
    if row.state != "ready" or not os.path.exists(row.path):
        raise Conflict(f"upload {upload_id} is {row.state}", code="UPLOAD_NOT_READY")
    return row


def list_uploads(session: Session) -> list[Upload]:
    return list(session.scalars(select(Upload).order_by(Upload.id)))


def delete(session: Session, user: str, upload_id: int) -> None:
    row = get(session, upload_id)
    if row.state == "receiving":
        raise Conflict(f"upload {upload_id} is still being received", code="UPLOAD_NOT_READY")
    try:
        os.unlink(row.path)
    except FileNotFoundError:
        pass
    session.delete(row)
    record_event(session, "upload.deleted", f"upload {row.filename} deleted", username=user, object_type="upload", object_id=upload_id, object_name=row.filename)


def _active_task_of(session: Session, host_id: int, upload_id: int) -> Task | None:
    tasks = session.scalars(select(Task).where(Task.host_id == host_id, Task.state.in_((TaskState.QUEUED.value, TaskState.RUNNING.value))))
    return next((t for t in tasks if (t.params or {}).get("upload_id") == upload_id), None)


def path_for_agent(session: Session, host_id: int, upload_id: int) -> str:
    """The file an agent may pull: only for an active task of its own host naming it."""
    row = get(session, upload_id)
    if _active_task_of(session, host_id, upload_id) is None:
        raise Forbidden(f"no task of host {host_id} needs upload {upload_id}", code="UPLOAD_NOT_FOR_HOST")
    if row.state != "ready" or not os.path.exists(row.path):
        raise Conflict(f"upload {upload_id} is {row.state}", code="UPLOAD_NOT_READY")
    return row.path


def check_export_target(session: Session, host_id: int, upload_id: int) -> Upload:
    row = get(session, upload_id)
    # "ready" too: a re-sent export command (its agent died after the push) pushes again.
    if row.kind != "export" or row.state not in ("receiving", "ready") or _active_task_of(session, host_id, upload_id) is None:
        raise Forbidden(f"upload {upload_id} does not wait for an export from host {host_id}", code="UPLOAD_NOT_FOR_HOST")
    return row


def store_export(session: Session, upload_id: int, path: str, size: int, sha256: str) -> Upload:
    row = get(session, upload_id)
    if row.path and row.path != path and os.path.exists(row.path):
        os.unlink(row.path)
    row.path, row.size_bytes, row.sha256, row.state = path, size, sha256, "ready"
    return row
