"""`vcenter seed`: a consistent inventory from bulk inserts, on both databases, refused on a
database that already has hosts."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.apihelpers import app_for, login, make_admin
from vcenter.core.errors import Conflict
from vcenter.db.session import session_scope
from vcenter.services.inventory.seed import seed


def test_seed_fills_a_consistent_inventory(settings):
    with session_scope(settings.database_url) as session:
        result = seed(session, hosts=70, vms=500, datacenters=2, hosts_per_cluster=32)
    assert result.as_dict() == {"datacenters": 2, "clusters": 4, "hosts": 70, "datastores": 4, "portgroups": 8, "vms": 500}
    with session_scope(settings.database_url) as session, pytest.raises(Conflict):
        seed(session, hosts=1, vms=0)
    make_admin(settings)
    with TestClient(app_for(settings)) as client:
        auth = login(client)
        assert client.get("/api/v1/hosts", headers=auth, params={"connection_state": "connected"}).json()["total"] == 70
        vms = client.get("/api/v1/vms", headers=auth, params={"limit": 500}).json()
        assert vms["total"] == 500
        vm = client.get(f"/api/v1/vms/{vms['items'][123]['id']}", headers=auth).json()
        host = client.get(f"/api/v1/hosts/{vm['host_id']}", headers=auth).json()
        assert host["cluster_id"] == vm["cluster_id"] and host["datacenter_id"] == vm["datacenter_id"]
        assert len(vm["disks"]) == 1 and len(vm["nics"]) == 1
        ds = client.get(f"/api/v1/datastores/{vm['disks'][0]['datastore_id']}", headers=auth).json()
        assert vm["host_id"] in ds["host_ids"]
        assert client.get("/api/v1/vms", headers=auth, params={"name": "web-*"}).json()["total"] == 50
