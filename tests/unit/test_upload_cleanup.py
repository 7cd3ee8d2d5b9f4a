"""What a cleanup pass of the upload folder removes (vcenter.domain.upload_cleanup)."""

from __future__ import annotations

from vcenter.domain.upload_cleanup import Removal, UploadView, rows_to_remove, stray_files

DAY = 86400.0


def test_rows_past_retention_abandoned_or_failed_go_unless_in_use():
    rows = [
        UploadView(1, "export", "ready", 8 * DAY, False),  # past the export retention
        UploadView(2, "export", "ready", 6 * DAY, False),  # within it
        UploadView(3, "upload", "ready", 3 * DAY, False),  # past the (shorter) upload retention
        UploadView(4, "upload", "ready", 30 * DAY, True),  # an active task imports it
        UploadView(5, "export", "receiving", 2 * 3600, False),  # its push never completed
        UploadView(6, "export", "receiving", 2 * 3600, True),  # still being pushed by a running task
        UploadView(7, "export", "receiving", 60, False),  # too young to call abandoned
        UploadView(8, "upload", "failed", 2 * 3600, False),
        UploadView(9, "upload", "failed", 60, False),
    ]
    assert rows_to_remove(rows, upload_retention_s=2 * DAY, export_retention_s=7 * DAY, abandoned_after_s=3600) == [
        Removal(1, "expired"),
        Removal(3, "expired"),
        Removal(5, "abandoned"),
        Removal(8, "failed"),
    ]


def test_a_retention_of_zero_keeps_ready_files_forever():
    rows = [UploadView(1, "export", "ready", 400 * DAY, False), UploadView(2, "upload", "ready", 400 * DAY, False)]
    assert rows_to_remove(rows, upload_retention_s=0, export_retention_s=0, abandoned_after_s=3600) == []


def test_stray_files_go_once_idle_for_the_abandon_time():
    files = [("a1.part", 7200.0), ("a2.part", 10.0), ("known", 99999.0), ("orphan", 7200.0), ("young-orphan", 5.0)]
    assert stray_files(files, {"known"}, 3600) == ["a1.part", "orphan"]
