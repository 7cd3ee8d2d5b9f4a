"""A template's manifest: the JSON document stored beside its images.

Vocabulary: ``dir`` is the template's folder relative to its datastore
(``templates/<name>-v<version>-<id>``); each disk's ``file`` is relative to that folder; ``sha256``
is the checksum of the image file's bytes as stored; ``origin`` says where the template came
from ({"kind": "vm", "vm_name": ...} or {"kind": "import", ...}).
"""

from __future__ import annotations

import json
from typing import Any

MANIFEST_FILE = "manifest.json"
SCHEMA = 1


def template_dir(name: str, version: int, template_id: int) -> str:
    from vcenter.domain.datastore_paths import safe_file_name

    return f"templates/{safe_file_name(name)}-v{version}-{template_id}"


def build_manifest(*, template_id: int, name: str, version: int, guest_os: str, hardware: dict[str, Any], disks: list[dict[str, Any]], origin: dict[str, Any], created_at: str) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "template_id": template_id,
        "name": name,
        "version": version,
        "guest_os": guest_os,
        "hardware": hardware,
        "disks": disks,
        "origin": origin,
        "created_at": created_at,
    }


def dumps(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"


def loads(text: str) -> dict[str, Any]:
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("disks"), list):
        raise ValueError("not a template manifest of schema 1")
    return data
