"""Release comparison: which agent is older than the server."""

from __future__ import annotations

import pytest

from vcenter.domain.versions import is_older, release_numbers


@pytest.mark.parametrize(
    ("text", "numbers"), [("0.1.0", (0, 1)), ("0.10.1", (0, 10, 1)), ("v2", (2,)), ("1.2.0rc1", (1, 2)), ("0", (0,)), ("0.1.0+local.3", (0, 1)), ("", None), (None, None), ("dev", None)]
)
def test_release_numbers(text, numbers):
    assert release_numbers(text) == numbers


@pytest.mark.parametrize(
    ("version", "than", "older"),
    [
        ("0.1.0", "0.2.0", True),
        ("0.2", "0.2.0", False),
        ("0.9.9", "0.10.0", True),
        ("0.10.0", "0.9.9", False),
        ("1.0", "1.0.1", True),
        ("0+unknown", "0.1.0", True),
        ("garbage", "0.1.0", None),
        ("0.1.0", None, None),
    ],
)
def test_is_older(version, than, older):
    assert is_older(version, than) is older
