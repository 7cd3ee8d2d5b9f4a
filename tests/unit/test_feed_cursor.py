"""The feeds' gap-aware cursor (vcenter.domain.feed_cursor): an id skipped by a poll because its
transaction had not committed is awaited and delivered when it shows up, given up after the
grace; the resume position carries the awaited ids; a position it did not write is refused."""

from __future__ import annotations

from functools import partial

import pytest

from vcenter.core.errors import Invalid
from vcenter.core.object_ids import parse_object_id
from vcenter.domain.feed_cursor import BadPosition, Cursor, advance
from vcenter.domain.feed_cursor import parse_position as parse_with
from vcenter.domain.feed_cursor import position

parse_position = partial(parse_with, parse_id=parse_object_id)  # as the API reads it: the one id parser

GRACE, MAX_GAPS = 10.0, 5


def poll(table: set[int], cursor: Cursor, now: float, batch: int = 100) -> tuple[list[int], Cursor]:
    """What a feed poll does: the committed ids past the cursor or awaited, lowest first."""
    wanted = sorted(i for i in table if i > cursor.last or i in cursor.gaps)[:batch]
    return wanted, advance(cursor, wanted, now, GRACE, MAX_GAPS)


def test_in_order_ids_advance_without_gaps():
    seen, cursor = poll({1, 2, 3}, Cursor(), 0.0)
    assert seen == [1, 2, 3] and cursor == Cursor(last=3)
    seen, cursor = poll({1, 2, 3}, cursor, 1.0)
    assert seen == [] and cursor == Cursor(last=3)


def test_an_id_that_commits_after_a_higher_one_is_delivered_once():
    table = {9, 11}  # 10 is held by a transaction that has not committed yet
    seen, cursor = poll(table, Cursor(last=8), 0.0)
    assert seen == [9, 11] and cursor.last == 11 and cursor.awaited() == [10]
    table.add(10)  # ... and commits, below the cursor's last
    seen, cursor = poll(table, cursor, 1.0)
    assert seen == [10] and cursor == Cursor(last=11)
    seen, cursor = poll(table, cursor, 2.0)
    assert seen == []


def test_a_naive_id_cursor_would_lose_the_late_row():
    """The failure this module exists for, shown on the same history."""
    table, last, delivered = {9, 11}, 8, []
    delivered += [i for i in sorted(table) if i > last]
    last = max(delivered)
    table.add(10)
    delivered += [i for i in sorted(table) if i > last]
    assert 10 not in delivered
    ours, cursor = poll({9, 11}, Cursor(last=8), 0.0)
    late, cursor = poll({9, 10, 11}, cursor, 1.0)
    assert sorted(ours + late) == [9, 10, 11]


def test_a_gap_is_given_up_after_the_grace():
    _, cursor = poll({1, 3}, Cursor(), 0.0)
    assert cursor.awaited() == [2]
    _, cursor = poll({1, 3}, cursor, GRACE)  # still awaited at the grace's end
    assert cursor.awaited() == [2]
    _, cursor = poll({1, 3}, cursor, GRACE + 0.1)  # a rollback: never comes
    assert cursor == Cursor(last=3)


def test_at_most_max_gaps_are_awaited_the_highest_kept_and_a_huge_hole_stays_cheap():
    _, cursor = poll({1, 20}, Cursor(), 0.0)
    assert cursor.awaited() == [15, 16, 17, 18, 19]
    # ids far below the newest (purged events) are not awaited, however wide the hole
    _, cursor = poll({2_000_000_000}, Cursor(), 0.0)
    assert cursor.last == 2_000_000_000 and len(cursor.gaps) == MAX_GAPS


def test_a_full_batch_leaves_the_rest_for_the_next_poll_not_as_gaps():
    table = set(range(1, 8))
    seen, cursor = poll(table, Cursor(), 0.0, batch=3)
    assert seen == [1, 2, 3] and cursor == Cursor(last=3)
    seen, cursor = poll(table, cursor, 0.0, batch=3)
    assert seen == [4, 5, 6]


def test_the_position_carries_awaited_ids_and_reads_back():
    _, cursor = poll({1, 4}, Cursor(), 0.0)
    assert position(cursor) == "4:2,3"
    resumed = parse_position("4:2,3", 100.0, MAX_GAPS)
    assert resumed.last == 4 and resumed.gaps == {2: 100.0, 3: 100.0}  # a whole grace again from now
    assert position(Cursor(last=7)) == "7" and parse_position("7", 0.0, MAX_GAPS) == Cursor(last=7)
    assert parse_position("0", 0.0, MAX_GAPS) == Cursor()
    # resumed, the late row is still delivered
    seen, _ = poll({1, 2, 4}, resumed, 101.0)
    assert seen == [2]


@pytest.mark.parametrize("text", ["4:4", "4:5", "4:2,2", "9:1,2,3,4,5,6"])
def test_a_position_of_another_shape_is_refused(text):
    with pytest.raises(BadPosition):
        parse_position(text, 0.0, MAX_GAPS)


@pytest.mark.parametrize("text", ["", "-1", "+1", " 1", "01", "1_0", "1.0", "x", "٣", "2147483648", "99999999999", "4:", "4:,2", "4:2;3", "1:0:0"])
def test_an_id_not_written_canonically_is_refused_by_the_id_parser(text):
    with pytest.raises(Invalid) as refused:
        parse_position(text, 0.0, MAX_GAPS)
    assert refused.value.code == "INVALID_ID"
