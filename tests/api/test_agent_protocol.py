"""The server reads an agent's reports of the previous protocol version (no header: an agent
from before versions) and of its own, and refuses a version it cannot read with 400
PROTOCOL_VERSION_UNSUPPORTED, on every route an agent calls with its host credential."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.apihelpers import app_for, login, make_admin, register_host
from vcenter.messaging.contracts import OLDEST_PROTOCOL_VERSION, PROTOCOL_HEADER, PROTOCOL_VERSION


@pytest.fixture
def agent(settings):
    make_admin(settings)
    with TestClient(app_for(settings)) as client:
        auth = login(client)
        dc = client.post("/api/v1/datacenters", json={"name": "dc"}, headers=auth).json()
        host, headers = register_host(client, auth, dc["id"], "esx1")
        yield client, host, headers


def state(client, host, headers):
    return client.post(f"/api/v1/agent/hosts/{host['id']}/state", json={"facts": {"hostname": "esx1"}, "domains": []}, headers=headers)


def test_reports_of_the_previous_and_the_current_version_are_read(agent):
    client, host, headers = agent
    assert state(client, host, headers).status_code == 200  # no header: protocol 1
    for version in (OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION):
        r = state(client, host, {**headers, PROTOCOL_HEADER: str(version)})
        assert r.status_code == 200, r.text


def test_a_version_the_server_cannot_read_is_refused_by_name(agent):
    client, host, headers = agent
    for version in (str(PROTOCOL_VERSION + 1), "0", "x"):
        r = state(client, host, {**headers, PROTOCOL_HEADER: version})
        assert r.status_code == 400 and r.json()["code"] == "PROTOCOL_VERSION_UNSUPPORTED", r.text
    newer = client.post(f"/api/v1/agent/hosts/{host['id']}/events", json=[], headers={**headers, PROTOCOL_HEADER: str(PROTOCOL_VERSION + 1)})
    assert newer.status_code == 400 and "upgrade the server" in newer.json()["message"]
    # A bad credential is still answered as such first.
    r = state(client, host, {"Authorization": "Bearer nope", PROTOCOL_HEADER: "99"})
    assert r.status_code == 401
