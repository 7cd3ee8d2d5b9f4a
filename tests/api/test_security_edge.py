"""Issue 15, findings 6, 8 and 11 (headers, metrics), tried as a hostile client would:

- the body guard works on the bytes: two ``Content-Type`` headers or a comma-joined one are 415;
  a 20 MiB body sent chunked without a length (no content type, which FastAPI parses as JSON)
  is 413; NUL behind a second header, or in a form body, is refused; nothing is stored; streamed
  uploads keep their own, larger, limit;
- ``X-Forwarded-For`` counts only from a configured trusted proxy: forged from any other peer
  the per-address login limit and the audit ``source`` see the real peer; behind a trusted
  proxy they see the client (through a real ``vcenter serve``, whose uvicorn would trust
  loopback by itself: tests/system/test_served_client_address.py);
- security headers on API, /ui, /docs, static files and every kind of error, HSTS under HTTPS;
- /metrics refuses anonymous callers and admits the metrics token, a System.View user, and
  the separate listener of ``metrics_listen``.
"""

from __future__ import annotations

import os
import re
import socket

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.apihelpers import app_for, login, make_admin
from tests.conftest import make_settings, migrated_sqlite
from vcenter.api.app import create_app


MIB = 1 << 20
ADMIN_PASSWORD = "edge-admin-passphrase-1"


@pytest.fixture
def client(settings):
    make_admin(settings, password=ADMIN_PASSWORD)
    with TestClient(app_for(settings)) as c:
        yield c


# A role's description is free text: what a NUL would be stored in.
NUL_ROLE = b'{"name": "nulrole", "description": "before\\u0000after"}'


def _datacenters(client, auth) -> list[str]:
    return [d["name"] for d in client.get("/api/v1/datacenters", headers=auth).json()["items"]]


def _roles(client, auth) -> list[str]:
    return [r["name"] for r in client.get("/api/v1/roles", headers=auth).json()]


# --- finding 6: the body guard -------------------------------------------------------------------


def test_two_content_type_headers_are_refused_and_nothing_is_stored(client):
    auth = login(client, "admin", ADMIN_PASSWORD)
    # The old guard read the last header (text/plain: no JSON checks), FastAPI the first (JSON).
    r = client.post("/api/v1/roles", content=NUL_ROLE, headers=[*auth.items(), ("content-type", "application/json"), ("content-type", "text/plain")])
    assert r.status_code == 415 and r.json()["code"] == "AMBIGUOUS_CONTENT_TYPE", r.text
    r = client.post("/api/v1/datacenters", content=b'{"name": "dc' + b"x" * 2 * MIB + b'"}', headers=[*auth.items(), ("content-type", "application/json"), ("content-type", "text/plain")])
    assert r.status_code in (413, 415), r.text
    r = client.post("/api/v1/roles", content=NUL_ROLE, headers={**auth, "content-type": "application/json, text/plain"})
    assert r.status_code == 415 and r.json()["code"] == "AMBIGUOUS_CONTENT_TYPE", r.text
    assert "nulrole" not in _roles(client, auth) and _datacenters(client, auth) == []
    # One plain header still works.
    assert client.post("/api/v1/datacenters", json={"name": "dc1"}, headers=auth).status_code == 201


