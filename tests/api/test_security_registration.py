"""Issue 15, finding 10: registration is bound to the key whose thumbprint the operator
confirmed. A second machine holding the one-time token and the confirmed thumbprint (any
read-only user sees it) but not the key gets no credential; the real agent keeps working; a
different host UUID after the registration is a 409; nonces expire, go stale and are bound to
their token."""

from __future__ import annotations

import base64
import uuid
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient

from tests.apihelpers import agent_register, app_for, login, make_admin
from vcenter.core import registration
from vcenter.core.clock import utcnow
from vcenter.services.inventory.hosts import _nonce_key
from workers.agent.identity import new_identity


@pytest.fixture
def ctx(settings):
    make_admin(settings)
    with TestClient(app_for(settings)) as client:
        auth = login(client)
        dc = client.post("/api/v1/datacenters", json={"name": "dc"}, headers=auth).json()
        yield client, auth, dc, settings


def _nonce(client, token: str) -> str:
    r = client.post("/api/v1/agent/register/challenge", json={"registration_token": token})
    assert r.status_code == 200, r.text
    return r.json()["nonce"]


def _body(token: str, host_uuid: str, nonce: str, cert_pem: bytes, signature: bytes, hostname: str = "intruder") -> dict:
    return {"registration_token": token, "host_uuid": host_uuid, "hostname": hostname, "nonce": nonce, "certificate": cert_pem.decode(), "signature": base64.b64encode(signature).decode()}


def _awaiting_confirmation(client, auth, dc, name="h1"):
    """A host whose real agent registered; the operator confirmed its thumbprint."""
    host = client.post("/api/v1/hosts", json={"name": name, "datacenter_id": dc["id"]}, headers=auth).json()
    real = new_identity(name)
    host_uuid = str(uuid.uuid4())
    r = agent_register(client, real, host["registration_token"], host_uuid, name)
    assert r.json()["trust_state"] == "awaitingConfirmation", r.text
    return host, real, host_uuid


def _agent_works(client, host, answer) -> None:
    agent = {"Authorization": f"Bearer {answer['agent_token']}"}
    r = client.post(f"/api/v1/agent/hosts/{host['id']}/state", json={"facts": {"hostname": host["name"]}, "domains": []}, headers=agent)
    assert r.status_code == 200, r.text


def test_a_second_machine_with_token_and_confirmed_thumbprint_gets_no_credential(ctx):
    client, auth, dc, settings = ctx
    host, real, host_uuid = _awaiting_confirmation(client, auth, dc)
    confirmed = client.post(f"/api/v1/hosts/{host['id']}/confirm", json={"thumbprint": real.thumbprint}, headers=auth)
    assert confirmed.status_code == 200
    token = host["registration_token"]
    # The attacker knows the token and the confirmed thumbprint, and even the real agent's
    # certificate (its console endpoint presents it), but not its key.
    thief = new_identity("intruder")
    for attempt_uuid in (str(uuid.uuid4()), host_uuid):
        nonce = _nonce(client, token)
        message = registration.signed_message(nonce, token, attempt_uuid)
        forged = _body(token, attempt_uuid, nonce, real.cert_pem, thief.key.sign(message, ec.ECDSA(hashes.SHA256())))
        r = client.post("/api/v1/agent/register", json={**forged, "thumbprint": real.thumbprint})
        assert r.status_code == 401 and r.json()["code"] == "BAD_REGISTRATION_PROOF", r.text
        assert "agent_token" not in r.json()
        # Its own certificate, claiming the confirmed thumbprint: refused too.
        own = client.post("/api/v1/agent/register", json={**_body(token, attempt_uuid, nonce, thief.cert_pem, thief.key.sign(message, ec.ECDSA(hashes.SHA256()))), "thumbprint": real.thumbprint})
        assert own.status_code == 401 and own.json()["code"] == "BAD_REGISTRATION_PROOF", own.text
        # Its own certificate without a claim: a different certificate than the confirmed one.
        mismatched = agent_register(client, thief, token, attempt_uuid, "intruder")
        assert mismatched.status_code == 409 and mismatched.json()["code"] == "THUMBPRINT_MISMATCH", mismatched.text
    # The real agent still gets its credential, and it works.
    answer = agent_register(client, real, token, host_uuid, "h1").json()
    assert answer["trust_state"] == "trusted" and answer["agent_token"]
    _agent_works(client, host, answer)
    current = client.get(f"/api/v1/hosts/{host['id']}", headers=auth).json()
    assert current["thumbprint"] == real.thumbprint


def test_a_different_host_uuid_after_registration_is_refused(ctx):
    client, auth, dc, settings = ctx
    host, real, host_uuid = _awaiting_confirmation(client, auth, dc)
    # Before the confirmation, and after it: the key holder itself may not switch UUIDs.
    before = agent_register(client, real, host["registration_token"], str(uuid.uuid4()), "h1")
    assert before.status_code == 409 and before.json()["code"] == "HOST_UUID_MISMATCH", before.text
    client.post(f"/api/v1/hosts/{host['id']}/confirm", json={"thumbprint": real.thumbprint}, headers=auth)
    after = agent_register(client, real, host["registration_token"], str(uuid.uuid4()), "h1")
    assert after.status_code == 409 and after.json()["code"] == "HOST_UUID_MISMATCH", after.text
    assert client.get("/api/v1/events?kind=host.registration_refused", headers=auth).json()["total"] == 2
    answer = agent_register(client, real, host["registration_token"], host_uuid, "h1").json()
    assert answer["agent_token"]
    assert client.get(f"/api/v1/hosts/{host['id']}", headers=auth).json()["host_uuid"] == host_uuid


