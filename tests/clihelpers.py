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


def console_session(env: dict[str, str], vm: str, line: bytes, answer: bytes, timeout: float = 60) -> tuple[int, bytes]:
    """`vcenter vm console VM` on a pty, as a user at a terminal runs it: ``line`` typed once
    the console is attached (and again every few seconds, for a guest still at its boot
    messages), until ``answer`` shows; then Ctrl-] ends it. The exit status and all it showed."""
    import pty
    import select
    import time

    keyboard, terminal = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "vcenter.cli", "vm", "console", vm], env=env, stdin=terminal, stdout=terminal, stderr=terminal)
    os.close(terminal)
    seen = bytearray()
    deadline, typed_at = time.monotonic() + timeout, 0.0
    try:
        while answer not in seen and time.monotonic() < deadline and process.poll() is None:
            if b"escape character is ^]" in seen and time.monotonic() - typed_at > 5:
                os.write(keyboard, line)
                typed_at = time.monotonic()
            if select.select([keyboard], [], [], 0.2)[0]:
                try:
                    seen.extend(os.read(keyboard, 4096))
                except OSError:  # the command ended: the pty's other side is gone
                    break
        os.write(keyboard, b"\x1d")
        status = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(keyboard)
    return status, bytes(seen)


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
