"""`vcenter healthcheck ROLE`, the compose deployment's container healthchecks, against a real
Redis: beat and ha are healthy exactly while the lock their loop renews is held, and unhealthy
(exit 1) once it expired; api is unhealthy when nothing answers /livez; an unknown role is a
usage error. (The worker's Celery ping and api's /livez on a live server are proven by
tests/e2e/test_compose_deploy.py, where every container must become healthy.)"""

from __future__ import annotations

import socket

import pytest
import redis
from typer.testing import CliRunner

from tests.conftest import REDIS_URL
from vcenter.cli import HEALTH_LOCK_KEYS, app


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VCENTER_REDIS_URL", REDIS_URL)
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(*HEALTH_LOCK_KEYS.values())
    yield client
    client.delete(*HEALTH_LOCK_KEYS.values())


@pytest.mark.parametrize("role", ["beat", "ha"])
def test_healthy_while_the_loops_lock_is_held_and_not_after(env, role):
    runner = CliRunner()
    assert runner.invoke(app, ["healthcheck", role]).exit_code == 1
    env.set(HEALTH_LOCK_KEYS[role], "owner", px=300)
    held = runner.invoke(app, ["healthcheck", role])
    assert held.exit_code == 0 and f"{role}: healthy" in held.output
    import time

    time.sleep(0.4)  # nobody renewed it: the loop would be dead or hung
    assert runner.invoke(app, ["healthcheck", role]).exit_code == 1


def test_api_unhealthy_when_nothing_answers_and_unknown_role_refused(env, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("VCENTER_API_PORT", str(port))
    result = CliRunner().invoke(app, ["healthcheck", "api"])
    assert result.exit_code == 1 and "api: unhealthy" in result.output
    assert CliRunner().invoke(app, ["healthcheck", "db"]).exit_code == 2
