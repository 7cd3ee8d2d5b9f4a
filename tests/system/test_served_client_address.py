"""Issue 15, finding 8, through a real `vcenter serve` process: uvicorn trusts
``X-Forwarded-For`` from 127.0.0.1 by default, and the server turns that off unless
VCENTER_TRUSTED_PROXIES names the proxy. The in-process half: tests/api/test_security_edge.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.api.test_security_edge import _failed_login, _sources
from tests.apihelpers import make_admin, wait_for
from tests.conftest import REDIS_URL, make_settings, migrated_sqlite


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _served(tmp_path: Path, **env: str):
    """A real `vcenter serve` (uvicorn) on a free loopback port, SQLite, the test Redis."""
    port = _free_port()
    tmp_path.mkdir(parents=True, exist_ok=True)
    # The database and its administrator are made in-process (the session's migrated copy, as
    # `vcenter db upgrade` and `vcenter admin create` would leave them): two Python processes
    # fewer for each server, seconds of CPU; what is tested is the server's reading of headers.
    database = migrated_sqlite(tmp_path / "served.db")
    make_admin(make_settings(tmp_path, database_url=database), password="secret-pass-for-edge")
    environ = {
        **os.environ,
        "VCENTER_DATABASE_URL": database,
        "VCENTER_REDIS_URL": REDIS_URL,
        "VCENTER_KEY_DIR": str(tmp_path / "keys"),
        "VCENTER_UPLOAD_DIR": str(tmp_path / "uploads"),
        "VCENTER_API_HOST": "127.0.0.1",
        "VCENTER_API_PORT": str(port),
        "VCENTER_LOGIN_SOURCE_FAILURES": "3",
        "VCENTER_LOGIN_LOCKOUT_FAILURES": "100",
        **env,
    }
    cli = [sys.executable, "-m", "vcenter.cli"]
    log = open(tmp_path / "api.log", "w")
    proc = subprocess.Popen([*cli, "serve"], env=environ, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(base + "/livez", timeout=1).status_code == 200
        except httpx.HTTPError:
            return proc.poll() is not None and (_ for _ in ()).throw(AssertionError((tmp_path / "api.log").read_text()))

    try:
        wait_for(up, 30, interval=0.2, what="vcenter serve")
        with httpx.Client(base_url=base) as api:
            yield api
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_a_real_server_ignores_x_forwarded_for_from_loopback_unless_configured(tmp_path):
    """uvicorn trusts X-Forwarded-For from 127.0.0.1 by default; `vcenter serve` turns that off."""
    with _served(tmp_path / "untrusted") as api:
        # (logged in first: the limit refuses every login from the limited address)
        auth = {"Authorization": "Bearer " + api.post("/api/v1/session", json={"username": "admin", "password": "secret-pass-for-edge"}).json()["token"]}
        codes = [_failed_login(api, f"203.0.113.{n}", user=f"user{n}").status_code for n in range(4)]
        assert codes == [401, 401, 401, 429], codes
        assert set(_sources(api, auth)) == {"127.0.0.1"}
    with _served(tmp_path / "trusted", VCENTER_TRUSTED_PROXIES="127.0.0.1") as api:
        codes = [_failed_login(api, f"203.0.113.{n}", user=f"user{n}").status_code for n in range(4)]
        assert codes == [401, 401, 401, 401], codes
        auth = {"Authorization": "Bearer " + api.post("/api/v1/session", json={"username": "admin", "password": "secret-pass-for-edge"}).json()["token"]}
        assert set(_sources(api, auth)) == {f"203.0.113.{n}" for n in range(4)}
