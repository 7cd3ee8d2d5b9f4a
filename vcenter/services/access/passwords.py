"""The password policy every path that sets a password applies (API, dashboard, CLI).

The decision is vcenter.domain.passwords'. The common passwords are the 30,000 most frequent
of Mark Burnett's 10 million leaked passwords (xato.net), as shipped in the ``passwords``
frequency list of the maintained ``zxcvbn`` package (Dropbox's password strength estimator,
Python port, MIT licence); only that list is used, not zxcvbn's scoring. A refusal is a 422
with the stable code WEAK_PASSWORD and a ``reason`` (too_short, common, repeated, user_name).
"""

from __future__ import annotations

from functools import lru_cache

from vcenter.core.errors import Invalid
from vcenter.core.settings import get_settings
from vcenter.domain.passwords import TOO_SHORT, password_weakness

_MESSAGES = {
    "too_short": "the password is shorter than {min_length} characters",
    "common": "the password is a common one (on the list attackers try first)",
    "repeated": "the password is a short text repeated",
    "user_name": "the password is the user's name",
}


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """Loaded once, on the first password set (the list module is 0.8 MB of source)."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(p.casefold() for p in FREQUENCY_LISTS["passwords"])


def min_length_setting() -> int:
    return get_settings().password_min_length


def check_password(password: str, username: str | None = None, min_length: int | None = None) -> None:
    """Raise WEAK_PASSWORD unless ``password`` may be set (for ``username``)."""
    min_length = min_length_setting() if min_length is None else min_length
    # The length first: a short password needs no look-up (and no list load).
    reason = password_weakness(password, min_length=min_length, common=() if len(password) < min_length else common_passwords(), username=username)
    if reason is None:
        return
    raise Invalid(_MESSAGES[reason].format(min_length=min_length), code="WEAK_PASSWORD", details={"field": "password", "reason": reason, **({"min_length": min_length} if reason == TOO_SHORT else {})})
