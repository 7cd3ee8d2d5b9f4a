"""Examples in JSON schemas: every field of an ExampleModel shows an example in the OpenAPI
document (vcenter.schemas.base builds every API schema on it, vcenter.messaging.contracts the
agents' reports).

A field's example is, first, the one it declares (``Field(examples=[...])``), then its
default, then the value ``EXAMPLES`` has for its name, then one made from its type within its
bounds (``example_for``): a client generated from the OpenAPI document, a fuzzer and a reader of
/docs see what a value looks like. A field an example cannot be made for (a pattern no word of
EXAMPLES fits) declares its own. A field naming another model has that model's examples.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict

# Examples by field name: the values a reader of the inventory meets.
EXAMPLES: dict[str, Any] = {
    "id": 42,
    "name": "web1",
    "username": "alice",
    "hostname": "esx1.lab.example",
    "address": "192.0.2.10",
    "ip": "192.0.2.10",
    "gateway": "192.0.2.1",
    "mac": "52:54:00:12:34:56",
    "bridge": "br0",
    "description": "web tier",
    "message": "task vm.powerOn on vm 7 succeeded",
    "reason": "BAD_CREDENTIALS",
    "code": "VM_NOT_FOUND",
    "error_code": "MIGRATION_FAILED",
    "error_message": "the destination refused the migration",
    "version": 3,
    "memory_mib": 2048,
    "vcpus": 2,
    "power_state": "poweredOn",
    "connection_state": "connected",
    "object_type": "vm",
    "kind": "vm.powerOn",
    "state": "running",
    "step": "running",
    "progress": 50,
    "uuid": "6f1c1a7e-2b9d-4c3e-8a51-3f0e2d9b7c10",
    "host_uuid": "6f1c1a7e-2b9d-4c3e-8a51-3f0e2d9b7c10",
    "libvirt_uri": "qemu:///system",
    "password": "correct horse battery staple",
    "thumbprint": "SHA256:3f:9a:0c:7e:51:b2:44:d8:19:6a:2e:c0:75:8b:aa:01:5d:e3:92:47:0f:6c:b8:13:2a:e5:c9:77:40:1b:d6:e8",
    "hypervisor": "QEMU",
    "cpu_model": "Skylake-Server",
    "path": "/var/lib/vcenter/datastores/ds1",
    "directory": "/var/lib/vcenter/datastores/ds1",
    "url": "/api/v1/tasks/42",
    "format": "qcow2",
    "unit": "percent",
    "counter": "cpu.usage",
    "tier": "realtime",
    "principal_type": "user",
    "target_type": "vm",
    "scope_type": "cluster",
    "isolation_response": "none",
}
DATETIME_EXAMPLE = "2026-01-01T00:00:00Z"
# Examples by JSON Schema format (documentation addresses of RFC 5737 and RFC 3849).
FORMAT_EXAMPLES = {
    "uuid": EXAMPLES["uuid"],
    "ipv4": "192.0.2.10",
    "ipv6": "2001:db8::10",
    "ipvanyaddress": "192.0.2.10",
    "ipv4network": "192.0.2.0/24",
    "ipv4interface": "192.0.2.10/24",
    "date": "2026-01-01",
    "uri": "https://vcenter.example/",
    "email": "alice@example.com",
    "hostname": "esx1.lab.example",
}


def _fits(value: Any, schema: dict[str, Any]) -> bool:
    """Whether ``value`` satisfies the constraints of ``schema`` an example must keep."""
    if "enum" in schema:
        return value in schema["enum"]
    kind = schema.get("type")
    if kind == "string":
        return (
            isinstance(value, str)
            and schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value))
            and (not schema.get("pattern") or re.search(schema["pattern"], value) is not None)
        )
    if kind in ("integer", "number"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "integer" and not isinstance(value, int)):
            return False
        low, high = schema.get("minimum"), schema.get("maximum")
        above, below = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        return (low is None or value >= low) and (high is None or value <= high) and (above is None or value > above) and (below is None or value < below)
    if kind == "boolean":
        return isinstance(value, bool)
    return True


def _number(schema: dict[str, Any], integer: bool) -> Any:
    for candidate in (7, 1, schema.get("minimum"), schema.get("maximum"), (schema.get("exclusiveMinimum") or 0) + 1):
        if candidate is not None:
            value = int(candidate) if integer else float(candidate)
            if _fits(value, schema):
                return value
    return None


def example_for(name: str, schema: dict[str, Any]) -> Any:
    """An example of field ``name`` with JSON schema ``schema``; None when none fits (or the
    field is a reference: the model it names has its own examples)."""
    if "default" in schema and schema["default"] is not None:
        return schema["default"]
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for branch in schema.get("anyOf", ()):
        if branch.get("type") != "null":
            return example_for(name, branch)
    if "$ref" in schema:
        return None
    if schema.get("type") == "string" and schema.get("format") in FORMAT_EXAMPLES:  # the format decides first
        return FORMAT_EXAMPLES[schema["format"]]
    known = EXAMPLES.get(name)
    if known is not None and _fits(known, schema):
        return known
    kind = schema.get("type")
    if kind == "string":
        if schema.get("format") == "date-time" or name.endswith("_at"):
            return DATETIME_EXAMPLE
        for candidate in (name.removesuffix("_name") or "example", "example", "x" * schema.get("minLength", 1)):
            if _fits(candidate, schema):
                return candidate
        return None
    if kind == "integer":
        return _number(schema, integer=True)
    if kind == "number":
        return _number(schema, integer=False)
    if kind == "boolean":
        return True
    if kind == "array":
        item = example_for(name.removesuffix("s"), schema.get("items", {}))
        return [item] if item is not None else ([] if schema.get("minItems", 0) == 0 else None)
    if kind == "object" or not schema:
        return {}
    return None


def fill_examples(schema: dict[str, Any], _model: type) -> None:
    """``json_schema_extra`` of every schema: an example on each field that has none."""
    for name, field in schema.get("properties", {}).items():
        if "examples" in field or "example" in field or "$ref" in field:
            continue
        value = example_for(name, field)
        if value is not None:
            field["examples"] = [value]


class ExampleModel(BaseModel):
    model_config = ConfigDict(json_schema_extra=fill_examples)