def test_nul_is_refused_whatever_the_headers_claim(client):
    auth = login(client, "admin", ADMIN_PASSWORD)
    for headers in ({"content-type": "text/plain"}, {}, {"content-type": "application/x-www-form-urlencoded"}):
        r = client.post("/api/v1/roles", content=NUL_ROLE, headers={**auth, **headers})
        assert r.status_code == 422 and r.json()["code"] == "INVALID_CHARACTER", (headers, r.text)
    # The dashboard's forms parse any body as a form: %00 is a NUL there, whatever the type says.
    r = client.post("/ui/login", content=b"username=ad%00min&password=x&csrf=x", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["code"] == "INVALID_CHARACTER", r.text
    assert "nulrole" not in _roles(client, auth)


def test_a_chunked_body_without_length_is_limited_whatever_its_type(client):
    auth = login(client, "admin", ADMIN_PASSWORD)
    body = b'{"name": "big", "pad": "' + b"a" * (20 * MIB) + b'"}'

    def chunks():  # a generator: httpx sends it chunked, without Content-Length
        for start in range(0, len(body), MIB):
            yield body[start : start + MIB]

    # No Content-Type at all: FastAPI parses the body as JSON, the old guard did not look at it.
    for headers in ({}, {"content-type": "text/plain"}, {"content-type": "application/json"}):
        r = client.post("/api/v1/datacenters", content=chunks(), headers={**auth, **headers})
        assert r.status_code == 413 and r.json()["code"] == "BODY_TOO_LARGE", (headers, r.text)
    # A form body (the dashboard's) too.
    r = client.post("/ui/login", content=b"username=" + b"a" * (2 * MIB), headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413 and r.json()["code"] == "BODY_TOO_LARGE"
    assert _datacenters(client, auth) == []


def test_streamed_uploads_keep_their_own_larger_limit(settings, tmp_path):
    settings = settings.model_copy(update={"max_json_body": 64 * 1024, "upload_max_bytes": 3 * MIB})
    make_admin(settings, password=ADMIN_PASSWORD)
    with TestClient(app_for(settings)) as c:
        auth = login(c, "admin", ADMIN_PASSWORD)
        data = os.urandom(2 * MIB)
        r = c.post("/api/v1/uploads?filename=disk.raw", content=data, headers={**auth, "content-type": "application/octet-stream"})
        assert r.status_code == 201 and r.json()["size_bytes"] == len(data), r.text
        r = c.post("/api/v1/uploads?filename=big.raw", content=iter([data, data]), headers=auth)
        assert r.status_code == 413 and r.json()["code"] == "UPLOAD_TOO_LARGE", r.text
        # The same size anywhere else is over the JSON limit.
        r = c.post("/api/v1/datacenters", content=data, headers={**auth, "content-type": "application/octet-stream"})
        assert r.status_code == 413 and r.json()["code"] == "BODY_TOO_LARGE"
        # Uploads too must name one media type.
        r = c.post("/api/v1/uploads?filename=x.raw", content=b"x", headers=[*auth.items(), ("content-type", "application/octet-stream"), ("content-type", "application/json")])
        assert r.status_code == 415


# --- finding 8: client addresses ----------------------------------------------------------------


def _failed_login(client, forged: str | None = None, user: str = "admin"):
    headers = {"x-forwarded-for": forged} if forged else {}
    return client.post("/api/v1/session", json={"username": user, "password": "wrong"}, headers=headers)


def _sources(client, auth) -> list[str]:
    events = client.get("/api/v1/events", params={"kind": "session.login_failed", "limit": 100}, headers=auth).json()["items"]
    return [e["source"] for e in events]


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(settings):
    settings = settings.model_copy(update={"login_source_failures": 3, "login_lockout_failures": 100})
    make_admin(settings, password=ADMIN_PASSWORD)
    with TestClient(app_for(settings), client=("198.51.100.7", 40000)) as c:
        auth = login(c, "admin", ADMIN_PASSWORD)
        for n in range(3):
            assert _failed_login(c, f"203.0.113.{n}", user=f"user{n}").status_code == 401
        # A fourth forged address does not reset the count: the peer is limited.
        refused = _failed_login(c, "203.0.113.99", user="someone")
        assert refused.status_code == 429 and refused.json()["code"] == "LOGIN_RATE_LIMITED", refused.text
        assert set(_sources(c, auth)) == {"198.51.100.7"}


def test_x_forwarded_for_from_a_trusted_proxy_names_the_client(settings):
    settings = settings.model_copy(update={"login_source_failures": 3, "login_lockout_failures": 100, "trusted_proxies": "10.0.0.0/24"})
    make_admin(settings, password=ADMIN_PASSWORD)
    with TestClient(app_for(settings), client=("10.0.0.2", 40000)) as c:
        for n in range(3):
            # The client wrote a forged entry; our proxies appended the real one and themselves.
            assert _failed_login(c, f"6.6.6.{n}, 203.0.113.5, 10.0.0.7", user=f"user{n}").status_code == 401
        assert _failed_login(c, "203.0.113.5", user="x").json()["code"] == "LOGIN_RATE_LIMITED"
        # Another client behind the same proxy is not limited by its neighbour's failures.
        assert _failed_login(c, "203.0.113.6", user="x").json()["code"] == "BAD_CREDENTIALS"
        r = c.post("/api/v1/session", json={"username": "admin", "password": ADMIN_PASSWORD}, headers={"x-forwarded-for": "192.0.2.1"})
        assert r.status_code == 201, r.text
        auth = {"Authorization": f"Bearer {r.json()['token']}"}
        assert set(_sources(c, auth)) == {"203.0.113.5", "203.0.113.6"}
        # HSTS follows a TLS-terminating trusted proxy.
        assert "strict-transport-security" in c.get("/livez", headers={"x-forwarded-proto": "https"}).headers
    # The same header from a peer outside the list names nobody: 203.0.113.5 is limited, the
    # peer 10.0.1.2 is not, and it is the peer that is judged.
    with TestClient(app_for(settings), client=("10.0.1.2", 40000)) as c:
        assert _failed_login(c, "203.0.113.5", user="y").json()["code"] == "BAD_CREDENTIALS"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- finding 11: headers ------------------------------------------------------------------------


def _has_security_headers(response, what: str) -> None:
    h = response.headers
    csp = h.get("content-security-policy", "")
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp, (what, csp)
    assert "frame-ancestors 'none'" in csp, what
    assert h.get("x-frame-options") == "DENY" and h.get("x-content-type-options") == "nosniff", what
    assert h.get("referrer-policy") in ("no-referrer", "same-origin"), what


def test_security_headers_on_every_kind_of_response(settings):
    make_admin(settings, password=ADMIN_PASSWORD)
    app = create_app(settings)  # its own: the route added below must not reach another test's app

    def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/test-boom", boom)
    with TestClient(app, raise_server_exceptions=False) as c:
        auth = login(c, "admin", ADMIN_PASSWORD)
        ui = TestClient(app, raise_server_exceptions=False)
        form = ui.get("/ui/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
        ui.post("/ui/login", data={"username": "admin", "password": ADMIN_PASSWORD, "csrf": csrf, "next": "/ui"})
        responses = {
            "api": c.get("/api/v1/datacenters", headers=auth),
            "ui page": ui.get("/ui"),
            "ui login": form,
            "docs": c.get("/docs"),
            "redoc": c.get("/redoc"),
            "openapi": c.get("/openapi.json"),
            "ui static": c.get("/ui/static/app.js"),
            "docs static": c.get("/static/docs/vendor/swagger-ui/swagger-ui.css"),
            "404": c.get("/nowhere"),
            "401": c.get("/api/v1/datacenters"),
            "422": c.get("/api/v1/datacenters?limit=abc", headers=auth),
            "415 guard": c.post("/api/v1/datacenters", content=b"{}", headers=[*auth.items(), ("content-type", "a/b"), ("content-type", "c/d")]),
            "500": c.get("/test-boom"),
            "metrics 401": c.get("/metrics"),
        }
        assert responses["500"].status_code == 500 and responses["ui page"].status_code == 200
        for what, response in responses.items():
            _has_security_headers(response, what)
            assert "strict-transport-security" not in response.headers, what  # plain HTTP
        for what in ("api", "ui page", "docs", "redoc", "404", "500", "metrics 401"):
            assert responses[what].headers.get("cache-control") == "no-store", what
        assert "no-store" not in responses["ui static"].headers.get("cache-control", "")
        # /docs and /redoc: every script is a file of ours.
        for what in ("docs", "redoc"):
            scripts = re.findall(r"<script([^>]*)>(.*?)</script>", responses[what].text, flags=re.S)
            assert scripts and all("src=" in attrs and not body.strip() for attrs, body in scripts), scripts
            assert all(c.get(src).status_code == 200 for src in re.findall(r'src="([^"]+)"', responses[what].text)), what
        # /redoc alone takes a style nonce (its meta element hands it to Redoc) and blob: workers.
        nonce = re.search(r'<meta property="csp-nonce" nonce="([^"]+)">', responses["redoc"].text).group(1)
        assert f"'nonce-{nonce}'" in responses["redoc"].headers["content-security-policy"]
        assert "blob:" in responses["redoc"].headers["content-security-policy"]
        assert all(
            "blob:" not in r.headers["content-security-policy"] and "nonce-" not in r.headers["content-security-policy"] for w, r in responses.items() if w not in ("redoc", "ui page", "ui login")
        )
    with TestClient(app, base_url="https://testserver") as tls:
        assert tls.get("/livez").headers["strict-transport-security"].startswith("max-age=")


# --- finding 11: /metrics -------------------------------------------------------------------------


def test_metrics_needs_a_credential(settings):
    settings = settings.model_copy(update={"metrics_token": "prometheus-scrape-secret"})
    make_admin(settings, password=ADMIN_PASSWORD)
    with TestClient(app_for(settings)) as c:
        auth = login(c, "admin", ADMIN_PASSWORD)
        anonymous = c.get("/metrics")
        assert anonymous.status_code == 401 and anonymous.json()["code"] == "NOT_AUTHENTICATED"
        assert "vcenter_http" not in anonymous.text
        assert c.get("/metrics", headers={"authorization": "Bearer not-the-secret"}).status_code == 401
        scraped = c.get("/metrics", headers={"authorization": "Bearer prometheus-scrape-secret"})
        assert scraped.status_code == 200 and "vcenter_http_requests_total" in scraped.text
        assert c.get("/metrics", headers=auth).status_code == 200
        # A user without System.View on the root may not read them.
        r = c.post("/api/v1/users", headers=auth, json={"username": "nobody", "password": "a-long-enough-passphrase-7"})
        assert r.status_code == 201, r.text
        nobody = login(c, "nobody", "a-long-enough-passphrase-7")
        refused = c.get("/metrics", headers=nobody)
        assert refused.status_code == 403 and refused.json()["code"] == "FORBIDDEN"


def test_metrics_listen_serves_a_separate_plain_listener(tmp_path):
    port = _free_port()
    settings = make_settings(tmp_path, database_url=migrated_sqlite(tmp_path / "vcenter.db"), metrics_listen=f"127.0.0.1:{port}")
    with TestClient(app_for(settings)) as c:
        c.get("/livez")
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics")
        assert scraped.status_code == 200 and 'route="/livez"' in scraped.text
        # The API port still refuses an anonymous caller.
        assert c.get("/metrics").status_code == 401
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_a_body_nested_past_the_parsers_depth_is_a_400_with_a_stable_code(settings):
    """json.loads raises RecursionError on deep nesting: a 4xx naming the body, never a 500."""
    make_admin(settings)
    with TestClient(app_for(settings), raise_server_exceptions=False) as client:
        auth = login(client)
        for body in ("[" * 200000 + "]" * 200000, '{"name": ' + "[" * 50000 + "]" * 50000 + "}"):
            r = client.post("/api/v1/datacenters", content=body, headers={**auth, "content-type": "application/json"})
            assert (r.status_code, r.json()["code"]) == (400, "INVALID_BODY"), r.text
