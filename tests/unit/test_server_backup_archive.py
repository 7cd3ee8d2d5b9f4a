"""The archive checks of `vcenter restore` as pure decisions (vcenter.services.housekeeping.
server_backup): which manifests this release reads, which member names it writes, how the files
found compare with the manifest, and the value encoding that keeps SQL NULL and JSON null apart.
On real databases: tests/api/test_server_backup.py."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from vcenter.services.housekeeping.server_backup import FORMAT, FORMAT_VERSION, BackupRefused, decode_value, encode_value, expected_files, file_problems, manifest_problem, safe_member


def manifest(**changes):
    base = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "database": {"revision": "0019", "tables": [{"file": "database/001-a.jsonl", "sha256": "aa"}]},
        "keys": [{"file": "keys/k.pem", "sha256": "bb"}],
    }
    base.update(changes)
    return base


def test_which_manifests_are_read():
    assert manifest_problem(manifest()) is None
    assert "newer" in manifest_problem(manifest(format_version=FORMAT_VERSION + 1))
    assert manifest_problem(manifest(format="tarball")) and manifest_problem(["not", "a", "dict"]) and manifest_problem(manifest(format_version="1"))
    assert manifest_problem(manifest(database={"tables": []}))  # no revision


def test_files_are_compared_with_the_manifest():
    expected = expected_files(manifest())
    assert expected == {"database/001-a.jsonl": "aa", "keys/k.pem": "bb"}
    assert file_problems(expected, dict(expected)) == []
    assert file_problems(expected, {"database/001-a.jsonl": "aa", "keys/k.pem": "cc"}) == ["keys/k.pem: checksum cc... is not the manifest's bb..."]
    assert file_problems(expected, {"database/001-a.jsonl": "aa", "keys/extra": "dd"}) == ["keys/k.pem: missing", "keys/extra: not in the manifest"]


def test_only_the_archive_folders_are_written():
    assert safe_member("manifest.json") and safe_member("database/001-users.jsonl") and safe_member("keys/tls/api.key") and safe_member("signing-key/k.pem")
    for name in ("/etc/passwd", "keys/../../etc/cron.d/x", "other/file", "keys", "database"):
        assert not safe_member(name), name


def test_values_round_trip_and_nulls_stay_apart():
    moment = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    text = encode_value(moment, "datetime")
    assert text == "2026-03-01T10:30:15.123456+00:00"
    assert decode_value(text, "datetime", naive_utc=False) == moment
    assert decode_value(text, "datetime", naive_utc=True) == datetime(2026, 3, 1, 10, 30, 15, 123456)
    assert encode_value(datetime(2026, 3, 1), "datetime") == "2026-03-01T00:00:00+00:00"  # SQLite keeps UTC without a zone
    assert encode_value(None, "json") is None and encode_value({"a": None}, "json") == [{"a": None}]
    assert decode_value(None, "json", False) is None and decode_value([None], "json", False) is sa.JSON.NULL
    assert decode_value([[1, "x"]], "json", False) == [1, "x"]
    assert encode_value(7, "plain") == 7 and decode_value(True, "plain", True) is True
    with pytest.raises(BackupRefused):
        encode_value(b"bytes", "plain")
