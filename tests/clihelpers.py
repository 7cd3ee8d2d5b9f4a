"""Running the `vcenter` command as a user does: a subprocess with the user's config directory
and this tree's code, no server settings in its environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vcenter.lab.stack import Stack

ROOT = Path(__file__).resolve().parents[1]


def cli_env(config_home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VCENTER_")}
    env.update({"XDG_CONFIG_HOME": str(config_home), "PYTHONPATH": str(ROOT), "COLUMNS": "160", **extra})
    return env


def vcenter(env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vcenter.cli", *args], env=env, input=stdin, capture_output=True, text=True, timeout=timeout)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def login(env: dict[str, str], url: str, admin: tuple[str, str], name: str = "lab") -> None:
    """`vcenter login` with the password on standard input."""
    out = ok(vcenter(env, "login", url, "--user", admin[0], "--password-stdin", "--name", name, stdin=admin[1] + "\n"))
    assert f"context {name}" in out, out


def wait_for_https(stack: "Stack", cert: Path, timeout: float = 60) -> None:
    """Until the stack's API answers /livez over HTTPS, verified with its own self-signed
    certificate ``cert`` (the Stack's own wait knows no CA)."""
    import ssl
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if cert.exists() and httpx.get(stack.url + "/livez", verify=ssl.create_default_context(cafile=str(cert)), timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, (stack.workdir / "api.log").read_text()[-2000:]
        time.sleep(0.2)
