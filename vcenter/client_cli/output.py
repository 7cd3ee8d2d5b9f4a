"""What the operator commands print: rich tables on stdout that fit the terminal, a task's
progress bar on stderr, errors as ``error: CODE: message`` on stderr; with ``--json``, one JSON
document on stdout and nothing else (no bar, no colour).

Exit statuses: 0 done; 1 refused by the server or a failed/cancelled task (the error code is
printed); 2 a usage error (click's); 3 no server, no login or a broken stream.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import typer

REFUSED, USAGE, UNREACHABLE = 1, 2, 3
F = TypeVar("F", bound=Callable[..., Any])


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def print_json(doc: Any) -> None:
    import json

    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
    """A table as wide as the terminal at most: long cells fold rather than widen it."""
    from rich.table import Table

    out = Table(title=title, box=None, header_style="bold", pad_edge=False, expand=False)
    for name in columns:
        out.add_column(name, overflow="fold")
    for row in rows:
        out.add_row(*("" if v is None else str(v) for v in row))
    console().print(out)


def pairs(doc: dict[str, Any], keys: Sequence[str], title: str | None = None) -> None:
    """One object as ``key  value`` rows."""
    table(("field", "value"), [(k, _cell(doc.get(k))) for k in keys if k in doc], title=title)


def _cell(value: Any) -> str:
    import json

    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return "" if value is None else str(value)


def error(code: str, message: str, as_json: bool, details: Any = None, status: int | None = None) -> None:
    if as_json:
        print_json({"error": {"code": code, "message": message, "details": details, "status": status}})
    else:
        sys.stderr.write(f"error: {code}: {message}\n")


def handled(command: F) -> F:
    """Run a command; a refusal or a client failure is printed (with ``json_out``'s format)
    and becomes the exit status, never a traceback."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        as_json = bool(kwargs.get("json_out"))
        try:
            return command(*args, **kwargs)
        except Exception as exc:
            # imported here: httpx loads when a command runs, not when the tree is built
            from vcenter.client.errors import ApiError, ClientError, PathError

            if isinstance(exc, ApiError):
                error(exc.code, exc.message, as_json, exc.details, exc.status)
                if exc.code in ("SESSION_EXPIRED", "TOKEN_EXPIRED", "NOT_AUTHENTICATED") and not as_json:
                    sys.stderr.write("log in again: vcenter login\n")
                raise typer.Exit(REFUSED) from None
            if isinstance(exc, PathError):
                error(exc.code, str(exc), as_json)
                raise typer.Exit(REFUSED) from None
            if isinstance(exc, ClientError):
                error("CLIENT_ERROR", str(exc), as_json)
                raise typer.Exit(UNREACHABLE) from None
            raise

    return run  # type: ignore[return-value]
