"""Run Alembic migrations from code (the CLI, make run, tests).

The scripts are the `migrations` package, found where Python imports it from: the source tree
or an installed wheel alike, so no alembic.ini is needed at run time (the repository's
alembic.ini serves the `alembic` command of developers)."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from alembic import command
from alembic.config import Config


def migrations_dir() -> Path:
    spec = find_spec("migrations")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the migrations package is not installed beside vcenter")
    return Path(next(iter(spec.submodule_search_locations)))


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)
