"""The OpenAPI document as a contract tools can build on (issue 18 item 2):

- every operation has a stable ``operationId``: its route's name (``list_datacenters``,
  ``get_host``, ``migrate_vm``), unique across the document, never FastAPI's generated
  ``<name>_api_v1_<path>_<method>`` that changes with the path;
- one resource, one path parameter name: ``/hosts/{host_id}`` on every route of a host (the
  inventory's CRUD routes said ``{object_id}``);
- the credential is the ``bearerAuth`` security scheme on every operation that needs one (no
  ``Authorization`` header parameter anywhere), and the public operations declare none.

- every operation satisfies ``contract_problems``: security unless public, its error answers
  documented with the real error body, ``Location`` declared on a 202 answering a Task (and,
  since the third stage, a description and examples); a deliberately broken operation proves
  the check fails;
- every route of /api/v1 carries /api/v1's own error mapping (vcenter.api.v1.V1Route).

One OpenAPI generation per test process (the module's fixture), no HTTP request.
(tests/api/test_api_fuzz.py checks the scheme's shape for the fuzzer; the 401 answers are the
security tests'.)
"""

from __future__ import annotations

import copy
import re
from collections import Counter

import pytest

from tests.conftest import make_settings
from vcenter.api.app import create_app
from vcenter.api.v1 import V1Route

METHODS = {"get", "put", "post", "patch", "delete", "head", "options"}
# Operations anyone may call: logging in, an agent's registration (its own proofs), health.
PUBLIC = {"login", "register_challenge", "register", "livez", "readyz"}


ERROR_REF = "#/components/schemas/ErrorBody"
# Media types of text answers (no fields, no examples): every other non-JSON answer is a file's
# bytes, documented as a binary string.
TEXT_MEDIA = {"text/plain", "text/event-stream", "application/x-ndjson"}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    return create_app(make_settings(tmp_path_factory.mktemp("openapi")))


@pytest.fixture(scope="module")
def document(app):
    return app.openapi()


def contract_problems(document: dict) -> list[str]:
    """What each operation of ``document`` lacks of the contract (docs/api.md), one line each."""
    problems = []
    for path, method, op in _operations(document):
        where = f"{method.upper()} {path}"
        public = op.get("operationId") in PUBLIC
        responses = op.get("responses", {})
        if not public and op.get("security") != [{"bearerAuth": []}]:
            problems.append(f"{where}: no bearerAuth security")
        errors = {int(status): r for status, r in responses.items() if status[0] in "45"}
        if not errors and path.startswith("/api/"):
            problems.append(f"{where}: no error answer documented")
        for status, answer in errors.items():
            if where == "GET /readyz" and status == 503:  # the health answer, naming the check that failed
                continue
            if answer.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref") != ERROR_REF:
                problems.append(f"{where}: {status} without the error body schema")
        parameters = op.get("parameters", [])
        needed = {401} if op.get("security") else set()
        needed |= {404, 422} if any(p["in"] == "path" for p in parameters) else set()
        needed |= {422} if parameters or "requestBody" in op else set()
        missing = sorted(needed - set(errors))
        if missing:
            problems.append(f"{where}: errors {missing} not documented")
        if "202" in responses and "Location" not in responses["202"].get("headers", {}):
            problems.append(f"{where}: 202 without a Location header")
        if len(op.get("description", "")) < 20:
            problems.append(f"{where}: no description")
        bodies = [("request", c.get("schema", {})) for c in op.get("requestBody", {}).get("content", {}).values()]
        bodies += [(f"{status} answer", c.get("schema", {})) for status, r in responses.items() for c in r.get("content", {}).values()]
        for what, schema in bodies:
            text = schema.get("type") == "string"  # a text answer (Prometheus, NDJSON): no fields
            if not text and not _exemplified(document, schema):
                problems.append(f"{where}: {what} schema without examples")
        for status, answer in responses.items():
            if status[0] != "2" or status == "204":
                continue
            content = answer.get("content", {})
            if not content:
                problems.append(f"{where}: {status} answer without a documented body")
            for media, body in content.items():
                schema = body.get("schema", {})
                if media == "application/json" and not _typed(schema):
                    problems.append(f"{where}: {status} answer without a response schema")
                elif media != "application/json" and media not in TEXT_MEDIA and schema != {"type": "string", "format": "binary"}:
                    problems.append(f"{where}: {status} {media} answer not a binary string")
    return problems


def _typed(schema: dict) -> bool:
    """A JSON answer's schema names its fields: a model, or a list of typed items (``{}`` and
    a bare object are what an untyped ``dict``/``Any`` answer documents)."""
    if "$ref" in schema:
        return True
    if schema.get("type") == "array":
        return _typed(schema.get("items", {}))
    return bool(schema.get("properties"))


