"""Paths a user gives inside a datastore: what is accepted, and in which normal form.

Decides whether a path named by a user (an image to import, a folder to browse, an export's
file name) stays inside its datastore. Vocabulary: a *datastore path* is relative to the
datastore's root, uses ``/`` as separator and names no parent (``..``), no root (``/x``) and no
home (``~``); the empty path is the root itself. Symlinks cannot be judged without looking at
the disk: the agent resolves the accepted path on its host and refuses it when it leaves the
datastore or crosses a symlink (``vcenter.hypervisor.images.resolve_in_datastore``).

Pure: no I/O.
"""

from __future__ import annotations

MAX_PATH_CHARS = 1024
MAX_COMPONENT_CHARS = 255


class PathRefused(ValueError):
    """The path leaves its datastore or is malformed; ``code`` is stable."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def validate_datastore_path(path: str, *, allow_root: bool = False) -> str:
    """The normal form of ``path`` (components joined by ``/``), or PathRefused.

    Refused: absolute paths, ``..`` anywhere, ``~`` at the start, NUL and control characters,
    backslashes (a Windows-style separator would name a different file than it seems),
    components that are empty after normalisation only when they come from ``//`` (accepted and
    collapsed), names over 255 characters, paths over 1024 characters, and the empty path
    unless ``allow_root``."""
    if not isinstance(path, str):
        raise PathRefused("PATH_INVALID", "a datastore path is a string")
    if len(path) > MAX_PATH_CHARS:
        raise PathRefused("PATH_TOO_LONG", f"a datastore path has at most {MAX_PATH_CHARS} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise PathRefused("PATH_INVALID", "control characters are not allowed in a datastore path")
    if "\\" in path:
        raise PathRefused("PATH_INVALID", "use '/' as separator; backslashes are not allowed")
    if path.startswith("/"):
        raise PathRefused("PATH_ABSOLUTE", f"{path!r} is absolute: give a path inside the datastore")
    if path.startswith("~"):
        raise PathRefused("PATH_ABSOLUTE", f"{path!r} names a home directory: give a path inside the datastore")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    for part in parts:
        if part == "..":
            raise PathRefused("PATH_ESCAPES", f"{path!r} climbs out of its folder ('..' is not allowed)")
        if len(part) > MAX_COMPONENT_CHARS:
            raise PathRefused("PATH_TOO_LONG", f"a name in a datastore path has at most {MAX_COMPONENT_CHARS} characters")
    if not parts and not allow_root:
        raise PathRefused("PATH_EMPTY", "give a file inside the datastore")
    return "/".join(parts)


def safe_file_name(name: str) -> str:
    """A single file name (no folder) made of the name's safe characters, for files we create
    from user-given names (a VM or template name): letters, digits, ``-``, ``_``, ``.``; never
    starting with ``.`` or ``-``."""
    cleaned = "".join(c if (c.isascii() and (c.isalnum() or c in "-_.")) else "-" for c in name)
    cleaned = cleaned.lstrip(".-")[:80]
    return cleaned or "unnamed"
