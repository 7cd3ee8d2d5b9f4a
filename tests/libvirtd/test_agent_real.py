"""End to end on real parts: API -> database -> outbox -> Celery on Redis -> host agent ->
a real libvirtd/QEMU, and back through libvirt lifecycle events. Firmware-only guests (no OS)
are enough here: the real-hosts issue brings a bootable one."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from tests.apihelpers import wait_for
from vcenter.core.release import release
from vcenter.lab.stack import Stack, free_port
from vcenter.messaging.contracts import heartbeat_key


class OwnRedis:
    """A Redis of this module's own, so that a test may restart it."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no", "--dir", str(self.workdir)], stdout=subprocess.DEVNULL)
        wait_for(lambda: subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True).stdout.strip() == "PONG", 10, what="redis up")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("stack")
    own_redis = OwnRedis(workdir)
    own_redis.start()
    redis_db = own_redis.url
    s = Stack.create(
        workdir,
        None,
        redis_db,
        # Compressed time; a short visibility timeout so a command whose agent died is
        # redelivered within seconds; a long task lease so that redelivery, not the reaper's
        # re-send, is what the kill test exercises.
        celery_visibility_timeout=4,
        celery_unacked_restore_interval=1,
        task_lease=120,
        heartbeat_period=0.3,
        heartbeat_ttl=2,
        agent_report_period=2,
        reaper_period=1,
        host_monitor_period=0.5,
        agent_reconnect_delay=0.3,
    )
    try:
        s.start_server()
        with s.client() as api:
            dc = api.post("/api/v1/datacenters", json={"name": "dc1"}).json()
            s.extra = {"dc": dc}
            host = s.add_host("esx1", dc["id"])
            ds = api.post("/api/v1/datastores", json={"name": "ds1", "datacenter_id": dc["id"], "url": str(workdir / "ds1"), "host_ids": [host.host_id]}).json()
            s.extra["ds"] = ds
            wait_for(lambda: api.get(f"/api/v1/hosts/{host.host_id}").json()["connection_state"] == "connected", 60, what="host connected")
            wait_for(lambda: api.get(f"/api/v1/datastores/{ds['id']}").json()["capacity_bytes"] > 0, 30, what="datastore capacity reported")
        s.extra["redis"] = own_redis
        yield s
    finally:
        s.stop()
        own_redis.stop()


@pytest.fixture
def api(stack):
    with stack.client() as client:
        yield client


def virsh(stack, *args: str) -> str:
    uri = stack.hosts["esx1"].libvirtd.uri
    return subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True, timeout=30).stdout


def wait_task(api, task: dict, timeout: float = 60) -> dict:
    return wait_for(lambda: (t := api.get(f"/api/v1/tasks/{task['id']}").json())["state"] in ("success", "error", "cancelled") and t, timeout, what=f"task {task['id']} ({task['kind']})")


def create_vm(stack, api, name: str, disk_mib: int = 16) -> dict:
    host = stack.hosts["esx1"]
    task = api.post("/api/v1/vms", json={"name": name, "host_id": host.host_id, "memory_mib": 32, "disks": [{"datastore_id": stack.extra["ds"]["id"], "capacity_mib": disk_mib}]})
    assert task.status_code == 202, task.text
    done = wait_task(api, task.json())
    assert done["state"] == "success", done
    return api.get(f"/api/v1/vms/{done['object_id']}").json()


def power(api, vm: dict, action: str, **body) -> dict:
    response = api.post(f"/api/v1/vms/{vm['id']}/power/{action}", json=body or None)
    assert response.status_code == 202, response.text
    return wait_task(api, response.json())


