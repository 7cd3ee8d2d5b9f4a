"""A backup restored into an empty server manages the same hosts (issue 17, item 6): server A
with a real agent on a private libvirtd, a VM made; `vcenter backup`; A's processes stop; an
empty server B (its own database file and key directory, `vcenter db upgrade` run, so it has
a signing key of its own) gets `vcenter restore` and starts on A's URL and Redis. The agent,
never restarted, keeps reporting to B, and a power operation on the VM succeeds through B.
The API-tier checks of the archive itself: tests/api/test_server_backup.py."""

from __future__ import annotations

import os
import signal
import stat
from datetime import datetime

from tests.apihelpers import wait_for
from tests.libvirtd.test_agent_real import OwnRedis, power, virsh, wait_task
from vcenter.core.clock import utcnow
from vcenter.lab.stack import Stack


def stop_process(stack: Stack, name: str) -> None:
    proc = stack.processes[name]
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)


def test_a_backup_restored_into_an_empty_server_manages_the_same_host(tmp_path):
    own_redis = OwnRedis(tmp_path)
    own_redis.start()
    stack = Stack.create(tmp_path, None, own_redis.url, heartbeat_period=0.3, heartbeat_ttl=2, agent_report_period=1, host_monitor_period=0.5, reaper_period=1)
    try:
        stack.start_server()
        with stack.client() as api:
            dc = api.post("/api/v1/datacenters", json={"name": "dc1"}).json()
            host = stack.add_host("esx1", dc["id"])
            ds = api.post("/api/v1/datastores", json={"name": "ds1", "datacenter_id": dc["id"], "url": str(tmp_path / "ds1"), "host_ids": [host.host_id]}).json()
            wait_for(lambda: api.get(f"/api/v1/hosts/{host.host_id}").json()["connection_state"] == "connected", 60, what="host connected to A")
            task = api.post("/api/v1/vms", json={"name": "kept1", "host_id": host.host_id, "memory_mib": 32, "disks": [{"datastore_id": ds["id"], "capacity_mib": 16}]})
            created = wait_task(api, task.json())
            assert created["state"] == "success", created
            vm = api.get(f"/api/v1/vms/{created['object_id']}").json()

        archive = tmp_path / "server-a.tar.gz"
        assert "revision" in stack.run_cli("backup", str(archive))
        assert stat.S_IMODE(archive.stat().st_mode) == 0o600
        for name in ("beat", "worker", "api"):
            stop_process(stack, name)

        # Server B: an empty database and a key directory of its own, on A's URL and Redis.
        stack.env["VCENTER_DATABASE_URL"] = f"sqlite:///{tmp_path / 'b' / 'vcenter.db'}"
        stack.env["VCENTER_KEY_DIR"] = str(tmp_path / "b" / "keys")
        (tmp_path / "b").mkdir()
        stack.run_cli("db", "upgrade")
        assert (tmp_path / "b" / "keys" / "command-signing.pem").read_bytes() != (tmp_path / "keys" / "command-signing.pem").read_bytes()
        out = stack.run_cli("restore", str(archive))
        assert "migrated to head" in out and "keys.before-restore-" in out, out
        assert (tmp_path / "b" / "keys" / "command-signing.pem").read_bytes() == (tmp_path / "keys" / "command-signing.pem").read_bytes()
        restored_at = utcnow()
        stack._spawn("worker", ["worker"])
        stack._spawn("beat", ["beat"])
        stack.start_api()

        agent = stack.hosts["esx1"].agent
        assert agent is not None and agent.poll() is None  # the same agent process throughout
        with stack.client() as api:  # A's administrator, restored
            wait_for(
                lambda: (h := api.get(f"/api/v1/hosts/{host.host_id}").json())["last_report_at"] and datetime.fromisoformat(h["last_report_at"]) > restored_at, 30, what="a report of the agent to B"
            )
            assert api.get(f"/api/v1/hosts/{host.host_id}").json()["connection_state"] == "connected"
            on = power(api, vm, "on")
            assert on["state"] == "success", on
            assert "running" in virsh(stack, "domstate", vm["libvirt_uuid"])
            assert api.get(f"/api/v1/vms/{vm['id']}").json()["power_state"] == "poweredOn"
            assert power(api, vm, "off")["state"] == "success"
            assert "shut off" in virsh(stack, "domstate", vm["libvirt_uuid"])
    except BaseException:
        print(stack.log_tails())
        raise
    finally:
        stack.stop()
        own_redis.stop()
