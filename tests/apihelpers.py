"""Helpers for tests that drive the API in-process."""

from __future__ import annotations

import os
import time
import weakref
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from vcenter.api.app import bind, create_app
from vcenter.core.settings import Settings
from vcenter.db.session import session_scope
from vcenter.services.access import auth


# Applications built in this process, reused from test to test: FastAPI analyses every route on
# an application's first request (0.2-0.4 s of CPU), which once per test was a third of the API
# tier. The k-th application a test asks for is the k-th of this list, rebound to the test's
# own runtime (its settings, database, Redis) and fresh metrics: a test sees only its own.
_APPS: list[FastAPI] = []
_USE: dict[str, int] = {"test": 0}
_CURRENT = {"test": ""}


def app_for(settings: Settings) -> FastAPI:
    """The API application on ``settings``, as create_app(settings) builds it, for this test
    only: two asked for by one test are two applications."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
    if test != _CURRENT["test"]:
        _CURRENT["test"], _USE["test"] = test, 0
    index = _USE["test"]
    _USE["test"] += 1
    if index == len(_APPS):
        _APPS.append(create_app(settings))
        return _APPS[index]
    from vcenter.services.tasks.runtime import Runtime

    return bind(_APPS[index], Runtime.build(settings))


def make_admin(settings: Settings, username: str = "admin", password: str = "secret-pass-phrase") -> None:
    with session_scope(settings.database_url) as session:
        auth.create_user(session, username, password, is_admin=True)


def login(client: TestClient, username: str = "admin", password: str = "secret-pass-phrase") -> dict[str, str]:
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


def wait_reports(api, host_id: int, count: int = 2, timeout: float = 30.0) -> None:
    """Wait until host ``host_id`` has sent ``count`` full state reports after this call (its
    ``last_report_at`` took ``count`` new values): whatever a report would change is applied
    by then, so an absence checked afterwards is proven on reports, not on a sleep."""
    seen = {api.get(f"/api/v1/hosts/{host_id}").json()["last_report_at"]}

    def new_reports() -> bool:
        seen.add(api.get(f"/api/v1/hosts/{host_id}").json()["last_report_at"])
        return len(seen) > count

    wait_for(new_reports, timeout, what=f"{count} reports of host {host_id}")


def agent_register(client: TestClient, identity, registration_token: str, host_uuid: str, hostname: str):
    """Play one registration call of an agent holding ``identity`` (workers.agent.identity):
    ask for a nonce, sign it, register; answer the register response."""
    challenge = client.post("/api/v1/agent/register/challenge", json={"registration_token": registration_token})
    if challenge.status_code != 200:
        return challenge
    nonce = challenge.json()["nonce"]
    body = {"registration_token": registration_token, "host_uuid": host_uuid, "hostname": hostname, "nonce": nonce, **identity.registration_proof(nonce, registration_token, host_uuid)}
    return client.post("/api/v1/agent/register", json=body)


def register_host(client: TestClient, auth: dict[str, str], datacenter_id: int, name: str, host_uuid: str | None = None, cluster_id: int | None = None) -> tuple[dict, dict[str, str]]:
    """Add a host and play its agent's registration (a real key and certificate, a signed
    nonce) and the operator's confirmation; answer the host and the agent's request headers."""
    import uuid as uuidlib

    from workers.agent.identity import new_identity

    r = client.post("/api/v1/hosts", json={"name": name, "datacenter_id": datacenter_id, "cluster_id": cluster_id}, headers=auth)
    assert r.status_code == 201, r.text
    host = r.json()
    identity = new_identity(name)
    host_uuid = host_uuid or str(uuidlib.uuid4())
    first = agent_register(client, identity, host["registration_token"], host_uuid, name)
    assert first.status_code == 200 and first.json() == {"host_id": host["id"], "trust_state": "awaitingConfirmation", "agent_token": None, "command_public_key": None}, first.text
    r = client.post(f"/api/v1/hosts/{host['id']}/confirm", json={"thumbprint": identity.thumbprint}, headers=auth)
    assert r.status_code == 200, r.text
    second = agent_register(client, identity, host["registration_token"], host_uuid, name).json()
    assert second["trust_state"] == "trusted" and second["agent_token"] and second["command_public_key"].startswith("-----BEGIN PUBLIC KEY")
    return host, {"Authorization": f"Bearer {second['agent_token']}"}


def command_id_of(settings, task_id: int) -> str:
    """The command id the server sent for a task (read from the outbox, as the agent would get it)."""
    from sqlalchemy import select

    from vcenter.db.models import OutboxMessage

    with session_scope(settings.database_url) as session:
        rows = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id.desc())).all()
        return next(r.payload["command_id"] for r in rows if r.payload.get("task_id") == task_id)


def finish_as_agent(client: TestClient, settings, agent: dict[str, str], task: dict, power_state: str = "poweredOff") -> dict:
    """Play the host agent: report the task's command done, with the VM in ``power_state``."""
    vm = client.get(f"/api/v1/vms/{task['object_id']}", headers=agent_admin_headers(client)).json()
    cid = command_id_of(settings, task["id"])
    domain = {"uuid": vm["libvirt_uuid"], "name": vm["name"], "power_state": power_state}
    r = client.post(f"/api/v1/agent/hosts/{task['host_id']}/tasks/{task['id']}/result", json={"command_id": cid, "ok": True, "domain": domain}, headers=agent)
    assert r.json() == {"applied": True}, r.text
    return vm


# By the client object itself, forgotten with it: keyed by id(client), a later test's client
# at the same address got the token of an earlier test's database (401, then a KeyError).
_ADMIN_HEADERS: weakref.WeakKeyDictionary[TestClient, dict[str, str]] = weakref.WeakKeyDictionary()


def agent_admin_headers(client: TestClient) -> dict[str, str]:
    if client not in _ADMIN_HEADERS:
        _ADMIN_HEADERS[client] = login(client)
    return _ADMIN_HEADERS[client]


def start_lab_guests(api, guests: dict[str, tuple[str, str, str]], host_ids: dict[str, int], portgroups: dict[str, dict], datastore_id: int, power_on_timeout: float = 60) -> dict[str, int]:
    """Create and power on tiny Linux guests ``{name: (host, port group, address/prefix)}`` (96 MiB,
    an 8 MiB disk on ``datastore_id``, one NIC); their VM ids by name."""
    vms = {}
    for name, (host, pg, ip) in guests.items():
        task = api.post(
            "/api/v1/vms",
            json={
                "name": name,
                "host_id": host_ids[host],
                "memory_mib": 96,
                "kernel_boot": {"image": "tiny-linux", "ip": ip},
                "disks": [{"datastore_id": datastore_id, "capacity_mib": 8}],
                "nics": [{"portgroup_id": portgroups[pg]["id"]}],
            },
        ).json()
        done = wait_for(lambda: (t := api.get(f"/api/v1/tasks/{task['id']}").json())["state"] in ("success", "error") and t, 60, what=f"create {name}")
        assert done["state"] == "success", (name, done["error_code"], done["error_message"])
        vms[name] = done["object_id"]
    for name, vm_id in vms.items():
        on = api.post(f"/api/v1/vms/{vm_id}/power/on").json()
        done = wait_for(lambda: (t := api.get(f"/api/v1/tasks/{on['id']}").json())["state"] in ("success", "error") and t, power_on_timeout, what=f"power on {name}")
        assert done["state"] == "success", (name, done["error_code"], done["error_message"])
    return vms