def test_vm_lifecycle_on_a_real_libvirtd(stack, api):
    # The agent reports its release with the host's facts: the same as the server's here.
    assert api.get(f"/api/v1/hosts/{stack.hosts['esx1'].host_id}").json()["agent_version"] == release()
    vm = create_vm(stack, api, "life1")
    assert vm["status"] == "ready" and vm["power_state"] == "poweredOff"
    assert vm["libvirt_uuid"] in virsh(stack, "list", "--all", "--uuid")
    disk = Path(stack.extra["ds"]["url"]) / vm["disks"][0]["file"]
    assert disk.exists()

    assert power(api, vm, "on")["state"] == "success"
    assert vm["libvirt_uuid"] in virsh(stack, "list", "--uuid")  # running
    assert api.get(f"/api/v1/vms/{vm['id']}").json()["power_state"] == "poweredOn"

    assert power(api, vm, "suspend")["state"] == "success"
    info = virsh(stack, "dominfo", vm["libvirt_uuid"])
    assert "shut off" in info and "Managed save:   yes" in info  # memory on disk, no QEMU
    assert api.get(f"/api/v1/vms/{vm['id']}").json()["power_state"] == "suspended"
    assert power(api, vm, "resume")["state"] == "success"
    assert "running" in virsh(stack, "domstate", vm["libvirt_uuid"])

    assert power(api, vm, "reset")["state"] == "success"
    # A guest with no OS ignores the ACPI power button: the named outcome, VM still on.
    shutdown = power(api, vm, "shutdown", timeout=2)
    assert shutdown["state"] == "error" and shutdown["error_code"] == "GUEST_SHUTDOWN_TIMEOUT"
    assert api.get(f"/api/v1/vms/{vm['id']}").json()["power_state"] == "poweredOn"

    assert power(api, vm, "off")["state"] == "success"
    assert "shut off" in virsh(stack, "domstate", vm["libvirt_uuid"])

    r = api.post(f"/api/v1/vms/{vm['id']}/reconfigure", json={"vcpus": 2, "memory_mib": 48})
    assert r.status_code == 202
    assert wait_task(api, r.json())["state"] == "success"
    info = virsh(stack, "dominfo", vm["libvirt_uuid"])
    assert "CPU(s):         2" in info and "Max memory:     49152 KiB" in info
    assert api.get(f"/api/v1/vms/{vm['id']}").json()["vcpus"] == 2

    r = api.delete(f"/api/v1/vms/{vm['id']}")
    assert r.status_code == 202 and wait_task(api, r.json())["state"] == "success"
    assert vm["libvirt_uuid"] not in virsh(stack, "list", "--all", "--uuid")
    assert not disk.exists()
    assert api.get(f"/api/v1/vms/{vm['id']}").status_code == 404


def _stop_event(api, vm):
    events = api.get(f"/api/v1/events?object_type=vm&object_id={vm['id']}&kind=vm.stopped").json()["items"]
    return events[0] if events else None


def test_outside_stops_show_within_5s_with_their_reason(stack, api):
    vm = create_vm(stack, api, "watched1")
    power(api, vm, "on")
    subprocess.run(["virsh", "-c", stack.hosts["esx1"].libvirtd.uri, "destroy", vm["libvirt_uuid"]], check=True, capture_output=True)
    seen = wait_for(lambda: (v := api.get(f"/api/v1/vms/{vm['id']}").json())["last_stop_reason"] == "destroyed" and v, 5, what="destroy seen")
    assert seen["power_state"] == "poweredOff"
    assert _stop_event(api, vm)["reason"] == "destroyed"

    power(api, vm, "on")
    pid = int(Path(stack.hosts["esx1"].libvirtd.path(f"/run/libvirt/qemu/{'watched1'}.pid")).read_text())
    os.kill(pid, signal.SIGKILL)
    seen = wait_for(lambda: (v := api.get(f"/api/v1/vms/{vm['id']}").json())["last_stop_reason"] == "crashed" and v, 5, what="QEMU kill seen")
    assert seen["power_state"] == "poweredOff"
    assert _stop_event(api, vm)["reason"] == "crashed"