def _exemplified(document: dict, schema: dict, seen: frozenset = frozenset()) -> bool:
    """A schema shows an example: its own, or one on every field (fields naming another schema:
    that schema's)."""
    if {"examples", "example", "enum", "const"} & set(schema) or schema.get("type") == "null":  # a set of values is its own example
        return True
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return name in seen or _exemplified(document, document["components"]["schemas"][name], seen | {name})
    if schema.get("type") == "array":
        return _exemplified(document, schema.get("items", {}), seen)
    branches = schema.get("anyOf") or schema.get("oneOf")
    if branches:
        return all(_exemplified(document, b, seen) for b in branches)
    properties = schema.get("properties")
    return bool(properties) and all(_exemplified(document, p, seen) for p in properties.values())


def _operations(document):
    return [(path, method, op) for path, item in document["paths"].items() for method, op in item.items() if method in METHODS]


def test_operation_ids_are_route_names_unique_and_not_generated(document):
    operations = _operations(document)
    assert len(operations) > 150
    ids = [op.get("operationId") for _, _, op in operations]
    repeated = [name for name, n in Counter(ids).items() if n > 1]
    assert repeated == [] and None not in ids, repeated
    for (path, method, _), name in zip(operations, ids):
        assert re.fullmatch(r"[a-z][a-z0-9_]*", name), (path, method, name)
        assert "_api_v1_" not in name and not name.endswith(tuple(f"_{m}" for m in METHODS)), (path, method, name)
    by_id = {op["operationId"]: (method, path) for path, method, op in operations}
    assert by_id["list_datacenters"] == ("get", "/api/v1/datacenters")
    assert by_id["get_host"][0] == "get" and by_id["get_host"][1].startswith("/api/v1/hosts/{")
    assert by_id["migrate_vm"] == ("post", "/api/v1/vms/{vm_id}/migrate")


def test_the_token_is_a_security_scheme_never_a_header_parameter(document):
    assert document["components"]["securitySchemes"]["bearerAuth"]["type"] == "http"
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    for path, method, op in _operations(document):
        headers = [p["name"].lower() for p in op.get("parameters", []) if p["in"] == "header"]
        assert "authorization" not in headers, (path, method)
        if op["operationId"] in PUBLIC:
            assert not op.get("security"), (path, method)
        else:
            assert op.get("security") == [{"bearerAuth": []}], (path, method, op.get("security"))


def test_a_resource_has_one_path_parameter_name(document):
    names: dict[str, set[str]] = {}
    for path in document["paths"]:
        segments = path.split("/")
        for before, segment in zip(segments, segments[1:]):
            if segment.startswith("{") and not before.startswith("{"):
                names.setdefault(before, set()).add(segment)
    assert {k: v for k, v in names.items() if len(v) > 1} == {}
    for collection in ("datacenters", "folders", "clusters", "hosts", "datastores", "portgroups", "pools", "vms"):
        assert names[collection] == {"{" + collection.removesuffix("s") + "_id}"}, collection


def test_every_operation_keeps_the_contract(document):
    assert contract_problems(document) == []


def test_the_contract_check_fails_on_a_broken_operation(document):
    broken = copy.deepcopy(document)
    migrate = broken["paths"]["/api/v1/vms/{vm_id}/migrate"]["post"]
    del migrate["security"]
    del migrate["responses"]["404"]
    migrate["responses"]["409"]["content"]["application/json"]["schema"] = {"$ref": "#/components/schemas/TaskRead"}
    del migrate["responses"]["202"]["headers"]
    broken["paths"]["/api/v1/datacenters"]["get"]["responses"] = {"200": broken["paths"]["/api/v1/datacenters"]["get"]["responses"]["200"]}
    del broken["paths"]["/api/v1/datacenters"]["get"]["description"]
    broken["components"]["schemas"]["DatacenterCreate"]["properties"]["name"].pop("examples")
    # an untyped answer (what a route returning a dict documents), and a file answered as text
    broken["paths"]["/api/v1/clusters/{cluster_id}/ha/status"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] = {"type": "object", "additionalProperties": True}
    download = broken["paths"]["/api/v1/uploads/{upload_id}/content"]["get"]["responses"]["200"]
    download["content"]["application/octet-stream"]["schema"] = {"type": "string"}
    assert sorted(contract_problems(broken)) == [
        "GET /api/v1/clusters/{cluster_id}/ha/status: 200 answer schema without examples",
        "GET /api/v1/clusters/{cluster_id}/ha/status: 200 answer without a response schema",
        "GET /api/v1/datacenters: errors [401, 422] not documented",
        "GET /api/v1/datacenters: no description",
        "GET /api/v1/datacenters: no error answer documented",
        "GET /api/v1/uploads/{upload_id}/content: 200 application/octet-stream answer not a binary string",
        "POST /api/v1/datacenters: request schema without examples",
        "POST /api/v1/vms/{vm_id}/migrate: 202 without a Location header",
        "POST /api/v1/vms/{vm_id}/migrate: 409 without the error body schema",
        "POST /api/v1/vms/{vm_id}/migrate: errors [404] not documented",
        "POST /api/v1/vms/{vm_id}/migrate: no bearerAuth security",
    ]


