"""`vcenter backup FILE` and `vcenter restore FILE`: the server's database and key material in
one archive, and back (vcenter.services.housekeeping.server_backup decides what and how).

Only typer is imported here at start-up; the database layers load when a command runs, so that
`vcenter --help` stays quick.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer


def add_commands(app: typer.Typer, apply_env: Callable[..., None]) -> None:
    """Register the two commands on the `vcenter` app; ``apply_env`` is the CLI's option ->
    VCENTER_* setter (vcenter.cli._env)."""

    @app.command("backup")
    def backup_command(
        file: Path = typer.Argument(..., help="archive to write (a gzip-compressed tar, mode 0600; replaced atomically if it exists)"),
        database_url: Optional[str] = typer.Option(None, help="SQLAlchemy URL [VCENTER_DATABASE_URL]"),
        key_dir: Optional[str] = typer.Option(None, help="server key directory [VCENTER_KEY_DIR]"),
    ) -> None:
        """Back up the server: every table's rows (one consistent snapshot, while the server
        runs) and the whole key directory (command signing key, TLS material, CA), with a
        manifest of checksums. Not in it: datastore contents (guest disks, VM backups,
        templates), the agents' state directories, Redis (queues, heartbeats, locks)."""
        apply_env(database_url=database_url, key_dir=key_dir)
        from vcenter.core.settings import get_settings
        from vcenter.services.housekeeping.server_backup import backup

        summary = _refusing(lambda: backup(get_settings(), file))
        typer.echo(f"backup {summary.path}: revision {summary.revision}, {summary.tables} tables, {summary.rows} rows, {summary.key_files} key files")

    @app.command("restore")
    def restore_command(
        file: Path = typer.Argument(..., help="archive written by `vcenter backup`"),
        force: bool = typer.Option(False, "--force", help="replace a database that holds data (refused otherwise: DATABASE_NOT_EMPTY)"),
        database_url: Optional[str] = typer.Option(None, help="SQLAlchemy URL [VCENTER_DATABASE_URL]"),
        key_dir: Optional[str] = typer.Option(None, help="server key directory [VCENTER_KEY_DIR]"),
    ) -> None:
        """Restore a backup into this server (stop its API, worker, beat and HA processes
        first): checks every checksum, loads the rows at the archive's revision and migrates
        forward, puts the key directory in place (the previous one is kept beside it)."""
        apply_env(database_url=database_url, key_dir=key_dir)
        from vcenter.core.settings import get_settings
        from vcenter.services.housekeeping.server_backup import restore

        summary = _refusing(lambda: restore(get_settings(), file, force=force))
        typer.echo(
            f"restored {file} (release {summary.product_version}, revision {summary.revision}, migrated to {summary.migrated_to}): {summary.tables} tables, {summary.rows} rows, {summary.key_files} key files"
        )
        for path in summary.moved_aside:
            typer.echo(f"kept the previous copy as {path}")


def _refusing(run: Callable[[], Any]) -> Any:
    """Run; a refusal is one line with its code and exit status 2, not a traceback."""
    from vcenter.core.errors import VcError

    try:
        return run()
    except VcError as exc:
        typer.echo(f"refused: {exc.code}: {exc.message}", err=True)
        raise typer.Exit(2) from None
