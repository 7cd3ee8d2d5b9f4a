"""The wheel is the unit of installation (the container image installs it, a host install does
too): installed alone, outside the source tree, it carries everything `vcenter db upgrade`
needs, the Alembic scripts included, and reports its release."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory, built_wheel: Path) -> Path:
    """The wheel built from this tree, installed (without dependencies) into a bare directory."""
    target = tmp_path_factory.mktemp("wheel") / "site"
    wheel = built_wheel
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", str(target), str(wheel)], check=True, timeout=300)
    return target


def _run_installed(site: Path, cwd: Path, code: str, **env: str) -> subprocess.CompletedProcess[str]:
    # -S: no site hooks, so this environment's editable install of the source tree cannot answer
    # for `vcenter` or `migrations`; only the installed wheel and the dependencies are on the path
    path = os.pathsep.join([str(site), sysconfig.get_paths()["purelib"]])
    return subprocess.run([sys.executable, "-S", "-c", code], cwd=cwd, env={"PATH": os.environ["PATH"], "PYTHONPATH": path, **env}, capture_output=True, text=True, timeout=120)


def test_installed_wheel_upgrades_an_empty_database_outside_the_source_tree(installed, tmp_path):
    db = tmp_path / "server.db"
    code = "import vcenter, migrations; print(vcenter.__file__); print(migrations.__file__); from vcenter.db.migrate import upgrade; upgrade('sqlite:///" + str(db) + "')"
    done = _run_installed(installed, tmp_path, code)
    assert done.returncode == 0, done.stderr
    vcenter_file, migrations_file = done.stdout.split()[:2]
    assert vcenter_file.startswith(str(installed)) and migrations_file.startswith(str(installed))
    (head,) = sqlite3.connect(db).execute("select version_num from alembic_version").fetchone()
    newest = max(p.name.split("_", 1)[0] for p in (ROOT / "migrations" / "versions").glob("0*.py"))
    assert head == newest


def test_installed_wheel_knows_its_release(installed, tmp_path):
    # --version of the installed command line: the wheel's metadata, not "0+unknown"
    done = _run_installed(installed, tmp_path, "from vcenter.core.release import release; print(release())")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() not in ("", "0+unknown")