def test_errors_are_declared_from_what_the_operation_can_raise(document):
    """Not blanket: a read of a list cannot conflict nor name a missing object; a stream can
    be refused for too many streams; login answers no 403."""

    def statuses(path: str, method: str) -> set[str]:
        return {s for s in document["paths"][path][method]["responses"] if s[0] in "45"}

    assert statuses("/api/v1/vms", "get") == {"401", "403", "422"}
    assert statuses("/api/v1/vms/{vm_id}", "get") == {"401", "403", "404", "422"}
    assert statuses("/api/v1/vms/{vm_id}/power/on", "post") == {"401", "403", "404", "409", "422"}
    assert statuses("/api/v1/session", "post") == {"400", "401", "413", "415", "422", "429"}
    assert {"429", "503"} <= statuses("/api/v1/tasks/stream", "get")
    assert "409" not in statuses("/api/v1/session", "delete")


def test_every_api_route_maps_errors_by_the_api_s_own_mapping(app):
    from tests.api.test_permissions import api_routes

    routes = [r for r in api_routes(app) if r.path.startswith("/api/v1/")]
    assert len(routes) > 150
    assert [r.path for r in routes if not isinstance(getattr(r, "original_route", r), V1Route)] == []


def _answer_schema(document: dict, method: str, path: str, status: int) -> dict:
    """The documented JSON schema of one answer, its references resolvable (the document's
    components beside it)."""
    schema = document["paths"][path][method]["responses"][str(status)]["content"]["application/json"]["schema"]
    return {**schema, "components": document["components"]}


