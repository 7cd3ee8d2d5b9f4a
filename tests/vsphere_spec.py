"""Validate answers of the vSphere-compatible API against the upstream specification subset
(tests/data/vsphere/README.md): which schema an answer of ``GET /api/vcenter/...`` (or a session
route) must match, and the two translations between the legacy ``/rest`` description and the
``/api`` answers (no ``{"value"}`` wrapper; maps as JSON objects rather than key/value lists)."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema_rs

DATA = Path(__file__).resolve().parent / "data" / "vsphere"
# GET /api/vcenter/<kind>/{id} answers without an operation upstream: their list's Summary.
SUMMARY_ONLY = {"host": "vcenter.host.summary", "network": "vcenter.network.summary", "folder": "vcenter.folder.summary"}


@lru_cache(maxsize=2)
def document(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def as_rest(doc: dict[str, Any], schema: dict[str, Any], value: Any) -> Any:
    """``value`` as the /rest description writes it: a JSON object where the schema has a
    key/value list becomes that list (recursively)."""
    schema = _resolve(doc, schema)
    if schema.get("type") == "array":
        items = _resolve(doc, schema.get("items", {}))
        if isinstance(value, dict) and set(items.get("properties", {})) == {"key", "value"}:
            return [{"key": k, "value": as_rest(doc, items["properties"]["value"], v)} for k, v in value.items()]
        return [as_rest(doc, schema.get("items", {}), v) for v in value] if isinstance(value, list) else value
    if isinstance(value, dict) and "properties" in schema:
        return {k: as_rest(doc, schema["properties"][k], v) if k in schema["properties"] else v for k, v in value.items()}
    return value


def _schema_of(doc_name: str, path: str, method: str, status: int) -> tuple[dict[str, Any], bool]:
    """The schema of an answer and whether it is wrapped in ``{"value"}`` upstream."""
    doc = document(doc_name)
    op = doc["paths"][path][method]
    response = op["responses"].get(str(status))
    if response is None:
        raise LookupError(f"{method.upper()} {path} documents no {status}")
    return response["content"]["application/json"]["schema"], True


def error_schema(doc: dict[str, Any], error_type: str) -> dict[str, Any]:
    name = f"vapi.std.errors.{error_type.lower()}"
    return {"$ref": f"#/components/schemas/{name if name in doc['components']['schemas'] else 'vapi.std.errors.error'}"}


def _check(doc: dict[str, Any], schema: dict[str, Any], instance: Any) -> list[str]:
    full = {**schema, "components": doc["components"]}
    validator = jsonschema_rs.Draft4Validator(full)
    return [f"{'/'.join(str(p) for p in e.instance_path)}: {e.message}" for e in validator.iter_errors(instance)][:10]


def problems(method: str, api_path: str, status: int, body: Any) -> list[str]:
    """What in the answer ``body`` (status ``status``) to ``method api_path`` the upstream
    specification does not allow (empty: it validates)."""
    method = method.lower()
    if status >= 400:  # every error, of every path, is one of vapi.std.errors
        doc = document("vcenter.subset.json")
        return _check(doc, error_schema(doc, body.get("error_type", "ERROR")) if isinstance(body, dict) else {"type": "object"}, body)
    if api_path.startswith("/api/session") or api_path.startswith("/rest/com/vmware/cis/session"):
        doc = document("cis.subset.json")
        if api_path == "/api/session" and method == "post":
            return [] if isinstance(body, str) and body else [f"not a session id: {body!r}"]
        if api_path == "/api/session" and method == "get":
            return _check(doc, {"$ref": "#/components/schemas/cis.session.info"}, body)
        if api_path.startswith("/rest/com/vmware/cis/session") and method == "post":
            name = "cis.session_resp" if "~action=get" in api_path else "cis.session.create_resp"
            return _check(doc, {"$ref": f"#/components/schemas/{name}"}, body)
        return []
    doc = document("vcenter.subset.json")
    device = re.fullmatch(r"/api/vcenter/vm/[^/?]+/(power|hardware(?:/(?:cpu|memory|boot|disk|ethernet))?)(/[^/?]+)?", api_path.split("?")[0])
    if device is not None:
        part, key = device.groups()
        rest = f"/rest/vcenter/vm/{{vm}}/{part}" + ({"hardware/disk": "/{disk}", "hardware/ethernet": "/{nic}"}[part] if key else "")
        value_schema = _resolve(doc, _schema_of("vcenter.subset.json", rest, method, status)[0])["properties"]["value"]
        return _check(doc, value_schema, as_rest(doc, value_schema, body))
    match = re.fullmatch(r"/api/vcenter/([a-z-]+)(?:/([^/?]+))?", api_path.split("?")[0])
    if match is None:
        raise LookupError(api_path)
    kind, one = match.groups()
    if one is not None and kind in SUMMARY_ONLY:
        schema = {"$ref": f"#/components/schemas/{SUMMARY_ONLY[kind]}"}
        return _check(doc, schema, as_rest(doc, schema, body))
    param = {"resource-pool": "resource_pool"}.get(kind, kind)
    rest = f"/rest/vcenter/{kind}" + (f"/{{{param}}}" if one is not None else "")
    wrapped, _ = _schema_of("vcenter.subset.json", rest, method, status)
    # /api answers the "value" of the /rest answer
    value_schema = _resolve(doc, wrapped)["properties"]["value"]
    return _check(doc, value_schema, as_rest(doc, value_schema, body))
