"""Fuzzing our own OpenAPI with schemathesis (fixed seed: hypothesis derandomized) on
PostgreSQL, authenticated as an administrator and as a read-only user: no 5xx, responses
match their declared schemas, at least 30 % of the administrator's requests succeed (so a
wall of 401s or 422s cannot pass), and the read-only user never gets a 2xx on a write.

/session is left to its own tests, and the agent routes (host credentials) to theirs. Path
parameters naming inventory objects get the ids of a seeded inventory, so that requests reach
the code behind the lookups instead of stopping at 404. A "write" is a request to a route
that declares a privilege beyond System.View (a dry run sent as POST is a read)."""
from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from tests.apihelpers import finish_as_agent, login, make_admin, register_host
from tests.conftest import fresh_postgres, make_settings
from tests.integration.test_permissions import api_routes, declared_privileges
from vcenter.api.app import create_app

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 6
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
METHOD_ORDER = {"GET": 0, "POST": 1, "PUT": 1, "PATCH": 2, "DELETE": 3}


def _seed(client: TestClient, admin: dict) -> dict[str, int]:
    dc = client.post("/api/v1/datacenters", headers=admin, json={"name": "dc1"}).json()
    cl = client.post("/api/v1/clusters", headers=admin, json={"name": "cl1", "datacenter_id": dc["id"]}).json()
    host, agent = register_host(client, admin, dc["id"], "h1", cluster_id=cl["id"])
    state = {"facts": {"hostname": "h1", "cpu_model": "Skylake", "cpu_cores": 4, "cpu_mhz": 2000, "memory_mib": 8192, "hypervisor": "qemu"}, "domains": []}
    client.post(f"/api/v1/agent/hosts/{host['id']}/state", json=state, headers=agent)
    folder = client.post("/api/v1/folders", headers=admin, json={"name": "f1", "datacenter_id": dc["id"]}).json()
    pool = client.post("/api/v1/pools", headers=admin, json={"name": "p1", "cluster_id": cl["id"]}).json()
    ds = client.post("/api/v1/datastores", headers=admin, json={"name": "ds1", "datacenter_id": dc["id"], "url": "/srv/ds1"}).json()
    pg = client.post("/api/v1/portgroups", headers=admin, json={"name": "pg1", "datacenter_id": dc["id"]}).json()
    task = client.post("/api/v1/vms", headers=admin, json={"name": "vm1", "host_id": host["id"], "memory_mib": 64, "folder_id": folder["id"]}).json()
    vm = finish_as_agent(client, client.app.state.runtime.settings, agent, task)
    return {"datacenter": dc["id"], "cluster": cl["id"], "host": host["id"], "folder": folder["id"], "pool": pool["id"],
            "datastore": ds["id"], "portgroup": pg["id"], "vm": vm["id"], "task": task["id"]}


_COLLECTION_KIND = {"datacenters": "datacenter", "clusters": "cluster", "hosts": "host", "folders": "folder", "pools": "pool",
                    "datastores": "datastore", "portgroups": "portgroup", "vms": "vm", "tasks": "task"}


def _known_ids(path: str, parameters: dict, ids: dict[str, int]) -> dict:
    fixed = dict(parameters or {})
    for name in fixed:
        kind = name[:-3] if name.endswith("_id") else None
        if name == "object_id":
            kind = _COLLECTION_KIND.get(path.split("/")[3])
        if kind in ids:
            fixed[name] = ids[kind]
    return fixed


def test_fuzz_the_api_as_administrator_and_read_only(tmp_path):
    from vcenter.db.migrate import upgrade

    settings = make_settings(tmp_path, database_url=fresh_postgres())
    upgrade(settings.database_url)
    make_admin(settings)
    app = create_app(settings)
    with TestClient(app) as client:
        admin = login(client)
        ids = _seed(client, admin)
        viewer = client.post("/api/v1/users", headers=admin, json={"username": "viewer", "password": "viewer-password"}).json()
        read_only = next(r["id"] for r in client.get("/api/v1/roles", headers=admin).json() if r["name"] == "Read-only")
        client.post("/api/v1/permissions", headers=admin, json={"principal_type": "user", "principal_id": viewer["id"], "role_id": read_only, "object_type": "root", "object_id": 0})
        reader = login(client, "viewer", "viewer-password")

        # A POST that changes nothing (placement dry run, DRS what-if) declares System.View:
        # a write is whatever needs more than that.
        reads = {(m, r.path) for r in api_routes(app) for m in r.methods
                 if {c.privilege for c in declared_privileges(r)} <= {"System.View"}}
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = [result.ok() for result in schema.get_all_operations()]
        operations = [op for op in operations if not op.path.startswith(("/api/v1/session", "/api/v1/agent/")) and op.path.startswith("/api/")]
        operations.sort(key=lambda op: METHOD_ORDER.get(op.method.upper(), 1))
        admin_statuses: Counter[int] = Counter()
        reader_writes_ok: list[str] = []
        failures: list[str] = []

        for operation in operations:
            @hypothesis_settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, database=None, deadline=None,
                                 suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
            @given(case=operation.as_strategy())
            def exercise(case):
                case.path_parameters = _known_ids(operation.path, case.path_parameters, ids)
                method = case.method.upper()
                as_reader = case.call(headers=reader)
                if as_reader.status_code >= 500:
                    failures.append(f"reader {method} {case.formatted_path}: {as_reader.status_code}")
                if method in WRITE_METHODS and (method, operation.path) not in reads and 200 <= as_reader.status_code < 300:
                    reader_writes_ok.append(f"{method} {case.formatted_path} -> {as_reader.status_code}")
                response = case.call(headers=admin)
                admin_statuses[response.status_code] += 1
                try:
                    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance, content_type_conformance], headers=admin)
                except (Exception, BaseExceptionGroup) as exc:  # collect every operation's failure, then report them together
                    failures.append(f"admin {method} {case.formatted_path} -> {response.status_code}: {str(exc)[:300]}")

            exercise()

    total = sum(admin_statuses.values())
    ok = sum(n for status, n in admin_statuses.items() if 200 <= status < 300)
    print(f"fuzz: {len(operations)} operations, {total} administrator requests, statuses {dict(sorted(admin_statuses.items()))}")
    assert not failures, "\n".join(failures[:40])
    assert not reader_writes_ok, reader_writes_ok
    assert total >= len(operations) * 2
    assert ok / total >= 0.30, f"only {ok}/{total} administrator requests got a 2xx: {dict(admin_statuses)}"
