"""Make vcenter.subset.json and cis.subset.json from the upstream specification: the
operations the vSphere-compatible API serves, and every schema they reach (README.md).

    python tests/data/vsphere/subset.py <dir with upstream vcenter.json and cis.json>
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REF = re.compile(r'"#/components/schemas/([^"]+)"')
KINDS = ["datacenter", "cluster", "host", "datastore", "network", "folder", "resource-pool", "vm"]
GETS = ["datacenter/{datacenter}", "cluster/{cluster}", "datastore/{datastore}", "resource-pool/{resource_pool}", "vm/{vm}"]
GETS += [
    f"vm/{{vm}}/{part}" for part in ("power", "hardware", "hardware/cpu", "hardware/memory", "hardware/boot", "hardware/disk", "hardware/disk/{disk}", "hardware/ethernet", "hardware/ethernet/{nic}")
]
ERRORS = [
    "already_exists",
    "already_in_desired_state",
    "internal_server_error",
    "invalid_argument",
    "invalid_request",
    "not_allowed_in_current_state",
    "not_found",
    "resource_busy",
    "service_unavailable",
    "unable_to_allocate_resource",
    "unauthenticated",
    "unauthorized",
    "error",
]


def subset(source: Path, paths: dict[str, set[str]], target: Path, extra: list[str]) -> None:
    doc = json.loads(source.read_text())
    schemas = doc["components"]["schemas"]
    kept = {p: {m: op for m, op in doc["paths"][p].items() if m in methods} for p, methods in paths.items()}
    seen: set[str] = set()
    stack = REF.findall(json.dumps(kept)) + [e for e in extra if e in schemas]
    while stack:
        name = stack.pop()
        if name not in seen:
            seen.add(name)
            stack += REF.findall(json.dumps(schemas[name]))
    out = {"openapi": doc["openapi"], "info": doc["info"], "paths": kept, "components": {"schemas": {k: schemas[k] for k in sorted(seen)}}}
    target.write_text(json.dumps(out, indent=1, sort_keys=True))


def main(upstream: Path) -> None:
    paths = {f"/rest/vcenter/{k}": {"get"} for k in KINDS} | {f"/rest/vcenter/{g}": {"get"} for g in GETS}
    subset(upstream / "vcenter.json", paths, HERE / "vcenter.subset.json", [f"vapi.std.errors.{e}" for e in ERRORS])
    cis = {"/rest/com/vmware/cis/session": {"post", "delete"}, "/rest/com/vmware/cis/session?~action=get": {"post"}}
    subset(upstream / "cis.json", cis, HERE / "cis.subset.json", [])


if __name__ == "__main__":
    main(Path(sys.argv[1]))
