"""The OpenAPI document as a contract tools can build on (issue 18 item 2, its first part):

- every operation has a stable ``operationId``: its route's name (``list_datacenters``,
  ``get_host``, ``migrate_vm``), unique across the document, never FastAPI's generated
  ``<name>_api_v1_<path>_<method>`` that changes with the path;
- one resource, one path parameter name: ``/hosts/{host_id}`` on every route of a host (the
  inventory's CRUD routes said ``{object_id}``);
- the credential is the ``bearerAuth`` security scheme on every operation that needs one (no
  ``Authorization`` header parameter anywhere), and the public operations declare none.

(tests/api/test_api_fuzz.py checks the scheme's shape for the fuzzer; the 401 answers are the
security tests'.)
"""

from __future__ import annotations

import re
from collections import Counter

import pytest

from tests.conftest import make_settings
from vcenter.api.app import create_app

METHODS = {"get", "put", "post", "patch", "delete", "head", "options"}
# Operations anyone may call: logging in, an agent's registration (its own proofs), health.
PUBLIC = {"login", "register_challenge", "register", "livez", "readyz"}


@pytest.fixture(scope="module")
def document(tmp_path_factory):
    return create_app(make_settings(tmp_path_factory.mktemp("openapi"))).openapi()


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