def test_answers_validate_against_their_documented_schemas(tmp_path):
    """A sample of the operations whose answers were untyped dicts before (the agent's
    reports, placement, DRS, DPM, HA, the VMotion check, uploads, templates), called on a
    cluster of two hosts with VMs: each real JSON body validates against the schema the
    document gives it; a download answers bytes with the media type the document names."""
    import jsonschema_rs
    from fastapi.testclient import TestClient

    from tests.apihelpers import app_for, finish_as_agent, login, make_admin, register_host
    from tests.conftest import migrated_sqlite

    settings = make_settings(tmp_path, database_url=migrated_sqlite(tmp_path / "vcenter.db"))  # one database suffices: the shapes are the routes'
    make_admin(settings)
    checked: list[str] = []
    with TestClient(app_for(settings)) as client:
        document = client.get("/openapi.json").json()
        auth = login(client)

        def call(method: str, path: str, url: str, status: int = 200, headers: dict | None = None, **kwargs) -> dict:
            r = client.request(method.upper(), url, headers=headers or auth, **kwargs)
            assert r.status_code == status, (method, url, r.status_code, r.text)
            errors = [e.message for e in jsonschema_rs.validator_for(_answer_schema(document, method, path, status)).iter_errors(r.json())]
            assert errors == [], (method, path, errors, r.json())
            checked.append(f"{method.upper()} {path}")
            return r.json()

        dc = client.post("/api/v1/datacenters", json={"name": "dc"}, headers=auth).json()
        cl = client.post("/api/v1/clusters", json={"name": "cl", "datacenter_id": dc["id"]}, headers=auth).json()
        hosts, agents = [], {}
        for name in ("h1", "h2"):
            host, agent = register_host(client, auth, dc["id"], name, cluster_id=cl["id"])
            facts = {"facts": {"hostname": name, "cpu_cores": 4, "cpu_mhz": 2000, "memory_mib": 4096}, "domains": []}
            answer = call("post", "/api/v1/agent/hosts/{host_id}/state", f"/api/v1/agent/hosts/{host['id']}/state", headers=agent, json=facts)
            assert answer["accepted"] is True and "error" not in answer  # a variant's absent fields stay absent
            hosts.append(host)
            agents[host["id"]] = agent
        h1, h2 = hosts
        vms = []
        for name in ("web1", "web2"):
            task = client.post("/api/v1/vms", json={"name": name, "host_id": h1["id"], "memory_mib": 256}, headers=auth).json()
            vms.append(finish_as_agent(client, settings, agents[h1["id"]], task))
            on = client.post(f"/api/v1/vms/{vms[-1]['id']}/power/on", headers=auth).json()
            finish_as_agent(client, settings, agents[h1["id"]], on, power_state="poweredOn")
        web1, web2 = vms

        agent_path = "/api/v1/agent/hosts/{host_id}"
        base = f"/api/v1/agent/hosts/{h1['id']}"
        assert call("post", agent_path + "/tasks/{task_id}/progress", base + "/tasks/999999/progress", headers=agents[h1["id"]], json={"command_id": "c", "step": "running"}) == {
            "proceed": False,
            "reason": "UNKNOWN_TASK",
        }
        call("post", agent_path + "/tasks/{task_id}/result", base + "/tasks/999999/result", headers=agents[h1["id"]], json={"command_id": "c", "ok": True})
        call(
            "post",
            agent_path + "/events",
            base + "/events",
            headers=agents[h1["id"]],
            json=[{"uuid": web1["libvirt_uuid"], "name": "web1", "event": "started", "reason": "booted", "power_state": "poweredOn", "at": "2026-01-01T00:00:00Z"}],
        )
        call("post", agent_path + "/metrics", base + "/metrics", headers=agents[h1["id"]], json={"interval_s": 20, "host": {"cpu.usage": 12.5}, "vms": []})

        rule = {"name": "apart", "kind": "anti-affinity", "mandatory": False, "vm_ids": [web1["id"], web2["id"]]}
        assert client.post(f"/api/v1/clusters/{cl['id']}/rules", json=rule, headers=auth).status_code == 201
        cluster = "/api/v1/clusters/{cluster_id}"
        at = f"/api/v1/clusters/{cl['id']}"
        assert call("get", cluster + "/rules-violations", at + "/rules-violations")[0]["rule"] == "apart"
        assert call("post", cluster + "/placement", at + "/placement", json={"memory_mib": 128})["candidates"]
        assert set(call("get", cluster + "/entitlements", at + "/entitlements")) == {str(web1["id"]), str(web2["id"])}
        call("post", cluster + "/drs/run", at + "/drs/run")
        # threshold 1 accepts any imbalance: an infinite target, answered as null (JSON has no
        # infinity: it was a 500)
        current = client.get(at, headers=auth).json()
        drs = {"enabled": False, "automation": "manual", "threshold": 1}
        assert client.patch(at, json={"settings": {**current["settings"], "drs": drs}, "version": current["version"]}, headers=auth).status_code == 200
        assert call("post", cluster + "/drs/run", at + "/drs/run")["target"] is None
        call("get", cluster + "/drs/recommendations", at + "/drs/recommendations")
        call("post", cluster + "/drs/whatif", at + "/drs/whatif", json={"kind": "host-fails", "host_id": h1["id"]})
        call("post", cluster + "/dpm/run", at + "/dpm/run")
        call("get", cluster + "/ha/capacity", at + "/ha/capacity")
        assert {h["name"] for h in call("get", cluster + "/ha/status", at + "/ha/status")["hosts"]} == {"h1", "h2"}
        check = call("get", "/api/v1/vms/{vm_id}/migrate/check", f"/api/v1/vms/{web1['id']}/migrate/check?host={h2['id']}")
        assert check["vm"] == web1["id"] and check["checks"]

        upload = call("post", "/api/v1/uploads", "/api/v1/uploads?filename=disk.img", status=201, content=b"\0" * 1024)
        assert call("get", "/api/v1/uploads/{upload_id}", f"/api/v1/uploads/{upload['id']}")["size_bytes"] == 1024
        call("get", "/api/v1/uploads", "/api/v1/uploads")
        call("get", "/api/v1/templates", "/api/v1/templates")
        download = client.get(f"/api/v1/uploads/{upload['id']}/content", headers=auth)
        documented = document["paths"]["/api/v1/uploads/{upload_id}/content"]["get"]["responses"]["200"]["content"]
        assert download.status_code == 200 and download.content == b"\0" * 1024
        assert list(documented) == [download.headers["content-type"]] == ["application/octet-stream"]
        assert download.headers["x-checksum-sha256"] == upload["sha256"]
    assert len(set(checked)) == 19, checked
    # the check can fail: a body off its schema (a wrong type, a field missing deep down)
    status_schema = jsonschema_rs.validator_for(_answer_schema(document, "get", "/api/v1/clusters/{cluster_id}/ha/status", 200))
    assert not status_schema.is_valid({"enabled": "yes", "monitor": {"token": 1, "owner": None, "frozen": None, "updated_at": None}, "hosts": [], "restarts": []})
    assert not status_schema.is_valid({"enabled": True, "monitor": {"token": 1, "owner": None, "frozen": None}, "hosts": [], "restarts": []})
