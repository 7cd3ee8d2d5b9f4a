"""Backup chains, retention, schedules and snapshot trees: what to make, what to keep.

Vocabulary:
- point: one restore point of a backup job (``PointView``): full, or incremental on its parent.
- chain: a point and its ancestors up to a full one; restoring a point needs its whole chain.
- due: a scheduled job whose interval has passed since its last run.

Decisions:
- The next backup is incremental when the job allows it, the newest successful point exists
  and fewer than ``full_every - 1`` incrementals follow the newest full one; otherwise full.
  (The agent may still make a full one when the checkpoint is gone; the point records what was
  made, and the chain follows that.)
- Retention keeps the newest ``keep`` successful points and every ancestor they need; every
  other finished point (and every failed one) is deleted, children before parents.
Pure: no I/O, no clock (``now`` is given).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class PointView:
    id: int
    kind: str  # full | incremental
    parent_id: int | None
    state: str  # running | ok | failed | deleting
    checkpoint: str | None = None


@dataclass(frozen=True)
class NextBackup:
    kind: str
    parent_id: int | None
    since_checkpoint: str | None
    reason: str


def next_backup(points: list[PointView], incremental: bool, full_every: int) -> NextBackup:
    """``points`` in creation order."""
    ok = [p for p in points if p.state == "ok"]
    if not incremental:
        return NextBackup("full", None, None, "the job makes full backups only")
    if not ok:
        return NextBackup("full", None, None, "no earlier restore point")
    last = ok[-1]
    since_full = 0
    for p in reversed(ok):
        if p.kind == "full":
            break
        since_full += 1
    if since_full >= max(full_every, 1) - 1:
        return NextBackup("full", None, None, f"{since_full} incrementals since the last full backup (a full one every {full_every})")
    if not last.checkpoint:
        return NextBackup("full", None, None, f"point {last.id} has no checkpoint to continue from")
    return NextBackup("incremental", last.id, last.checkpoint, f"changes since point {last.id}")


def chain(points: list[PointView], point_id: int) -> list[PointView]:
    """The point and its ancestors, oldest (the full one) first."""
    by_id = {p.id: p for p in points}
    out: list[PointView] = []
    current = by_id.get(point_id)
    while current is not None:
        out.append(current)
        if current.kind == "full" or current.parent_id is None:
            break
        current = by_id.get(current.parent_id)
    return list(reversed(out))


def chain_complete(points: list[PointView], point_id: int) -> bool:
    c = chain(points, point_id)
    return bool(c) and c[0].kind == "full" and all(p.state == "ok" for p in c)


def to_delete(points: list[PointView], keep: int) -> list[int]:
    """Ids of points retention removes, children first (never one a kept point needs)."""
    ok = [p for p in points if p.state == "ok"]
    kept: set[int] = set()
    for p in ok[-max(keep, 1) :]:
        kept.update(q.id for q in chain(points, p.id))
    doomed = [p for p in points if p.id not in kept and p.state in ("ok", "failed")]
    order = {p.id: i for i, p in enumerate(points)}
    return [p.id for p in sorted(doomed, key=lambda p: -order[p.id])]


class PathRefused(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def backup_directory(path: str) -> str:
    """The normal form of a backup folder inside its datastore, or PathRefused (absolute,
    ``..``, ``~``, backslashes, control characters, empty)."""
    if any(ord(c) < 32 or ord(c) == 127 for c in path) or "\\" in path:
        raise PathRefused("PATH_INVALID", "control characters and backslashes are not allowed in a datastore path")
    if path.startswith(("/", "~")):
        raise PathRefused("PATH_ABSOLUTE", f"{path!r} is absolute: give a folder inside the datastore")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PathRefused("PATH_ESCAPES", f"{path!r} climbs out of its folder ('..' is not allowed)")
    if not parts:
        raise PathRefused("PATH_EMPTY", "give a folder inside the datastore")
    return "/".join(parts)


def is_due(interval_s: float | None, enabled: bool, last_run_at: datetime | None, now: datetime) -> bool:
    if not enabled or not interval_s:
        return False
    return last_run_at is None or (now - last_run_at).total_seconds() >= interval_s


def snapshot_tree(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Nest snapshot rows ({"id", "parent_id", ...}) into roots with ``children``, in order."""
    nodes = {r["id"]: {**r, "children": []} for r in rows}
    roots: list[dict[str, Any]] = []
    for r in rows:
        node = nodes[r["id"]]
        parent = nodes.get(r["parent_id"]) if r.get("parent_id") is not None else None
        (parent["children"] if parent is not None else roots).append(node)
    return roots
