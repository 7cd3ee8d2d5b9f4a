"""The previous release's agent keeps working with this server (docs/operations.md#upgrading):
an agent run from the source of the previous release's tag (newest ``v*`` tag older than this
release; or the git ref in VCENTER_PREVIOUS_AGENT_REF) registers with this server, reports,
and runs a VM's create and power operations sent by it. Simulated hypervisor: the contract
under test is the wire between server and agent. Skipped, saying so, while no earlier release
is tagged."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.apihelpers import wait_for
from tests.conftest import REDIS_URL
from vcenter.core.release import release
from vcenter.domain.versions import is_older
from vcenter.lab.stack import VCENTER, LabHost, Stack

ROOT = Path(__file__).resolve().parents[2]
REF_ENV = "VCENTER_PREVIOUS_AGENT_REF"


def previous_ref() -> str | None:
    """The git ref of the previous release: the setting, else the newest v* tag older than this release."""
    if os.environ.get(REF_ENV):
        return os.environ[REF_ENV]
    tags = subprocess.run(["git", "tag", "--list", "v*", "--sort=-v:refname"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    return next((t for t in tags if is_older(t.removeprefix("v"), release())), None)


def test_the_previous_release_agent_works_with_this_server(tmp_path):
    ref = previous_ref()
    if ref is None:
        pytest.skip(f"no release tag older than {release()}: nothing to test against yet (tag each release v<version>; {REF_ENV}=<ref> names one by hand)")
    old = tmp_path / "previous"
    old.mkdir()
    archive = subprocess.run(["git", "archive", "--format=tar", ref], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)

    stack = Stack.create(tmp_path / "stack", None, REDIS_URL, heartbeat_period=0.3, heartbeat_ttl=2, agent_report_period=1, reaper_period=1, host_monitor_period=0.5)
    try:
        stack.start_server(with_beat=False)
        with stack.client() as api:
            dc = api.post("/api/v1/datacenters", json={"name": "dc1"}).json()
            created = api.post("/api/v1/hosts", json={"name": "old1", "datacenter_id": dc["id"], "libvirt_uri": "simulated:///"})
            assert created.status_code == 201, created.text
            host = LabHost(name="old1", libvirtd=None, host_id=created.json()["id"], token=created.json()["registration_token"])
            stack.hosts["old1"] = host
            # The previous release's code: its tree first on the path, and the working directory
            # (`python -m` puts that first of all).
            env = {"PYTHONPATH": str(old), "VCENTER_AGENT_REGISTRATION_TOKEN": host.token or "", "VCENTER_AGENT_STATE_DIR": str(stack.agent_state_dir("old1"))}
            log = open(tmp_path / "agent-old1.log", "ab")
            host.agent = subprocess.Popen([*VCENTER, "agent", "--simulated"], env={**stack.env, **env}, cwd=old, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            stack.processes["agent-old1"] = host.agent
            stack.confirm_host("old1")
            wait_for(lambda: api.get(f"/api/v1/hosts/{host.host_id}").json()["connection_state"] == "connected", 60, what="the previous agent connected")
            assert "agent_outdated" in api.get(f"/api/v1/hosts/{host.host_id}").json()

            def run(response) -> dict:
                assert response.status_code == 202, response.text
                return wait_for(lambda: (t := api.get(f"/api/v1/tasks/{response.json()['id']}").json())["state"] in ("success", "error") and t, 30, what="task")

            made = run(api.post("/api/v1/vms", json={"name": "vm1", "host_id": host.host_id, "memory_mib": 32}))
            assert made["state"] == "success", made
            vm_id = made["object_id"]
            assert run(api.post(f"/api/v1/vms/{vm_id}/power/on"))["state"] == "success"
            assert api.get(f"/api/v1/vms/{vm_id}").json()["power_state"] == "poweredOn"
            assert run(api.post(f"/api/v1/vms/{vm_id}/power/off"))["state"] == "success"
        assert host.agent is not None and host.agent.poll() is None
        # What that process imports: the previous release's package.
        where = subprocess.run([*VCENTER[:1], "-c", "import vcenter.cli; print(vcenter.cli.__file__)"], env={**stack.env, "PYTHONPATH": str(old)}, cwd=old, capture_output=True, text=True)
        assert where.stdout.strip() == str(old / "vcenter" / "cli.py"), where
    except BaseException:
        print(stack.log_tails())
        raise
    finally:
        stack.stop()