class AgentLog:
    """The agent's log from now on: a fault is held until the agent has met it (its log says
    so), not for a guessed number of seconds."""

    def __init__(self, path: Path):
        self.path = path
        self.start = path.stat().st_size

    def wait_for(self, text: str, what: str, timeout: float = 30) -> None:
        wait_for(lambda: text in self.path.read_bytes()[self.start :].decode(errors="replace"), timeout, what=what)


def restart_agent(stack, api, extra_env: dict[str, str] | None = None) -> None:
    """Kill esx1's agent and start it again; return once the NEW process beats and the server
    holds the host connected. Starting an agent takes longer than the compressed heartbeat TTL
    on a loaded machine: a command asked for before then is refused (HOST_NOT_CONNECTED), and
    the stale "connected" of the killed agent proves nothing."""
    host = stack.hosts["esx1"]
    stack.kill_agent("esx1")
    started = time.time()
    stack.start_agent("esx1", extra_env)
    beats = redis.Redis.from_url(stack.extra["redis"].url)
    wait_for(lambda: float(beats.get(heartbeat_key(host.host_id)) or 0) > started, 60, what="a heartbeat of the new agent")
    wait_for(lambda: api.get(f"/api/v1/hosts/{host.host_id}").json()["connection_state"] == "connected", 30, what="host connected again")


def test_agent_killed_between_libvirt_call_and_ack_leaves_one_domain(stack, api, tmp_path):
    crash_file = tmp_path / "crash-once"
    host = stack.hosts["esx1"]
    restart_agent(stack, api, {"VCENTER_AGENT_CRASH_AFTER_CALL_FILE": str(crash_file)})
    try:
        crash_file.touch()
        created = api.post("/api/v1/vms", json={"name": "redelivered1", "host_id": host.host_id, "memory_mib": 32, "disks": [{"datastore_id": stack.extra["ds"]["id"], "capacity_mib": 8}]})
        assert created.status_code == 202, created.text
        task = created.json()
        # The agent defines the domain, then dies (SIGKILL) before reporting or acknowledging.
        wait_for(lambda: host.agent.poll() is not None, 30, what="agent killed by the test hook")
        assert not crash_file.exists()
        assert api.get(f"/api/v1/tasks/{task['id']}").json()["state"] in ("queued", "running")
    finally:
        # Whatever happened above, the module's next tests get an agent without the hook.
        crash_file.unlink(missing_ok=True)
        restart_agent(stack, api)
    done = wait_task(api, task, 60)
    assert done["state"] == "success", done
    vm = api.get(f"/api/v1/vms/{done['object_id']}").json()
    domains = [line for line in virsh(stack, "list", "--all", "--name").splitlines() if line.strip() == "redelivered1"]
    assert domains == ["redelivered1"]
    assert virsh(stack, "domuuid", "redelivered1").strip() == vm["libvirt_uuid"]
    assert api.get("/api/v1/vms?name=redelivered1").json()["total"] == 1
    assert vm["status"] == "ready"


def test_libvirtd_crash_and_restart_keeps_guests_and_agent_reconnects(stack, api):
    vm = create_vm(stack, api, "survivor1")
    power(api, vm, "on")
    daemon = stack.hosts["esx1"].libvirtd
    daemon.restart_daemon()
    assert "running" in virsh(stack, "domstate", vm["libvirt_uuid"])
    # The agent reconnects by itself: a new command goes through.
    assert power(api, vm, "off")["state"] == "success"
    assert api.get(f"/api/v1/vms/{vm['id']}").json()["host_id"] == stack.hosts["esx1"].host_id


