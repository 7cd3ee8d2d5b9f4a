"""Backup chains, retention, schedules and snapshot trees (vcenter.domain.backups)."""

from datetime import datetime, timedelta, timezone

from vcenter.domain.backups import PointView, chain, chain_complete, is_due, next_backup, snapshot_tree, to_delete


def P(i, kind="incremental", parent=None, state="ok"):
    return PointView(i, kind, parent, state, f"c{i}")


def test_first_backup_is_full_then_incrementals_until_full_every():
    assert next_backup([], True, 3).kind == "full"
    points = [P(1, "full")]
    n = next_backup(points, True, 3)
    assert (n.kind, n.parent_id, n.since_checkpoint) == ("incremental", 1, "c1")
    points.append(P(2, parent=1))
    assert next_backup(points, True, 3).parent_id == 2
    points.append(P(3, parent=2))
    assert next_backup(points, True, 3).kind == "full"
    assert next_backup(points, False, 3).kind == "full"


def test_failed_points_are_skipped_when_choosing_the_parent():
    points = [P(1, "full"), P(2, parent=1, state="failed")]
    assert next_backup(points, True, 7).parent_id == 1


def test_retention_keeps_the_ancestors_of_kept_points():
    points = [P(1, "full"), P(2, parent=1), P(3, parent=2), P(4, "full"), P(5, parent=4)]
    assert to_delete(points, 2) == [3, 2, 1]
    # Keeping 4 points: point 2 is kept, so its parent 1 is needed too.
    assert to_delete(points, 4) == []
    assert to_delete(points + [P(6, "full", state="failed")], 2) == [6, 3, 2, 1]


def test_chain_and_completeness():
    points = [P(1, "full"), P(2, parent=1), P(3, parent=2)]
    assert [p.id for p in chain(points, 3)] == [1, 2, 3]
    assert chain_complete(points, 3)
    assert not chain_complete([P(2, parent=1), P(3, parent=2)], 3)
    assert not chain_complete([P(1, "full", state="failed"), P(2, parent=1)], 2)


def test_due():
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert is_due(60, True, None, now)
    assert not is_due(60, True, now - timedelta(seconds=30), now)
    assert is_due(60, True, now - timedelta(seconds=60), now)
    assert not is_due(None, True, None, now) and not is_due(60, False, None, now)


def test_snapshot_tree_nests_children():
    rows = [{"id": 1, "parent_id": None}, {"id": 2, "parent_id": 1}, {"id": 3, "parent_id": 1}, {"id": 4, "parent_id": None}]
    tree = snapshot_tree(rows)
    assert [n["id"] for n in tree] == [1, 4]
    assert [c["id"] for c in tree[0]["children"]] == [2, 3]


def test_backup_directory_stays_in_its_datastore():
    import pytest

    from vcenter.domain.backups import PathRefused, backup_directory

    assert backup_directory("backups//db1/./x") == "backups/db1/x"
    for bad, code in (
        ("../etc", "PATH_ESCAPES"),
        ("a/../../b", "PATH_ESCAPES"),
        ("/etc", "PATH_ABSOLUTE"),
        ("~root", "PATH_ABSOLUTE"),
        ("a\\b", "PATH_INVALID"),
        ("a\nb", "PATH_INVALID"),
        ("", "PATH_EMPTY"),
        ("./", "PATH_EMPTY"),
    ):
        with pytest.raises(PathRefused) as e:
            backup_directory(bad)
        assert e.value.code == code, bad
