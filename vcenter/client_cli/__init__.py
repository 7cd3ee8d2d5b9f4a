"""The operator commands of `vcenter` (login, ls, find, vm, host, cluster, tasks, events,
context, completion): a client of the public API through vcenter.client, in the spirit of govc.

Only typer is imported when the command tree is built; httpx and rich load when a command
runs, so `vcenter --help` stays quick, and no command imports pydantic
(tests/unit/test_cli_imports.py; ``quick_start``).
"""

import sys

from vcenter.client_cli.commands import add_commands

__all__ = ["add_commands", "quick_start"]


def quick_start() -> None:
    """What keeps a running command's start short (issue 18 item 4, bench/cli_start.py):
    typer converts plain parameters without pydantic (vcenter.client_cli.coercion); and
    httpx does not load its own command-line tool (``httpx._main``: click, rich's syntax
    highlighting and pygments, a third of httpx's import), which its package imports whenever
    click is installed and which this process never runs (httpx falls back to a stub)."""
    try:
        from vcenter.client_cli import coercion
    except (ImportError, AttributeError):
        # A typer other than the one coercion's private hook is written for (pyproject allows
        # typer>=0.12): typer's own conversion stays, slower but the same values.
        pass
    else:
        coercion.install()
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
