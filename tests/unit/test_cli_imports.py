"""`vcenter --help` and `vcenter --version` start without the server's heavy libraries (issue 18
item 4: the CLI starts fast; bench/cli_start.py measures it): each runs in a fresh interpreter,
which then reports which of numpy, SQLAlchemy, FastAPI, Celery (and pydantic-settings, rich,
the lab and the simulator) it imported. The lazily loaded sub-applications still answer, and
the server's commands keep their names and options."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from vcenter.cli import app

HEAVY = ("numpy", "sqlalchemy", "fastapi", "celery", "pydantic_settings", "rich", "vcenter.sim", "vcenter.lab", "vcenter.core.settings")
# Run the command as the installed script does (vcenter.cli:main), then list what got imported.
PROBE = """
import json, sys
args, heavy = json.loads(sys.argv[1]), json.loads(sys.argv[2])
sys.argv = ["vcenter", *args]
from vcenter.cli import main
try:
    main()
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "heavy": sorted(m for m in heavy if sys.modules.get(m) is not None)}))  # None: blocked, not imported
"""


def _probe(*args: str, env: dict[str, str] | None = None, heavy: tuple[str, ...] = HEAVY) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(list(args)), json.dumps(heavy)], capture_output=True, text=True, timeout=60, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


# The operator commands (vcenter.client_cli) may load rich (tables, the progress bar) and httpx
# when they run; never the server's libraries or code, nor pydantic (typer 0.29 would convert
# every parameter with pydantic's TypeAdapter: vcenter.client_cli.coercion converts the plain
# ones), nor httpx's command-line tool (click, pygments).
# tests/system/test_cli_operator.py probes them against a live server too.
CLIENT_HEAVY = tuple(m for m in HEAVY if m != "rich") + ("vcenter.core", "vcenter.db", "vcenter.api", "vcenter.services", "pydantic", "pydantic_core", "httpx._main", "pygments", "click")


@pytest.mark.parametrize("args", [("--help",), ("--version",), ("db", "--help"), ("admin", "--help"), ("vm", "--help"), ("vm", "power", "--help"), ("ls", "--help"), ("tasks", "--help")])
def test_help_and_version_import_nothing_heavy(args):
    assert _probe(*args) == {"code": 0, "heavy": []}


def test_the_client_commands_import_nothing_of_the_server(tmp_path):
    import os

    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path)}
    assert _probe("context", "list", env=env, heavy=CLIENT_HEAVY) == {"code": 0, "heavy": []}  # a rich table
    # no login: the client (httpx) loads, the command ends with exit status 3
    assert _probe("ls", "/dc1/vm", env=env, heavy=CLIENT_HEAVY) == {"code": 3, "heavy": []}
    assert _probe("vm", "info", "/dc1/vm/web1", "--json", env=env, heavy=CLIENT_HEAVY) == {"code": 3, "heavy": []}
    assert _probe("tasks", "--limit", "5", env=env, heavy=CLIENT_HEAVY) == {"code": 3, "heavy": []}
    assert _probe("vm", "console", "web1", "--url", env=env, heavy=CLIENT_HEAVY) == {"code": 3, "heavy": []}
    assert _probe("completion", "bash", env=env, heavy=CLIENT_HEAVY) == {"code": 0, "heavy": []}


def test_the_probe_sees_an_import():
    # The same probe on a command that loads the simulator: numpy shows (the probe can fail).
    assert "numpy" in _probe("sim", "--help")["heavy"]


def test_the_lazy_subapplications_answer():
    runner = CliRunner()
    root = runner.invoke(app, ["--help"])
    assert root.exit_code == 0 and "lab" in root.output and "sim" in root.output and "Replay VM demand" in root.output
    sim = runner.invoke(app, ["sim", "--help"])
    assert sim.exit_code == 0 and "drs" in sim.output
    lab = runner.invoke(app, ["lab", "--help"])
    assert lab.exit_code == 0 and "up" in lab.output
    assert runner.invoke(app, ["sim", "no-such-command"]).exit_code == 2


def _options(group, path=()) -> dict[str, list[str]]:
    """Every command of the tree (lazy ones loaded) and its option names."""
    import click

    found: dict[str, list[str]] = {}
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if hasattr(command, "list_commands"):
            found.update(_options(command, (*path, name)))
        else:
            found[" ".join((*path, name))] = sorted(opt for p in command.params for opt in p.opts)
    return found


def test_the_server_commands_keep_their_names_and_options():
    import typer

    commands = _options(typer.main.get_command(app))
    for name in ("serve", "worker", "beat", "ha", "agent", "healthcheck", "db upgrade", "admin create", "seed", "command-key"):
        assert name in commands, name
    assert any(name.startswith("lab ") for name in commands) and "sim drs" in commands
    assert commands["serve"] == ["--database-url", "--host", "--port", "--redis-url", "--workers"]
    # options are added (the metrics listener of issue 20), never renamed or removed
    assert commands["agent"] == ["--api-url", "--host-id", "--libvirt-uri", "--metrics-listen", "--redis-url", "--registration-token", "--simulated", "--state-dir", "--token"]
    assert commands["admin create"] == ["--database-url", "--exist-ok", "--password", "username"]
    assert commands["db upgrade"] == ["--database-url", "revision"]


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts_and_their_answers(shell):
    import os

    script = subprocess.run([sys.executable, "-m", "vcenter.cli", "completion", shell], capture_output=True, text=True, timeout=60, check=True).stdout
    assert "_VCENTER_COMPLETE=complete_" + shell in script
    # what the script asks when the user typed `vcenter vm po<TAB>`
    asks = {"bash": {"COMP_WORDS": "vcenter vm po", "COMP_CWORD": "2"}, "zsh": {"_TYPER_COMPLETE_ARGS": "vcenter vm po"}}[shell]
    env = {**os.environ, "_VCENTER_COMPLETE": f"complete_{shell}", **asks}
    answer = subprocess.run([sys.executable, "-c", "import sys; sys.argv = ['vcenter']; from vcenter.cli import main; main()"], env=env, capture_output=True, text=True, timeout=60)
    assert answer.returncode == 0 and "power" in answer.stdout, (answer.stdout, answer.stderr)
