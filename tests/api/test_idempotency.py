"""Operations' Idempotency-Key (vcenter.services.tasks.idempotency): a retry answers the first
request's Task, a reused key with another request is refused, and two transactions racing on
one key (two API replicas) start one Task."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.apihelpers import app_for, login, make_admin, register_host
from vcenter.db.models import IdempotencyKey, Task
from vcenter.db.session import session_scope
from vcenter.services.access import auth as auth_service
from vcenter.services.tasks import idempotency
from vcenter.services.tasks.events import bind_actor
from vcenter.services.tasks.tasks import start_task


@pytest.fixture
def client(settings):
    make_admin(settings)
    with TestClient(app_for(settings)) as c:
        yield c


@pytest.fixture
def auth(client):
    return login(client)


def _vm_body(client, auth):
    dc = client.post("/api/v1/datacenters", json={"name": "dc1"}, headers=auth).json()
    host, agent = register_host(client, auth, dc["id"], "h1")
    state = {"facts": {"hostname": "h1", "cpu_model": "Skylake", "cpu_cores": 2, "cpu_mhz": 2000, "memory_mib": 4096, "hypervisor": "qemu"}, "domains": []}
    assert client.post(f"/api/v1/agent/hosts/{host['id']}/state", json=state, headers=agent).json()["accepted"]
    return {"name": "web1", "host_id": host["id"], "memory_mib": 64}


def _tasks(settings) -> int:
    with session_scope(settings.database_url) as session:
        return session.scalar(select(func.count()).select_from(Task))


def test_a_retry_with_the_same_key_answers_the_first_task(client, auth, settings):
    body = _vm_body(client, auth)
    key = {**auth, "Idempotency-Key": "create-web1-0001"}
    first = client.post("/api/v1/vms", json=body, headers=key)
    assert first.status_code == 202, first.text
    assert "idempotent-replayed" not in first.headers
    again = client.post("/api/v1/vms", json=body, headers=key)
    assert again.status_code == 202, again.text
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == first.headers["location"]
    assert _tasks(settings) == 1
    # The same key for another request: refused with its own code, nothing started.
    other = client.post("/api/v1/vms", json={**body, "name": "web2"}, headers=key)
    assert other.status_code == 422 and other.json()["code"] == "IDEMPOTENCY_KEY_REUSED", other.text
    assert other.json()["details"]["task_id"] == first.json()["id"]
    # A retry of an operation still running is its replay, not OBJECT_BUSY.
    vm_id = first.json()["object_id"]
    with session_scope(settings.database_url) as session:  # the create ended (as the agent's result would)
        task = session.get(Task, first.json()["id"])
        task.state = "success"
        from vcenter.services.tasks.tasks import release_object

        release_object(session, task)
        from vcenter.db.models import VirtualMachine

        session.get(VirtualMachine, vm_id).status = "ready"
    power = {**auth, "Idempotency-Key": "power-on-web1"}
    on = client.post(f"/api/v1/vms/{vm_id}/power/on", headers=power)
    assert on.status_code == 202, on.text
    retry = client.post(f"/api/v1/vms/{vm_id}/power/on", headers=power)
    assert retry.status_code == 202 and retry.json()["id"] == on.json()["id"], retry.text
    assert client.post(f"/api/v1/vms/{vm_id}/power/on", headers=auth).json()["code"] == "OBJECT_BUSY"
    assert _tasks(settings) == 2


def test_a_key_is_the_user_s_own_and_must_be_well_formed(client, auth, settings):
    body = _vm_body(client, auth)
    bad = client.post("/api/v1/vms", json=body, headers={**auth, "Idempotency-Key": "has space"})
    assert bad.status_code == 422 and bad.json()["code"] == "INVALID_IDEMPOTENCY_KEY"
    long = client.post("/api/v1/vms", json=body, headers={**auth, "Idempotency-Key": "k" * 201})
    assert long.status_code == 422 and long.json()["code"] == "INVALID_IDEMPOTENCY_KEY"
    assert _tasks(settings) == 0
    first = client.post("/api/v1/vms", json=body, headers={**auth, "Idempotency-Key": "shared"})
    assert first.status_code == 202
    with session_scope(settings.database_url) as session:
        auth_service.create_user(session, "second-admin", "another-pass-phrase", is_admin=True)
    other = {**login(client, "second-admin", "another-pass-phrase"), "Idempotency-Key": "shared"}
    # Another user's same key is another operation (here refused: the name is taken).
    assert client.post("/api/v1/vms", json=body, headers=other).json()["code"] != "IDEMPOTENCY_KEY_REUSED"


def test_every_operation_answering_a_task_documents_the_header(client):
    document = client.get("/openapi.json").json()
    taking = [(path, method) for path, item in document["paths"].items() for method, operation in item.items() if any(p["name"] == "Idempotency-Key" for p in operation.get("parameters", []))]
    answering = [(path, method) for path, item in document["paths"].items() for method, operation in item.items() if "Location" in operation.get("responses", {}).get("202", {}).get("headers", {})]
    assert ("/api/v1/vms/{vm_id}/power/on", "post") in taking
    assert sorted(taking) == sorted(answering)


def test_two_transactions_racing_on_one_key_start_one_task(settings):
    make_admin(settings)
    with session_scope(settings.database_url) as session:
        user = auth_service.list_users(session)[0]
        user_id, username = user.id, user.username
    outcomes: list[object] = []
    first_bound = threading.Event()
    release_first = threading.Event()

    def attempt(wait_for_first: bool) -> None:
        bind_actor(user_id, username)
        token = idempotency.begin("race", idempotency.fingerprint("POST", "/api/v1/vms/1/power/on", b""), settings)
        try:
            with session_scope(settings.database_url) as session:
                task = start_task(session, kind="vm.power_on", object_type="vm", object_id=1, username=username)
                outcomes.append(task.id)
                if not wait_for_first:
                    first_bound.set()
                    assert release_first.wait(20)
        except idempotency.IdempotentReplay as replay:
            outcomes.append(("replay", replay.task_id))
        finally:
            idempotency.end(token)

    first = threading.Thread(target=attempt, args=(False,))
    first.start()
    assert first_bound.wait(20)
    second = threading.Thread(target=attempt, args=(True,))
    second.start()
    if settings.database_url.startswith("postgresql"):
        # The second waits on the unique index while the first's transaction is open.
        second.join(1.0)
        assert second.is_alive()
    release_first.set()
    first.join(20)
    second.join(20)
    assert len(outcomes) == 2 and outcomes[1] == ("replay", outcomes[0]), outcomes
    with session_scope(settings.database_url) as session:
        assert session.scalar(select(func.count()).select_from(Task)) == 1
        assert session.scalar(select(func.count()).select_from(IdempotencyKey)) == 1


def test_keys_older_than_the_retention_are_purged_and_start_anew(client, auth, settings):
    from datetime import timedelta

    from vcenter.core.clock import utcnow

    body = _vm_body(client, auth)
    key = {**auth, "Idempotency-Key": "old-key"}
    first = client.post("/api/v1/vms", json=body, headers=key)
    with session_scope(settings.database_url) as session:
        session.scalar(select(IdempotencyKey)).created_at = utcnow() - timedelta(seconds=settings.idempotency_retention + 1)
    with session_scope(settings.database_url) as session:
        assert idempotency.purge(session, settings) == 1
    # Expired: the key is free again (here the name web1 is taken by the first VM).
    again = client.post("/api/v1/vms", json=body, headers=key)
    assert again.status_code == 409 and again.json()["code"] != "IDEMPOTENCY_KEY_REUSED", again.text
    assert first.status_code == 202
