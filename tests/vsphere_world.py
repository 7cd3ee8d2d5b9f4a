"""The inventory the vSphere tests read, seeded through our own /api/v1 with simulated host
agents (tests.apihelpers): datacenter ``dc1`` with the lab's names (``cluster1`` of hosts
``esx1``, ``esx2``; the standalone ``esx3``; datastore ``shared1`` and a ``scratch`` one; port
group ``vm-network``; VM folder ``prod``; the cluster's root pool ``Resources`` holding pool ``pool1`` with ``pool1-child``; VMs ``web1``
(running, a disk and a NIC, in no folder), ``web2`` (in ``prod`` and ``pool1``) and ``db1``
(on the standalone host)), and a datacenter ``dc2`` with one VM ``hidden1``.

Users: ``admin``; ``auditor`` holding Read-only on the root but No access on ``dc2`` and on
``web2``; ``nobody`` without any permission."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from fastapi.testclient import TestClient

from tests.apihelpers import finish_as_agent, login, register_host

ADMIN = ("admin", "secret-pass-phrase")
AUDITOR = ("auditor", "auditor-pass-phrase-1")
NOBODY = ("nobody", "nobody-pass-phrase-1")
FACTS = {"cpu_model": "Skylake", "cpu_cores": 8, "cpu_mhz": 2400, "memory_mib": 16384, "hypervisor": "qemu"}


@dataclass
class World:
    ids: dict[str, int] = field(default_factory=dict)  # name -> our id


def basic(user: tuple[str, str]) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()}


def _ok(response: Any) -> Any:
    assert response.status_code in (200, 201, 202), f"{response.request.method} {response.request.url}: {response.status_code} {response.text}"
    return response.json()


def seed(client: TestClient, settings: Any) -> World:
    admin = login(client, *ADMIN)
    w = World()
    ids = w.ids

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        return _ok(client.post(f"/api/v1/{path}", headers=admin, json=body))

    ids["dc1"] = post("datacenters", {"name": "dc1"})["id"]
    ids["dc2"] = post("datacenters", {"name": "dc2"})["id"]
    ids["cluster1"] = post("clusters", {"name": "cluster1", "datacenter_id": ids["dc1"]})["id"]
    agents = {}
    for name, cluster in (("esx1", ids["cluster1"]), ("esx2", ids["cluster1"]), ("esx3", None), ("esx9", None)):
        dc = ids["dc2"] if name == "esx9" else ids["dc1"]
        host, agent = register_host(client, admin, dc, name, cluster_id=cluster)
        ids[name] = host["id"]
        agents[name] = agent
    pg = post("portgroups", {"name": "vm-network", "datacenter_id": ids["dc1"], "host_ids": [ids["esx1"], ids["esx2"], ids["esx3"]]})
    ids["vm-network"] = pg["id"]
    for name, agent in agents.items():
        bridges = [] if name == "esx9" else [pg["bridge"]]
        _ok(client.post(f"/api/v1/agent/hosts/{ids[name]}/state", json={"facts": {**FACTS, "hostname": name}, "domains": [], "bridges": bridges}, headers=agent))
    ids["shared1"] = post("datastores", {"name": "shared1", "datacenter_id": ids["dc1"], "url": "/srv/shared1", "host_ids": [ids["esx1"], ids["esx2"], ids["esx3"]]})["id"]
    ids["scratch"] = post("datastores", {"name": "scratch", "datacenter_id": ids["dc1"], "url": "/srv/scratch", "host_ids": [ids["esx1"]]})["id"]
    ids["ds9"] = post("datastores", {"name": "ds9", "datacenter_id": ids["dc2"], "url": "/srv/ds9", "host_ids": [ids["esx9"]]})["id"]
    ids["prod"] = post("folders", {"name": "prod", "datacenter_id": ids["dc1"]})["id"]
    ids["Resources"] = next(p["id"] for p in _ok(client.get("/api/v1/pools", headers=admin, params={"cluster_id": ids["cluster1"]}))["items"] if p["parent_id"] is None)
    ids["pool1"] = post("pools", {"name": "pool1", "cluster_id": ids["cluster1"]})["id"]
    ids["pool1-child"] = post("pools", {"name": "pool1-child", "cluster_id": ids["cluster1"], "parent_id": ids["pool1"]})["id"]

    def vm(name: str, host: str, power: str = "poweredOff", **body: Any) -> None:
        task = post("vms", {"name": name, "host_id": ids[host], "memory_mib": 256, "vcpus": 2, **body})
        ids[name] = finish_as_agent(client, settings, agents[host], task, power_state=power)["id"]

    vm("web1", "esx1", "poweredOn", disks=[{"datastore_id": ids["shared1"], "capacity_mib": 1024}], nics=[{"portgroup_id": ids["vm-network"]}], guest_os="linux")
    vm("web2", "esx2", folder_id=ids["prod"], pool_id=ids["pool1"])
    vm("db1", "esx3")
    vm("hidden1", "esx9")

    roles = {r["name"]: r["id"] for r in _ok(client.get("/api/v1/roles", headers=admin))}
    for user in (AUDITOR, NOBODY):
        ids[user[0]] = post("users", {"username": user[0], "password": user[1]})["id"]

    def grant(user: str, role: str, kind: str = "root", object_id: int = 0) -> None:
        post("permissions", {"principal_type": "user", "principal_id": ids[user], "role_id": roles[role], "object_type": kind, "object_id": object_id, "propagate": True})

    grant("auditor", "Read-only")
    grant("auditor", "No access", "datacenter", ids["dc2"])
    grant("auditor", "No access", "vm", ids["web2"])
    return w
