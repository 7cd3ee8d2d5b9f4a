"""The gap-aware cursor of the event and task feeds: which rows a poll asks for, and where a
client resumes.

Ids come from a sequence, but PostgreSQL hands them out when a row is inserted, not when its
transaction commits: a transaction holding id 10 may commit after the one holding 11 is
visible. A cursor that only remembers the highest id it delivered (``id > last``) would skip
10 for good. So the cursor also remembers the ids it has passed without seeing them (gaps),
each with the moment it was first missed; every poll asks again for them, and an id missing
for longer than the grace is given up (its transaction rolled back, or its row was deleted).

The position a client resumes from (the SSE ``id:`` field, sent back as ``Last-Event-ID``)
is ``last`` alone, or ``last:gap,gap,...`` while ids are still awaited, so that a reconnect
does not lose the rows of transactions that were open when the stream broke. Parsing is
bounded: the stream refuses a position with more gaps than it would itself remember; each id
in it is read by the caller's id parser (the API's one, vcenter.core.object_ids).

Pure: no clock (the caller passes ``now``, monotonic seconds), no database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Cursor:
    """``last``: the highest id passed; ``gaps``: id -> when it was first missed."""

    last: int = 0
    gaps: dict[int, float] = field(default_factory=dict)

    def awaited(self) -> list[int]:
        """The skipped ids a poll asks for again, lowest first."""
        return sorted(self.gaps)


def advance(cursor: Cursor, seen: Iterable[int], now: float, grace: float, max_gaps: int) -> Cursor:
    """The cursor after a poll that returned the rows ``seen`` (new ids above ``last`` and
    awaited ones, in any order; seen means read by the poll, whether or not the caller may see
    the row). Ids between ``last`` and the highest seen that were not seen become gaps; gaps
    older than ``grace`` are given up; beyond ``max_gaps`` the lowest go first."""
    ids = set(seen)
    gaps = {gap: since for gap, since in cursor.gaps.items() if gap not in ids and now - since <= grace}
    top = max(ids, default=cursor.last)
    # Only the ids just below the highest seen can be open transactions: a wider hole is
    # deleted rows (purged events) or ids a bulk rollback burnt, so the work stays bounded.
    for missing in range(max(cursor.last + 1, top - max_gaps - len(ids)), top):
        if missing not in ids:
            gaps[missing] = now
    return Cursor(last=max(top, cursor.last), gaps=_trim(gaps, max_gaps))


def _trim(gaps: dict[int, float], max_gaps: int) -> dict[int, float]:
    if len(gaps) <= max_gaps:
        return gaps
    keep = sorted(gaps)[len(gaps) - max_gaps :]  # the highest ids: the most recent transactions
    return {gap: gaps[gap] for gap in keep}


def position(cursor: Cursor) -> str:
    """Where a client resumes: ``last`` or ``last:gap,gap``."""
    if not cursor.gaps:
        return str(cursor.last)
    return f"{cursor.last}:" + ",".join(str(gap) for gap in cursor.awaited())


class BadPosition(ValueError):
    """A resume position that is not one this module writes."""


def parse_position(text: str, now: float, max_gaps: int, parse_id: Callable[[str], int]) -> Cursor:
    """The cursor a client resumes from (``Last-Event-ID`` or ``after_id``); its gaps are
    awaited for a whole grace from ``now``. Each id is read by ``parse_id``, which refuses a
    non-canonical one in its own way; BadPosition for a shape this module does not write: more
    than ``max_gaps`` gaps, a gap not below the position, a gap given twice."""
    last_text, sep, gaps_text = text.partition(":")
    parts = gaps_text.split(",") if sep else []
    if len(parts) > max_gaps:
        raise BadPosition(f"more than {max_gaps} awaited ids")
    last = parse_id(last_text)
    gaps: dict[int, float] = {}
    for part in parts:
        gap = parse_id(part)
        if gap >= last or gap in gaps:
            raise BadPosition("an awaited id must be below the position and given once")
        gaps[gap] = now
    return Cursor(last=last, gaps=gaps)
