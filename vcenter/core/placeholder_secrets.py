"""Placeholder secrets: a process refuses to start when the password in its database or Redis
URL is one of the placeholders that examples ship (``change-me`` in ``.env.example``).

A deployment copied from the example would otherwise run with a password everyone knows. The
check names the variable, never the password's owner service; it looks only at the URL's
password field, so URLs without one (SQLite, a local Redis) pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

# Compared case-insensitively, with "-", "_" and spaces removed: change-me, CHANGE_ME, changeme.
PLACEHOLDERS = frozenset({"changeme", "changeit", "replaceme", "setme", "yourpassword"})

# The settings whose URLs carry a secret, by their environment variable.
SECRET_URL_VARIABLES = ("VCENTER_DATABASE_URL", "VCENTER_REDIS_URL")


class PlaceholderSecretError(ValueError):
    """A secret still holds an example's placeholder; the message names the variable."""

    def __init__(self, variable: str) -> None:
        self.variable = variable
        super().__init__(f"{variable} carries a placeholder password (such as change-me): set a real secret (with docker-compose: VCENTER_DB_PASSWORD / VCENTER_REDIS_PASSWORD in .env)")


def is_placeholder(password: str) -> bool:
    """Whether a password is an example's placeholder rather than a secret."""
    folded = password.lower().replace("-", "").replace("_", "").replace(" ", "")
    return folded in PLACEHOLDERS


def url_password(url: str) -> str | None:
    """The password in a URL (percent-decoded), or None when it has none or is no URL."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return None if password is None else unquote(password)


def placeholder_variables(urls: Mapping[str, str]) -> list[str]:
    """The variables (of ``urls``: variable -> URL) whose URL password is a placeholder."""
    return [name for name, url in urls.items() if (pw := url_password(url)) is not None and is_placeholder(pw)]


def refuse_placeholder_secrets(urls: Mapping[str, str]) -> None:
    """Raise PlaceholderSecretError naming the first variable whose password is a placeholder."""
    bad = placeholder_variables(urls)
    if bad:
        raise PlaceholderSecretError(bad[0])