def test_agent_carries_on_through_api_and_redis_restarts(stack, api):
    vm = create_vm(stack, api, "steady1")
    power(api, vm, "on")
    host = stack.hosts["esx1"]

    # API down while libvirt reports a stop: the agent keeps the event until the API is back.
    log = AgentLog(stack.workdir / "agent-esx1.log")
    stack.stop_api()
    subprocess.run(["virsh", "-c", host.libvirtd.uri, "destroy", vm["libvirt_uuid"]], check=True, capture_output=True)
    log.wait_for(f"report /api/v1/agent/hosts/{host.host_id}/events failed", "the agent's event post refused by the stopped API")
    stack.start_api()
    with stack.client() as fresh:
        seen = wait_for(lambda: (v := fresh.get(f"/api/v1/vms/{vm['id']}").json())["last_stop_reason"] == "destroyed" and v, 30, what="event delivered after API restart")
        assert seen["power_state"] == "poweredOff"

        # Redis restarts (all queues and heartbeat keys lost): heartbeats resume, commands flow.
        own_redis = stack.extra["redis"]
        log = AgentLog(stack.workdir / "agent-esx1.log")
        own_redis.stop()
        log.wait_for("heartbeat: Redis unreachable", "the agent's heartbeat failing on the stopped Redis")
        own_redis.start()
        client = redis.Redis.from_url(own_redis.url)
        wait_for(lambda: client.exists(f"vc:hb:host:{host.host_id}"), 30, what="heartbeat after Redis restart")
        assert power(fresh, vm, "on")["state"] == "success"
        assert "running" in virsh(stack, "domstate", vm["libvirt_uuid"])
        assert host.agent.poll() is None  # the same agent process throughout


def _readme_api_block() -> str:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text.split("## A five-minute tour", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def test_readme_curl_examples_work_as_written(stack, api):
    vm = create_vm(stack, api, "db1")
    # The tour's VM is web1 (both inventories of `make run` have it); this stack's VM is db1, powered off.
    script = _readme_api_block().replace("http://127.0.0.1:8080", stack.url).replace("vmware-admin", stack.admin[1]).replace("name=web1", "name=db1")
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert '"total":' in out and "esx1" in out
    assert '"code":"OBJECT_BUSY"' in out or '"code":"VM_SUSPENDED"' in out
    assert '"kind":"vm.resume"' in out
    final = wait_for(lambda: (v := api.get(f"/api/v1/vms/{vm['id']}").json())["power_state"] == "poweredOn" and v, 30, what="resumed")
    assert "running" in virsh(stack, "domstate", final["libvirt_uuid"])


def test_the_agent_installs_the_host_tls_certificate_of_the_server_ca(stack, api):
    """Issue 17 item 3: right after registration the agent makes its host's TLS key, gets the
    certificate from the server's CA and writes libvirt's and QEMU's files where the host's
    libvirtd sees /etc/pki (the key never leaves the host)."""
    from cryptography import x509

    daemon = stack.hosts["esx1"].libvirtd
    files = [
        daemon.path(p)
        for p in (
            "/etc/pki/CA/cacert.pem",
            "/etc/pki/CA/cacrl.pem",
            "/etc/pki/libvirt/servercert.pem",
            "/etc/pki/libvirt/private/serverkey.pem",
            "/etc/pki/qemu/server-cert.pem",
            "/etc/pki/qemu/client-key.pem",
        )
    ]
    wait_for(lambda: all(f.exists() for f in files), 30, what="the host's TLS files")
    ca = x509.load_pem_x509_certificate(files[0].read_bytes())
    cert = x509.load_pem_x509_certificate(files[2].read_bytes())
    cert.verify_directly_issued_by(ca)
    assert x509.load_pem_x509_crl(files[1].read_bytes()).is_signature_valid(ca.public_key())
    assert (files[3].stat().st_mode & 0o777) == 0o600 and (files[5].stat().st_mode & 0o777) == 0o600
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == ["esx1"]
    issued = api.get("/api/v1/events", params={"kind": "host.certificate_issued"}).json()["items"]
    assert any(format(cert.serial_number, "x") in e["message"] for e in issued if e["kind"] == "host.certificate_issued")
