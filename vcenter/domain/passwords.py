"""Whether a password may be set: long enough, and not one that guessing tries first.

Decides on the password alone (plus the user name it is for); the list of common passwords
comes from the caller (vcenter.services.access.passwords loads it). A refusal is a stable reason:

- ``too_short``: fewer characters than the minimum (setting ``password_min_length``, 12 by
  default);
- ``common``: the password, ignoring case, is on the list of common passwords, or is one of
  them followed by digits and punctuation (``Password2024!``), the usual way a listed password
  is stretched to a length rule;
- ``repeated``: a short unit repeated (``passwordpassword``, ``abcabcabcabc``, ``aaaaaaaaaaaa``);
- ``user_name``: the user's own name, ignoring case.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Container

TOO_SHORT = "too_short"
COMMON = "common"
REPEATED = "repeated"
USER_NAME = "user_name"

_STRETCH = "0123456789!@#$%^&*()-_=+.,;:?/~"


def _repeated_unit(text: str) -> bool:
    """True when ``text`` is one shorter string written twice or more."""
    n = len(text)
    return any(n % size == 0 and text[:size] * (n // size) == text for size in range(1, n // 2 + 1))


def password_weakness(password: str, *, min_length: int, common: Container[str], username: str | None = None) -> str | None:
    """The reason ``password`` is refused, or None when it may be set."""
    if len(password) < min_length:
        return TOO_SHORT
    folded = password.casefold()
    if username and folded == username.casefold():
        return USER_NAME
    stem = folded.rstrip(_STRETCH)
    if folded in common or (stem and stem in common):
        return COMMON
    if _repeated_unit(folded):
        return REPEATED
    return None
