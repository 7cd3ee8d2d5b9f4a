"""The agent's own check of every host path the server names: a datastore to provide, a
datastore to write HA heartbeats into, a file a command reads, writes or removes.

Second line of defence: the server already refuses a datastore outside its roots at create
time, but the agent runs as root and trusts nothing it did not check itself. A path is allowed
only below one of this host's ``agent_datastore_roots`` (vcenter.domain.datastore_roots: never
``/``, ``/etc``, ``/proc``..., never overlapping the agent's state directory), judged twice:
as given (no ``..``) and once resolved on this host (``os.path.realpath``: a symlink that
leads out of the roots, or into a system folder, is refused; roots are resolved too, so a root
that is itself a symlink keeps working). A refusal is DriverError DATASTORE_PATH_NOT_ALLOWED
before anything is touched.

Which arguments of a command are paths is decided by their key (``command_paths``), so that a
new command that names a file with one of these keys is checked without being listed here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

from vcenter.core.settings import Settings
from vcenter.domain.datastore_roots import CODE, DatastorePathRefused, check_datastore_path, check_root, parse_roots
from vcenter.hypervisor.base import DriverError

log = logging.getLogger(__name__)

# Keys whose string values (or list items) are absolute host paths in command arguments.
PATH_KEYS = frozenset({"datastore_path", "source_datastore_path", "from", "to", "dest", "source", "base_path", "workdir", "path", "paths", "remove", "delete_after", "disks"})
# ``path`` may also be relative: a folder or file inside a datastore that the handler resolves
# within it (browse, import from a datastore; vcenter.hypervisor.images.resolve_in_datastore).
RELATIVE_OK = frozenset({"path"})
# A dict of disk target -> host path (MigrationOptions.dest_disk_paths).
PATH_MAPS = frozenset({"dest_disk_paths"})
# Names inside a folder the handler joins to it (a disk file, a template folder, an OVA
# member): never absolute (os.path.join would drop the folder), never ``..``.
INSIDE_KEYS = frozenset({"file", "dir", "member"})


def _roots(settings: Settings) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """This host's roots as configured, and as resolved on this host (a resolved root that
    lands in a system folder is no root at all)."""
    roots = parse_roots(settings.agent_datastore_roots)
    resolved = []
    for root in roots:
        try:
            resolved.append(check_root(os.path.realpath(root)))
        except DatastorePathRefused as exc:
            log.error("datastore root %s is not usable on this host: %s", root, exc.message)
    return roots, tuple(dict.fromkeys(resolved))


def check_path(settings: Settings, path: object, what: str = "path") -> str:
    """``path`` in normal form when this agent may read and write there; else DriverError
    DATASTORE_PATH_NOT_ALLOWED naming ``what`` (nothing is touched)."""
    roots, resolved_roots = _roots(settings)
    state_dir = settings.agent_state_dir
    try:
        normal = check_datastore_path(path, roots, protected=(state_dir,))
        check_datastore_path(os.path.realpath(normal), resolved_roots, protected=(state_dir, os.path.realpath(state_dir)))
    except DatastorePathRefused as exc:
        raise DriverError(CODE, f"{what}: {exc.message} (this host's datastore roots: {', '.join(roots) or 'none'})") from None
    return normal


_logged: set[str] = set()  # refusals already logged: the HA loop asks every second


def allowed(settings: Settings, path: object, what: str = "path") -> bool:
    """Like ``check_path`` for loops that skip a refused entry: logs each refusal once."""
    try:
        check_path(settings, path, what)
        return True
    except DriverError as exc:
        if exc.message not in _logged and len(_logged) < 1000:
            _logged.add(exc.message)
            log.error("refused: %s", exc.message)
        return False


def command_paths(args: Any) -> Iterator[tuple[str, str, bool]]:
    """Every host path named in a command's arguments: (where, path, may_be_relative). A
    ``file`` next to a ``datastore_path`` (a disk of a VmSpec) is also given as the joined
    path; names inside a folder (``file``, ``dir``, ``member``) may be relative only."""

    def walk(value: Any, where: str, key: str | None, in_map: bool) -> Iterator[tuple[str, str, bool]]:
        if isinstance(value, dict):
            ds, file = value.get("datastore_path"), value.get("file")
            if isinstance(ds, str) and isinstance(file, str):
                yield f"{where}.file" if where else "file", f"{ds.rstrip('/')}/{file}", False
            for k, v in value.items():
                yield from walk(v, f"{where}.{k}" if where else str(k), str(k), in_map or str(k) in PATH_MAPS)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                yield from walk(item, f"{where}[{i}]", key, in_map)
        elif isinstance(value, str) and (in_map or key in PATH_KEYS):
            yield where, value, key in RELATIVE_OK
        elif isinstance(value, str) and key in INSIDE_KEYS:
            yield where, value, True

    yield from walk(args, "", None, False)


def check_command(settings: Settings, name: str, args: Any) -> None:
    """Refuse (DriverError DATASTORE_PATH_NOT_ALLOWED) a command that names any host path
    outside this host's datastore roots, before it runs."""
    for where, path, relative_ok in command_paths(args):
        if relative_ok and not path.startswith("/"):
            if ".." in path.split("/"):
                raise DriverError(CODE, f"{name}: {where}: {path!r} names a parent folder ('..' is not allowed)")
            continue  # inside a datastore or a folder: the handler joins it there
        check_path(settings, path, f"{name}: {where}")
