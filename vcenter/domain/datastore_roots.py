"""Where a datastore may live on a host: only in a folder below a configured *datastore root*.

Decides whether an absolute host path (a datastore's ``url``, a mount path the agent is told
to provide, a disk file a command names) is a place virtcenter may read and write. Without
this, a datastore could be any folder of the hypervisor host (``/etc``, ``/``, ``/proc/self``):
browse would list it and the root agent would write into it.

Vocabulary: a *root* is a folder the operator configured (server: ``datastore_roots``; agent:
``agent_datastore_roots``; defaults ``/var/lib/virtcenter/datastores``, ``/srv``, ``/mnt``).
A path is *allowed* when, in normal form, it lies strictly below a root (a root itself is not a
datastore: ``/srv`` is refused, ``/srv/ds1`` is allowed; ``/srv2/x`` is not below ``/srv``:
the comparison is by path components, never by string prefix), is not and is not below a
system folder (``/proc``, ``/sys``, ``/dev``, ``/etc``, ``/root``, ...) whatever the roots
say, and neither is, holds nor lies in a *protected* folder (the agent's state directory,
with its credential and key). ``..`` is refused, never normalised away (``/srv/../etc`` is a
mistake or an attack, not a spelling of ``/etc``); ``//``, ``.`` and a trailing ``/`` are
collapsed.

Symlinks cannot be judged without looking at the disk: the agent resolves a path (and its
roots) on its host and applies this same decision to the resolved path as well
(``workers.agent.datastore_guard``). The server judges the path as given (the host's file
system is not the server's).

Every refusal carries the stable code DATASTORE_PATH_NOT_ALLOWED and a ``reason``.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

CODE = "DATASTORE_PATH_NOT_ALLOWED"
MAX_PATH_CHARS = 1024

# Never a datastore nor inside one, whatever the configured roots: the kernel's views, device
# nodes, the host's configuration, root's home, the boot files and the installed system. (Not
# /run: the lab keeps its loop-mounted datastores in /run/virtcenter-lab, a configured root.)
SYSTEM_FOLDERS = ("/proc", "/sys", "/dev", "/etc", "/root", "/boot", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64")


class DatastorePathRefused(ValueError):
    """The path is not a place for a datastore (or a file of one); ``code`` is stable,
    ``reason`` says which rule refused it."""

    code = CODE

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def _parts(path: str) -> tuple[str, ...]:
    return tuple(p for p in path.split("/") if p not in ("", "."))


def normal_form(path: object) -> str:
    """``path`` as an absolute path without ``//``, ``.`` or a trailing ``/``; refused when it
    is not a string, not absolute, names a parent (``..``) or holds control characters."""
    if not isinstance(path, str) or not path:
        raise DatastorePathRefused("invalid", "a datastore path is a non-empty string")
    if len(path) > MAX_PATH_CHARS:
        raise DatastorePathRefused("invalid", f"a datastore path has at most {MAX_PATH_CHARS} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in path) or "\\" in path:
        raise DatastorePathRefused("invalid", "control characters and backslashes are not allowed in a datastore path")
    if not path.startswith("/"):
        raise DatastorePathRefused("not_absolute", f"{path!r} is not an absolute path")
    parts = _parts(path)
    if ".." in parts:
        raise DatastorePathRefused("parent_reference", f"{path!r} names a parent folder ('..' is not allowed)")
    return "/" + "/".join(parts)


def is_below(path: str, folder: str) -> bool:
    """``path`` lies strictly below ``folder`` (both in normal form), component by component."""
    p, f = _parts(path), _parts(folder)
    return len(p) > len(f) and p[: len(f)] == f


def overlaps(a: str, b: str) -> bool:
    """``a`` and ``b`` (normal forms) are the same folder or one holds the other."""
    return a == b or is_below(a, b) or is_below(b, a)


def _system_folder(path: str) -> str | None:
    return next((s for s in SYSTEM_FOLDERS if path == s or is_below(path, s)), None)


def parse_roots(value: str | Iterable[str]) -> tuple[str, ...]:
    """Roots from a setting (comma-separated, or a list) in normal form, each checked by
    ``check_root``; empty entries are ignored."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(dict.fromkeys(check_root(r.strip()) for r in items if r and r.strip()))


def check_root(root: str) -> str:
    """A configured root in normal form; refused when it is ``/`` or a system folder (or
    below one): such a root would allow the very folders this module protects."""
    normal = normal_form(root)
    if normal == "/":
        raise DatastorePathRefused("filesystem_root", "'/' cannot be a datastore root")
    system = _system_folder(normal)
    if system is not None:
        raise DatastorePathRefused("system_folder", f"{normal} cannot be a datastore root: it is in the system folder {system}")
    return normal


def check_datastore_path(path: object, roots: Sequence[str], *, protected: Iterable[str] = ()) -> str:
    """The normal form of ``path`` when it is a place below one of ``roots`` (normal forms,
    see ``parse_roots``), or DatastorePathRefused. ``protected``: folders that a datastore may
    neither be, hold nor lie in (absolute; others are ignored)."""
    normal = normal_form(path)
    if normal == "/":
        raise DatastorePathRefused("filesystem_root", "'/' is not a datastore folder")
    system = _system_folder(normal)
    if system is not None:
        raise DatastorePathRefused("system_folder", f"{normal} is in the system folder {system}: never a datastore")
    for folder in protected:
        try:
            guarded = normal_form(folder)
        except DatastorePathRefused:
            continue
        if overlaps(normal, guarded):
            raise DatastorePathRefused("protected_folder", f"{normal} overlaps {guarded}, which holds virtcenter's own state")
    if normal in roots:
        raise DatastorePathRefused("is_a_root", f"{normal} is a datastore root itself: a datastore is a folder below it")
    if not any(is_below(normal, root) for root in roots):
        allowed = ", ".join(roots) or "none configured"
        raise DatastorePathRefused("outside_roots", f"{normal} is not below a datastore root ({allowed})")
    return normal
