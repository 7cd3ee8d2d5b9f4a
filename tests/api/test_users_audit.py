"""Users through the API, login lockout that never locks the last administrator out for good,
and the audit log exported as JSON lines."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from tests.apihelpers import app_for, login, make_admin


@pytest.fixture
def client(settings):
    make_admin(settings)
    with TestClient(app_for(settings)) as c:
        yield c


def test_users_are_managed_and_the_last_administrator_stays(client):
    auth = login(client)
    r = client.post("/api/v1/users", headers=auth, json={"username": "ops1", "password": "ops-password"})
    assert r.status_code == 201 and r.json()["is_admin"] is False
    ops = login(client, "ops1", "ops-password")
    assert client.get("/api/v1/users", headers=ops).status_code == 403
    assert client.get("/api/v1/datacenters", headers=ops).status_code == 200
    # A password change revokes the user's sessions.
    assert client.patch(f"/api/v1/users/{r.json()['id']}", headers=auth, json={"password": "new-password"}).status_code == 200
    assert client.get("/api/v1/datacenters", headers=ops).status_code == 401
    admin_id = next(u["id"] for u in client.get("/api/v1/users", headers=auth).json() if u["username"] == "admin")
    last = client.patch(f"/api/v1/users/{admin_id}", headers=auth, json={"is_admin": False})
    assert last.status_code == 409 and last.json()["code"] == "LAST_ADMINISTRATOR"
    assert client.delete(f"/api/v1/users/{admin_id}", headers=auth).json()["code"] == "LAST_ADMINISTRATOR"
    short = client.post("/api/v1/users", headers=auth, json={"username": "x", "password": "short"})
    assert short.status_code == 422 and short.json()["code"] == "WEAK_PASSWORD" and short.json()["details"]["field"] == "password"


def test_lockout_after_repeated_failures_is_temporary(client, settings):
    for _ in range(settings.login_lockout_failures):
        assert client.post("/api/v1/session", json={"username": "admin", "password": "guess"}).json()["code"] == "BAD_CREDENTIALS"
    locked = client.post("/api/v1/session", json={"username": "admin", "password": "secret-pass-phrase"})
    assert locked.status_code == 401 and locked.json()["code"] == "LOCKED_OUT"
    settings.login_lockout_window = 0.0  # the window passed
    assert client.post("/api/v1/session", json={"username": "admin", "password": "secret-pass-phrase"}).status_code == 201


def test_audit_log_exports_as_json_lines(client):
    auth = login(client)
    client.post("/api/v1/datacenters", headers=auth, json={"name": "dc-audit"})
    client.post("/api/v1/session", json={"username": "admin", "password": "wrong"})
    r = client.get("/api/v1/events/export", headers=auth)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    events = [json.loads(line) for line in r.text.splitlines()]
    kinds = [e["kind"] for e in events]
    assert "datacenter.created" in kinds and "session.login_failed" in kinds
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    # Append-only: the API has no route that changes or deletes events.
    paths = client.get("/openapi.json").json()["paths"]
    assert {method for path, ops in paths.items() if path.startswith("/api/v1/events") for method in ops} == {"get"}
