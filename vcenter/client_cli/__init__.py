"""The operator commands of `vcenter` (login, ls, find, vm, host, cluster, tasks, events,
context, completion): a client of the public API through vcenter.client, in the spirit of govc.

Only typer is imported when the command tree is built; httpx and rich load when a command
runs, so `vcenter --help` stays quick (tests/unit/test_cli_imports.py).
"""

from vcenter.client_cli.commands import add_commands

__all__ = ["add_commands"]
