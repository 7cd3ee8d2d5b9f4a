"""Issue 15, finding 11 (audit of refused credentials): every refused user token, password,
agent credential, registration token and registration proof is counted per source, kind and
minute in ``refused_credentials`` (one row for a flood, on SQLite and PostgreSQL), readable by
holders of Global.Diagnostics at GET /api/v1/audit/refused-credentials."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.apihelpers import app_for, login, make_admin, register_host
from vcenter.db.models import Event, RefusedCredential
from vcenter.db.session import session_scope
from vcenter.services.access import auth as auth_service, refusals


FLOOD = 100
NOON = datetime(2026, 12, 7, 12, 0, 30, tzinfo=timezone.utc)


@pytest.fixture
def ctx(settings, monkeypatch):
    make_admin(settings)
    app = app_for(settings)
    with TestClient(app, client=("192.0.2.7", 40000)) as client:
        auth = login(client)
        dc = client.post("/api/v1/datacenters", json={"name": "dc"}, headers=auth).json()
        # One minute for the whole flood, whenever the test runs.
        monkeypatch.setattr(refusals, "utcnow", lambda: NOON)
        yield client, auth, dc, settings


def _rows(settings) -> list[tuple[str, str, int, str]]:
    with session_scope(settings.database_url) as session:
        return [(r.source, r.credential, r.count, r.last_detail) for r in session.scalars(select(RefusedCredential).order_by(RefusedCredential.credential))]


def _events(settings) -> int:
    with session_scope(settings.database_url) as session:
        return session.scalar(select(func.count()).select_from(Event)) or 0


def _flood(send) -> None:
    for _ in range(FLOOD):
        r = send()
        assert r.status_code in (401, 429), r.text


def test_a_flood_of_each_refused_credential_is_one_row_per_kind(ctx):
    client, auth, dc, settings = ctx
    host, agent = register_host(client, auth, dc["id"], "h1")
    pending = client.post("/api/v1/hosts", json={"name": "h2", "datacenter_id": dc["id"]}, headers=auth).json()
    assert _rows(settings) == []
    events_before = _events(settings)

    _flood(lambda: client.get("/api/v1/datacenters", headers={"Authorization": "Bearer not-a-token"}))
    _flood(lambda: client.post(f"/api/v1/agent/hosts/{host['id']}/state", json={"facts": {"hostname": "h1"}, "domains": []}, headers={"Authorization": "Bearer stolen-or-guessed"}))
    _flood(lambda: client.post("/api/v1/agent/register/challenge", json={"registration_token": "guessed-token-0123456789"}))
    nonce = client.post("/api/v1/agent/register/challenge", json={"registration_token": pending["registration_token"]}).json()["nonce"]
    _flood(
        lambda: client.post(
            "/api/v1/agent/register",
            json={"registration_token": pending["registration_token"], "host_uuid": str(uuid.uuid4()), "hostname": "x", "nonce": nonce, "certificate": "not a certificate", "signature": "AAAA"},
        )
    )
    # Token floods leave no Event each: the counts are the audit, and they do not grow per request.
    assert _events(settings) == events_before
    _flood(lambda: client.post("/api/v1/session", json={"username": "admin", "password": "wrong password!"}))
    # A password flood is bounded in the audit log too: the failures up to the lockout, then
    # one Event for the lockout (later refusals are only counted).
    assert _events(settings) - events_before <= settings.login_lockout_failures + 1

    rows = {kind: (source, count, detail) for source, kind, count, detail in _rows(settings)}
    assert set(rows) == {"user_token", "agent", "registration", "registration_proof", "password"}
    for kind, (source, count, detail) in rows.items():
        assert source == "192.0.2.7" and count == FLOOD, (kind, source, count)
    assert rows["user_token"][2] == "NOT_AUTHENTICATED GET /api/v1/datacenters"
    assert rows["agent"][2].startswith("BAD_AGENT_CREDENTIAL POST /api/v1/agent/hosts/")
    assert rows["registration"][2] == "BAD_REGISTRATION_TOKEN POST /api/v1/agent/register/challenge"
    assert rows["registration_proof"][2] == "BAD_REGISTRATION_PROOF POST /api/v1/agent/register"
    # The login lockout and the per-address limit kicked in during the flood: still counted.
    assert rows["password"][2].split()[0] in {"LOCKED_OUT", "LOGIN_RATE_LIMITED"}

    # The real credentials still work, and were not counted.
    assert client.get("/api/v1/datacenters", headers=auth).status_code == 200
    assert client.post(f"/api/v1/agent/hosts/{host['id']}/state", json={"facts": {"hostname": "h1"}, "domains": []}, headers=agent).status_code == 200
    assert sum(count for _, _, count, _ in _rows(settings)) == 5 * FLOOD


def test_no_credential_presented_is_not_a_refusal_and_minutes_and_sources_split(ctx):
    client, auth, dc, settings = ctx
    assert client.get("/api/v1/datacenters").status_code == 401
    assert client.get("/api/v1/datacenters", headers={"Authorization": "   "}).status_code == 401
    assert _rows(settings) == []
    with session_scope(settings.database_url) as session:
        for at, source in (
            (NOON, "192.0.2.7"),
            (NOON + timedelta(seconds=20), "192.0.2.7"),
            (NOON + timedelta(minutes=1), "192.0.2.7"),
            (NOON, "198.51.100.1"),
            (NOON, "2001:db8::1"),
            (NOON, "2001:db8::2"),
            (NOON, "2001:db8:0:1::1"),
        ):
            refusals.count_refusal(session, source, "user_token", "x", now=at)
        session.commit()
    counts = sorted((source, count) for source, _, count, _ in _rows(settings))
    assert counts == [("192.0.2.7", 1), ("192.0.2.7", 2), ("198.51.100.1", 1), ("2001:db8:0:1::/64", 1), ("2001:db8::/64", 2)]


def test_refused_credentials_are_read_by_audit_readers_only(ctx):
    client, auth, dc, settings = ctx
    for _ in range(3):
        client.get("/api/v1/datacenters", headers={"Authorization": "Bearer nope"})
    client.post("/api/v1/agent/register/challenge", json={"registration_token": "guessed-token-0123456789"})
    page = client.get("/api/v1/audit/refused-credentials", headers=auth)
    assert page.status_code == 200, page.text
    body = page.json()
    assert body["total"] == 2 and [(i["credential"], i["count"]) for i in body["items"]] == [("registration", 1), ("user_token", 3)]
    assert body["items"][0]["source"] == "192.0.2.7" and body["items"][0]["minute"].startswith("2026-12-07T12:00:00")
    only = client.get("/api/v1/audit/refused-credentials?credential=user_token&limit=1", headers=auth).json()
    assert only["total"] == 1 and only["items"][0]["count"] == 3
    assert client.get("/api/v1/audit/refused-credentials?credential=bogus", headers=auth).status_code == 422

    # A read-only user does not read them (and is not counted: its credential is valid).
    with session_scope(settings.database_url) as session:
        viewer_id = auth_service.create_user(session, "viewer", "viewer-pass-long-enough", is_admin=False).id
    read_only = next(r["id"] for r in client.get("/api/v1/roles", headers=auth).json() if r["name"] == "Read-only")
    granted = client.post("/api/v1/permissions", json={"principal_type": "user", "principal_id": viewer_id, "role_id": read_only, "object_type": "root", "object_id": 0}, headers=auth)
    assert granted.status_code == 201, granted.text
    viewer = login(client, "viewer", "viewer-pass-long-enough")
    assert client.get("/api/v1/datacenters", headers=viewer).status_code == 200
    assert client.get("/api/v1/audit/refused-credentials", headers=viewer).status_code == 403
    assert client.get("/api/v1/audit/refused-credentials", headers=auth).json()["total"] == 2


def test_refusal_counts_follow_the_audit_logs_retention(ctx):
    from vcenter.services.housekeeping import reaper

    client, auth, dc, settings = ctx
    now = datetime.now(timezone.utc)
    with session_scope(settings.database_url) as session:
        refusals.count_refusal(session, "192.0.2.8", "user_token", "old", now=now - timedelta(days=settings.events_retention_days, minutes=2))
        refusals.count_refusal(session, "192.0.2.8", "user_token", "recent", now=now - timedelta(days=1))
        session.commit()
    with session_scope(settings.database_url) as session:
        assert reaper.purge_refusals(session, settings) == 1
    assert [detail for _, _, _, detail in _rows(settings)] == ["recent"]


def test_the_dashboards_refused_passwords_and_session_cookies_are_counted(ctx):
    from tests.api.test_dashboard import ui_login

    client, auth, dc, settings = ctx
    import re

    form = client.get("/ui/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    for _ in range(3):
        assert client.post("/ui/login", data={"username": "admin", "password": "wrong password!", "csrf": csrf, "next": "/ui"}).status_code == 401
    client.cookies.set("vc_session", "forged-or-expired-session")
    assert client.get("/ui", follow_redirects=False).status_code in (302, 303)
    rows = {kind: (count, detail) for _, kind, count, detail in _rows(settings)}
    assert rows["password"] == (3, "BAD_CREDENTIALS POST /ui/login")
    assert rows["user_token"][0] == 1 and rows["user_token"][1].endswith("GET /ui")
    # A good login through the form is not counted.
    client.cookies.clear()
    ui_login(client, "admin", "secret-pass-phrase")
    assert sum(count for _, _, count, _ in _rows(settings)) == 4
