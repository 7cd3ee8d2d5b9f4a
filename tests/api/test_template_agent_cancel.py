"""The agent's template commands honour a cancel: when the server answers a progress report
with "do not proceed", the running qemu-img is killed, the partial files are removed and the
command ends CANCELLED. Real qemu-img and the real handler; the server's answers are played by
the test (the API side of cancel is tested in test_templates_api.py)."""

from __future__ import annotations

import os
import subprocess
import threading
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from vcenter.hypervisor.base import DriverError
from vcenter.messaging.commands import ExportArgs
from vcenter.messaging.contracts import Command, DeployArgs
from workers.agent import templates
from workers.agent.command_context import CURRENT_COMMAND


class Server:
    """Answers progress reports like the server: proceed until told to cancel."""

    def __init__(self, cancel_after: int):
        self.reports: list[dict] = []
        self.cancel_after = cancel_after

    def post(self, path, body, retry_for=None):
        self.reports.append(body)
        return {"proceed": len(self.reports) <= self.cancel_after}


def _agent(server):
    return SimpleNamespace(api=server, settings=SimpleNamespace(agent_transfer_timeout=60), driver=None, driver_lock=threading.RLock())


def test_export_is_cancelled_midway_and_leaves_nothing(tmp_path):
    raw = tmp_path / "disk.raw"
    with open(raw, "wb") as f:
        for _ in range(8):
            f.write(os.urandom(16 << 20))  # 128 MiB that does not compress: seconds of streamOptimized VMDK
    work = tmp_path / ".exports" / "7"
    CURRENT_COMMAND.set(Command(command_id="c-1", task_id=1, host_id=1, name="vm.export", args={}, issued_at=datetime.now(timezone.utc)))
    server = Server(cancel_after=1)
    with pytest.raises(DriverError) as exc:
        templates.export(_agent(server), ExportArgs(uuid=None, name="x", hardware={"vcpus": 1, "memory_mib": 64}, upload_id=7, disks=[{"path": str(raw), "format": "raw"}], workdir=str(work)))
    assert exc.value.code == "CANCELLED"
    assert len(server.reports) >= 2 and server.reports[0]["step"].startswith("converting")
    assert not work.exists()  # the work folder and the partial VMDK are gone
    assert subprocess.run(["pgrep", "-f", f"qemu-img convert.*{raw}"], capture_output=True).returncode == 1  # no qemu-img left


def test_full_clone_deploy_is_cancelled_before_defining(tmp_path):
    src = tmp_path / "templates" / "t-v1-1" / "disk0.qcow2"
    src.parent.mkdir(parents=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(src), "64M"], check=True)
    CURRENT_COMMAND.set(Command(command_id="c-2", task_id=2, host_id=1, name="vm.deploy", args={}, issued_at=datetime.now(timezone.utc)))

    class Driver:
        def domain_state(self, uuid):
            return None

        def define(self, spec):  # must never be reached
            raise AssertionError("defined after a cancel")

    server = Server(cancel_after=0)
    agent = _agent(server)
    agent.driver = Driver()
    dest = tmp_path / "vm-disk0.qcow2"
    spec = {
        "name": "c1",
        "uuid": "6b1f7f0e-4c4e-4a53-9f59-5b8f6d1d2a11",
        "vcpus": 1,
        "memory_mib": 96,
        "disks": [{"index": 0, "datastore_id": 1, "datastore_path": str(tmp_path), "file": dest.name, "capacity_mib": 64}],
    }
    with pytest.raises(DriverError) as exc:
        templates.deploy(agent, DeployArgs(spec=spec, mode="full", seed=None, clones=[{"index": 0, "mode": "full", "source": str(src), "source_format": "qcow2", "dest": str(dest)}]))
    assert exc.value.code == "CANCELLED"
    assert not dest.exists() and not [p for p in os.listdir(tmp_path) if ".part-" in p]
