"""`make run` as a newcomer runs it: the whole system comes up (API, worker, beat, two HA
monitors, an agent per lab host, guests running), the banner names the dashboard, and the
first `vcenter lab fault kill-host` restarts the dead host's guests on the others; Ctrl-C then
stops everything it started.

Ports are free ones (RUN_ARGS), so that a developer's own `make run` is not disturbed; the lab
is the default one (`vcenter lab ...` finds it, as the banner says), on the lab network every
lab test shares (the lab tiers run one test at a time).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.apihelpers import wait_for
from vcenter.lab.stack import free_port

ROOT = Path(__file__).resolve().parents[2]
VCENTER = [str(ROOT / ".venv" / "bin" / "vcenter")]


def _output(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _lab_status() -> dict:
    out = subprocess.run(VCENTER + ["lab", "status", "--json"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    return json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else {"hosts": []}


@pytest.mark.timeout(1200)
def test_make_run_brings_up_the_whole_system_and_ha_restarts_a_dead_hosts_guests(tmp_path):
    port, redis_port = free_port(), free_port()
    log = tmp_path / "make-run.log"
    args = f"--rundir {tmp_path / 'run'} --port {port} --redis-port {redis_port}"
    with open(log, "wb") as out:
        make = subprocess.Popen(
            ["make", "--no-print-directory", "run", f"RUN_ARGS={args}"],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        wait_for(lambda: "virtcenter is up" in _output(log) or make.poll() is not None, 900, interval=1, what="`make run` saying it is up")
        banner = _output(log)
        assert make.poll() is None, banner[-3000:]
        url = f"http://127.0.0.1:{port}"
        assert f"dashboard  {url}/ui" in banner and "HA monitors ha1 + ha2" in banner, banner[-3000:]

        token = httpx.post(f"{url}/api/v1/session", json={"username": "admin", "password": "vmware-admin"}).json()["token"]
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as api:
            cluster = api.get("/api/v1/clusters", params={"name": "cluster1"}).json()["items"][0]
            assert cluster["settings"]["drs"] == {"enabled": True, "automation": "manual"}
            status = lambda: api.get(f"/api/v1/clusters/{cluster['id']}/ha/status").json()  # noqa: E731
            assert status()["enabled"] is True
            owner = wait_for(lambda: status()["monitor"]["owner"], 60, what="an active HA monitor")
            for name in ("ha1", "ha2"):  # both monitors run: one holds the lock, one stands by
                assert (tmp_path / "run" / f"{name}.log").exists()
            host3 = api.get("/api/v1/hosts", params={"name": "host3"}).json()["items"][0]
            victims = api.get("/api/v1/vms", params={"host_id": host3["id"]}).json()["items"]
            assert len(victims) == 2 and all(v["power_state"] == "poweredOn" for v in victims), victims

            def beating(vm_id: int, elsewhere: bool) -> bool:
                vm = api.get(f"/api/v1/vms/{vm_id}").json()
                moved = vm["host_id"] != host3["id"]
                return vm["power_state"] == "poweredOn" and (vm.get("guest_info") or {}).get("seq") is not None and moved == elsewhere

            for vm in victims:  # the guests have booted on host3 before its power goes
                wait_for(lambda: beating(vm["id"], elsewhere=False), 180, what=f"{vm['name']} beating on host3")
            killed = subprocess.run(VCENTER + ["lab", "fault", "kill-host", "host3"], capture_output=True, text=True, timeout=60, cwd=ROOT)
            assert killed.returncode == 0, killed.stderr
            for vm in victims:
                wait_for(lambda: beating(vm["id"], elsewhere=True), 180, what=f"{vm['name']} restarted by HA on another host, its guest beating")
            failed = api.get("/api/v1/events", params={"kind": "ha.host.failed", "object_type": "host", "object_id": host3["id"]}).json()["items"]
            assert failed, "host3 was declared failed"
            restarts = api.get("/api/v1/tasks", params={"kind": "vm.ha_restart"}).json()["items"]
            assert sorted(t["object_id"] for t in restarts) == sorted(v["id"] for v in victims), restarts
            assert status()["monitor"]["owner"] == owner  # the same monitor acted throughout
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends
            try:
                make.wait(180)
            except subprocess.TimeoutExpired:
                os.killpg(make.pid, signal.SIGKILL)
                make.wait(10)
    assert "stopped; nothing left running." in _output(log), _output(log)[-3000:]
    assert _lab_status()["hosts"] == [], "the lab is down after Ctrl-C"
    assert not _answers(port) and not _answers(redis_port), "the API and Redis it started are gone"
