"""Which stored uploads, exports and stray files of the upload folder a cleanup pass removes.

Vocabulary:
- upload row: an Upload (kind ``upload``: a file a user sent for an import; kind ``export``:
  an OVA an agent pushed) with its state (receiving | ready | failed) and age (seconds since it
  was created);
- in use: an active (queued or running) task names the row: never removed, whatever its age;
- stray file: a file of the upload folder that no row names: a ``.part`` file of a transfer
  that never finished (its process died), or a finished file whose row was never committed.

Rules (each removal carries its reason):
- ``expired``: a ready export older than the export retention, a ready upload older than the
  upload retention (a retention of 0 keeps them forever);
- ``abandoned``: a row still ``receiving`` (an export whose push never completed) older than
  the abandon time while no task uses it;
- ``failed``: a failed row older than the abandon time (kept that long so that users see it);
- stray files go once untouched (modification time) for the abandon time: a transfer in
  progress writes its ``.part`` file all along, so it stays fresh.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class UploadView:
    id: int
    kind: str
    state: str
    age_s: float
    in_use: bool


@dataclass(frozen=True)
class Removal:
    upload_id: int
    reason: str  # expired | abandoned | failed


def rows_to_remove(rows: list[UploadView], *, upload_retention_s: float, export_retention_s: float, abandoned_after_s: float) -> list[Removal]:
    out = []
    for r in rows:
        if r.in_use:
            continue
        if r.state == "ready":
            retention = export_retention_s if r.kind == "export" else upload_retention_s
            if retention > 0 and r.age_s > retention:
                out.append(Removal(r.id, "expired"))
        elif r.state == "receiving":
            if r.age_s > abandoned_after_s:
                out.append(Removal(r.id, "abandoned"))
        elif r.state == "failed" and r.age_s > abandoned_after_s:
            out.append(Removal(r.id, "failed"))
    return out


def stray_files(files: list[tuple[str, float]], known: set[str], abandoned_after_s: float) -> list[str]:
    """Names of the folder's files (``(name, seconds since last modified)``) that no row names
    (``known``: the names rows use) and that nobody touched for the abandon time."""
    return sorted(name for name, idle_s in files if name not in known and idle_s > abandoned_after_s)
