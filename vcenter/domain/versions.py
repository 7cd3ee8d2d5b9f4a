"""Which of two releases is older: by their numeric release segments ("0.1.0" < "0.2" <
"0.10.1"), a missing segment counting as 0; anything after them (pre-release, local
version) is not compared. A version that does not start with a number cannot be compared
(None), and is never called older."""

from __future__ import annotations

import re

_RELEASE = re.compile(r"^v?(\d+(?:\.\d+)*)")


def release_numbers(text: str | None) -> tuple[int, ...] | None:
    match = _RELEASE.match((text or "").strip())
    if match is None:
        return None
    numbers = [int(part) for part in match.group(1).split(".")]
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers.pop()  # 0.1.0 is 0.1
    return tuple(numbers)


def is_older(version: str | None, than: str | None) -> bool | None:
    """True when ``version`` is an older release than ``than``; None when either is unknown."""
    a, b = release_numbers(version), release_numbers(than)
    if a is None or b is None:
        return None
    return a < b
