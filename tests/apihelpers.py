"""Helpers for tests that drive the API in-process."""
from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient

from vcenter.core.settings import Settings
from vcenter.db.session import session_scope
from vcenter.services import auth


def make_admin(settings: Settings, username: str = "admin", password: str = "secret-pass") -> None:
    with session_scope(settings.database_url) as session:
        auth.create_user(session, username, password, is_admin=True)


def login(client: TestClient, username: str = "admin", password: str = "secret-pass") -> dict[str, str]:
    response = client.post("/api/v1/session", json={"username": username, "password": password})
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last value {last!r}")
