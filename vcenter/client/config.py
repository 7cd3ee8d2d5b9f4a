"""The CLI's contexts: which server, which credential, kept in the user's config directory.

``$XDG_CONFIG_HOME/virtcenter/config.json`` (``~/.config/virtcenter`` without it):
``{"current": name, "contexts": {name: {"server", "username", "token", "auth", "ca_file"}}}``,
``auth`` being ``session`` (a login's token, which expires) or ``token`` (an API token). The
file holds credentials: it is written 0600 in a 0700 directory, atomically (a temporary file in
the same directory, then a rename), and a file others can read is refused until fixed.
``VCENTER_CONTEXT`` picks a context for one command without changing the current one.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vcenter.client.errors import ClientError

FILE_MODE = 0o600
DIR_MODE = 0o700


def config_dir(env: Mapping[str, str] | None = None) -> Path:
    values = os.environ if env is None else env
    base = values.get("XDG_CONFIG_HOME") or str(Path(values.get("HOME") or Path.home()) / ".config")
    return Path(base) / "virtcenter"


@dataclass
class Context:
    server: str
    username: str = ""
    token: str = ""
    auth: str = "session"  # session | token
    ca_file: str | None = None


@dataclass
class Config:
    current: str | None = None
    contexts: dict[str, Context] = field(default_factory=dict)

    def context(self, name: str | None = None) -> tuple[str, Context]:
        """The named context, else VCENTER_CONTEXT's, else the current one."""
        chosen = name or os.environ.get("VCENTER_CONTEXT") or self.current
        if not chosen:
            raise ClientError("not logged in: run `vcenter login SERVER`")
        if chosen not in self.contexts:
            raise ClientError(f"no context {chosen!r} (`vcenter context list`)")
        return chosen, self.contexts[chosen]

    def as_json(self) -> dict[str, Any]:
        return {"current": self.current, "contexts": {name: asdict(ctx) for name, ctx in self.contexts.items()}}


def path(directory: Path | None = None) -> Path:
    return (directory or config_dir()) / "config.json"


def load(directory: Path | None = None) -> Config:
    file = path(directory)
    try:
        mode = file.stat().st_mode
    except FileNotFoundError:
        return Config()
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ClientError(f"{file} is readable by others (mode {stat.S_IMODE(mode):o}): it holds credentials; `chmod 600 {file}`")
    doc = json.loads(file.read_text())
    contexts = {name: Context(**{k: v for k, v in ctx.items() if k in Context.__dataclass_fields__}) for name, ctx in (doc.get("contexts") or {}).items()}
    return Config(current=doc.get("current"), contexts=contexts)


def save(config: Config, directory: Path | None = None) -> Path:
    file = path(directory)
    file.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    temporary = file.with_name(f".{file.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        with os.fdopen(fd, "w") as out:
            os.fchmod(out.fileno(), FILE_MODE)  # whatever the umask
            json.dump(config.as_json(), out, indent=2)
        os.replace(temporary, file)
    finally:
        if temporary.exists():
            temporary.unlink()
    return file


def default_name(server: str) -> str:
    """A context's name when the login names none: the server's host[:port]."""
    rest = server.split("://", 1)[-1]
    return rest.split("/", 1)[0] or "default"
