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
# Operations answering a JSON document without a declared schema (a dict built by the service):
# no schema to carry an example yet. Not to grow: a new operation declares its response_model.
UNTYPED = {
    "GET /api/v1/agent/hosts/{host_id}/seeds/{vm_uuid}",
    "GET /api/v1/agent/hosts/{host_id}/uploads/{upload_id}/content",
    "GET /api/v1/clusters/{cluster_id}/drs/recommendations",
    "GET /api/v1/clusters/{cluster_id}/entitlements",
    "GET /api/v1/clusters/{cluster_id}/ha/capacity",
    "GET /api/v1/clusters/{cluster_id}/ha/status",
    "GET /api/v1/clusters/{cluster_id}/rules-violations",
    "GET /api/v1/templates",
    "GET /api/v1/templates/{template_id}",
    "GET /api/v1/templates/{template_id}/dependents",
    "GET /api/v1/uploads",
    "GET /api/v1/uploads/{upload_id}",
    "GET /api/v1/uploads/{upload_id}/appliance",
    "GET /api/v1/uploads/{upload_id}/content",
    "GET /api/v1/vms/{vm_id}/customization",
    "GET /api/v1/vms/{vm_id}/migrate/check",
    "POST /api/v1/agent/hosts/{host_id}/events",
    "POST /api/v1/agent/hosts/{host_id}/metrics",
    "POST /api/v1/agent/hosts/{host_id}/state",
    "POST /api/v1/agent/hosts/{host_id}/tasks/{task_id}/progress",
    "POST /api/v1/agent/hosts/{host_id}/tasks/{task_id}/result",
    "POST /api/v1/clusters/{cluster_id}/dpm/run",
    "POST /api/v1/clusters/{cluster_id}/drs/recommendations/{rec_id}/apply",
    "POST /api/v1/clusters/{cluster_id}/drs/recommendations/{rec_id}/dismiss",
    "POST /api/v1/clusters/{cluster_id}/drs/run",
    "POST /api/v1/clusters/{cluster_id}/drs/whatif",
    "POST /api/v1/clusters/{cluster_id}/placement",
    "POST /api/v1/uploads",
    "PUT /api/v1/agent/hosts/{host_id}/uploads/{upload_id}/content",
}


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
            if where not in UNTYPED and not text and not _exemplified(document, schema):
                problems.append(f"{where}: {what} schema without examples")
    return problems


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
    assert sorted(contract_problems(broken)) == [
        "GET /api/v1/datacenters: errors [401, 422] not documented",
        "GET /api/v1/datacenters: no description",
        "GET /api/v1/datacenters: no error answer documented",
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