def test_nonce_replayed_after_confirmation_expired_or_forged_is_refused(ctx):
    client, auth, dc, settings = ctx
    host, real, host_uuid = _awaiting_confirmation(client, auth, dc)
    token = host["registration_token"]
    # A request signed while the host awaited confirmation, captured and replayed after it.
    nonce = _nonce(client, token)
    captured = {"registration_token": token, "host_uuid": host_uuid, "hostname": "h1", "nonce": nonce, **real.registration_proof(nonce, token, host_uuid)}
    assert client.post("/api/v1/agent/register", json=captured).json()["agent_token"] is None
    client.post(f"/api/v1/hosts/{host['id']}/confirm", json={"thumbprint": real.thumbprint}, headers=auth)
    replay = client.post("/api/v1/agent/register", json=captured)
    assert replay.status_code == 401 and replay.json()["code"] == "REGISTRATION_NONCE_STALE", replay.text

    # An expired nonce (minted by this server for this token and state, long ago).
    key = _nonce_key(settings)
    with client.app.state.runtime.transaction() as session:
        from sqlalchemy import select

        from vcenter.db.models import Host

        row = session.scalar(select(Host).where(Host.id == host["id"]))
        token_hash, state = row.registration_token_hash, row.trust_state
    old, _ = registration.mint_nonce(key, token_hash, state, utcnow() - timedelta(seconds=registration.NONCE_TTL + 5))
    expired = client.post("/api/v1/agent/register", json={**captured, "nonce": old, **real.registration_proof(old, token, host_uuid)})
    assert expired.status_code == 401 and expired.json()["code"] == "REGISTRATION_NONCE_EXPIRED", expired.text

    # A nonce forged without the server key, and one issued for another host's token.
    forged, _ = registration.mint_nonce(b"k" * 32, token_hash, state, utcnow())
    r = client.post("/api/v1/agent/register", json={**captured, "nonce": forged, **real.registration_proof(forged, token, host_uuid)})
    assert r.status_code == 401 and r.json()["code"] == "BAD_REGISTRATION_NONCE", r.text
    other = client.post("/api/v1/hosts", json={"name": "h2", "datacenter_id": dc["id"]}, headers=auth).json()
    foreign = _nonce(client, other["registration_token"])
    r = client.post("/api/v1/agent/register", json={**captured, "nonce": foreign, **real.registration_proof(foreign, token, host_uuid)})
    assert r.status_code == 401 and r.json()["code"] == "BAD_REGISTRATION_NONCE", r.text
    for garbage in ("x", "v1.99999999999999999999.a.b", "v1..a.b"):
        r = client.post("/api/v1/agent/register", json={**captured, "nonce": garbage, **real.registration_proof(garbage, token, host_uuid)})
        assert r.status_code == 401 and r.json()["code"] == "BAD_REGISTRATION_NONCE", r.text

    # None of that gave a credential; the genuine request does, once (the token is consumed).
    answer = agent_register(client, real, token, host_uuid, "h1").json()
    assert answer["agent_token"]
    _agent_works(client, host, answer)
    again = client.post("/api/v1/agent/register", json=captured)
    assert again.status_code == 401 and again.json()["code"] == "BAD_REGISTRATION_TOKEN"


def test_signature_by_another_key_or_over_other_fields_is_refused(ctx):
    client, auth, dc, settings = ctx
    host = client.post("/api/v1/hosts", json={"name": "h1", "datacenter_id": dc["id"]}, headers=auth).json()
    token, host_uuid = host["registration_token"], str(uuid.uuid4())
    real, other = new_identity("h1"), new_identity("other")
    nonce = _nonce(client, token)
    message = registration.signed_message(nonce, token, host_uuid)
    cases = {
        "another key": _body(token, host_uuid, nonce, real.cert_pem, other.key.sign(message, ec.ECDSA(hashes.SHA256()))),
        "another host UUID signed": _body(token, host_uuid, nonce, real.cert_pem, real.key.sign(registration.signed_message(nonce, token, str(uuid.uuid4())), ec.ECDSA(hashes.SHA256()))),
        "another nonce signed": _body(token, host_uuid, nonce, real.cert_pem, real.key.sign(registration.signed_message(_nonce(client, token), token, host_uuid), ec.ECDSA(hashes.SHA256()))),
        "not base64": {**_body(token, host_uuid, nonce, real.cert_pem, b""), "signature": "***"},
        "not a certificate": {
            **_body(token, host_uuid, nonce, real.cert_pem, real.key.sign(message, ec.ECDSA(hashes.SHA256()))),
            "certificate": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        },
    }
    for what, body in cases.items():
        r = client.post("/api/v1/agent/register", json=body)
        assert r.status_code == 401 and r.json()["code"] == "BAD_REGISTRATION_PROOF", (what, r.text)
    # Nothing was registered by those: the host still waits for its agent.
    assert client.get(f"/api/v1/hosts/{host['id']}", headers=auth).json()["trust_state"] == "awaitingAgent"
    assert agent_register(client, real, token, host_uuid, "h1").json()["trust_state"] == "awaitingConfirmation"
