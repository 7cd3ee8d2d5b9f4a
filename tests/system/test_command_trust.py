"""Channel security on real parts: real agents (simulated hypervisors) consuming their host
queues on a real Redis refuse a forged command, a genuine command moved to another host's
queue and a genuine command replayed after it ran; the API serves HTTPS with a self-signed
certificate that agents verify by file or by pinned thumbprint."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import uuid

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.apihelpers import wait_for, wait_reports
from tests.conftest import REDIS_URL, redis_db_url
from vcenter.core.clock import utcnow
from vcenter.core.settings import Settings
from vcenter.db.models import Task
from vcenter.db.session import session_scope
from vcenter.lab.stack import Stack, free_port
from vcenter.messaging.celery_app import make_celery
from vcenter.messaging.contracts import AGENT_EXECUTE_TASK, Command, host_queue
from vcenter.messaging.signing import CommandSigner
from vcenter.services.tasks import tasks


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("trust")
    redis_url = redis_db_url(REDIS_URL, 11)
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    s = Stack.create(workdir, None, redis_url, heartbeat_period=0.3, heartbeat_ttl=2, agent_report_period=1, reaper_period=1, host_monitor_period=0.5, agent_reconnect_delay=0.3)
    try:
        s.start_server()
        with s.client() as api:
            dc = api.post("/api/v1/datacenters", json={"name": "dc1"}).json()
            for name in ("a", "b"):
                host = s.add_host(name, dc["id"], simulated=True)
                wait_for(lambda: api.get(f"/api/v1/hosts/{host.host_id}").json()["connection_state"] == "connected", 60, what=f"host {name} connected")
        yield s
    finally:
        s.stop()


@pytest.fixture
def api(stack):
    with stack.client() as client:
        yield client


def settings_of(stack: Stack) -> Settings:
    return Settings(database_url=stack.env["VCENTER_DATABASE_URL"], redis_url=stack.env["VCENTER_REDIS_URL"], key_dir=stack.env["VCENTER_KEY_DIR"])


def server_signer(stack: Stack) -> CommandSigner:
    """Exactly what the server signs with (its key file in the stack's key directory)."""
    return CommandSigner.from_settings(settings_of(stack))


def push(stack: Stack, host_name: str, payload: dict) -> None:
    """What any host that can touch the broker can do: put a message on a host queue."""
    celery = make_celery(settings_of(stack))
    celery.send_task(AGENT_EXECUTE_TASK, args=[payload], queue=host_queue(stack.hosts[host_name].host_id))


def agent_log(stack: Stack, name: str) -> str:
    return (stack.workdir / f"agent-{name}.log").read_text(errors="replace")


def wait_refusal(stack: Stack, name: str, code: str, command_id: str) -> None:
    wait_for(lambda: any(f"command refused ({code})" in line and command_id in line for line in agent_log(stack, name).splitlines()), 20, what=f"agent {name} refusing {command_id} with {code}")


def create_vm(stack: Stack, api, host_name: str, name: str) -> dict:
    task = api.post("/api/v1/vms", json={"name": name, "host_id": stack.hosts[host_name].host_id, "memory_mib": 32})
    assert task.status_code == 202, task.text
    done = wait_for(lambda: (t := api.get(f"/api/v1/tasks/{task.json()['id']}").json())["state"] in ("success", "error") and t, 30, what="create")
    assert done["state"] == "success", done
    return api.get(f"/api/v1/vms/{done['object_id']}").json()


def open_power_on_task(stack: Stack, vm: dict, host_name: str) -> Command:
    """A queued power-on task whose command was never sent: the command that WOULD start the
    VM if an agent accepted it (the server answers "proceed" for it)."""
    with session_scope(stack.env["VCENTER_DATABASE_URL"]) as session:
        task = tasks.start_task(session, kind="vm.powerOn", object_type="vm", object_id=vm["id"], username="admin", host_id=stack.hosts[host_name].host_id)
        task.command_id = str(uuid.uuid4())
        session.flush()
        return Command(command_id=task.command_id, task_id=task.id, host_id=task.host_id, name="vm.start", args={"uuid": vm["libvirt_uuid"]}, issued_at=utcnow())


def task_state(stack: Stack, task_id: int) -> str:
    with session_scope(stack.env["VCENTER_DATABASE_URL"]) as session:
        return session.get(Task, task_id).state


def test_forged_command_is_refused_and_the_genuine_one_runs_once(stack, api):
    vm = create_vm(stack, api, "a", "trust1")
    command = open_power_on_task(stack, vm, "a")

    # Forged: signed with a key of the attacker's, or not signed at all.
    forged = CommandSigner(Ed25519PrivateKey.generate(), ttl=300).seal(command)
    push(stack, "a", forged)
    wait_refusal(stack, "a", "BAD_SIGNATURE", command.command_id)
    push(stack, "a", command.model_dump(mode="json"))
    wait_refusal(stack, "a", "UNSIGNED", command.command_id)
    wait_reports(api, stack.hosts["a"].host_id)  # reports after the refusals: nothing happened
    assert api.get(f"/api/v1/vms/{vm['id']}").json()["power_state"] == "poweredOff"
    assert task_state(stack, command.task_id) == "queued"

    # The same command signed by the server runs: the forgeries were refused for their
    # signature alone.
    genuine = server_signer(stack).seal(command)
    push(stack, "a", genuine)
    wait_for(lambda: task_state(stack, command.task_id) == "success", 20, what="genuine command ran")
    wait_for(lambda: api.get(f"/api/v1/vms/{vm['id']}").json()["power_state"] == "poweredOn", 10, what="VM on")

    # Replayed after it ran (and after the VM was powered off again): refused, VM stays off.
    off = api.post(f"/api/v1/vms/{vm['id']}/power/off").json()
    wait_for(lambda: api.get(f"/api/v1/tasks/{off['id']}").json()["state"] == "success", 20, what="power off")
    push(stack, "a", genuine)
    wait_refusal(stack, "a", "REPLAY", command.command_id)
    wait_reports(api, stack.hosts["a"].host_id)
    assert api.get(f"/api/v1/vms/{vm['id']}").json()["power_state"] == "poweredOff"


def test_genuine_command_for_a_moved_to_b_is_refused_by_b(stack, api):
    vm = create_vm(stack, api, "a", "trust2")
    command = open_power_on_task(stack, vm, "a")
    genuine_for_a = server_signer(stack).seal(command)
    push(stack, "b", genuine_for_a)
    wait_refusal(stack, "b", "WRONG_HOST", command.command_id)
    wait_reports(api, stack.hosts["a"].host_id)  # the VM's own host: it would report the VM on
    assert api.get(f"/api/v1/vms/{vm['id']}").json()["power_state"] == "poweredOff"
    assert task_state(stack, command.task_id) == "queued"
    # Host a's own agent runs it: the command itself was good.
    push(stack, "a", genuine_for_a)
    wait_for(lambda: task_state(stack, command.task_id) == "success", 20, what="the command ran on its own host")


# --- HTTPS -----------------------------------------------------------------------------------
@pytest.fixture
def https_server(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VCENTER_")}
    env.update(
        {
            "VCENTER_DATABASE_URL": f"sqlite:///{tmp_path / 'vc.db'}",
            "VCENTER_REDIS_URL": REDIS_URL,
            "VCENTER_API_PORT": str(port),
            "VCENTER_KEY_DIR": str(tmp_path / "keys"),
            "VCENTER_TLS_SELF_SIGNED": "true",
            "VCENTER_PUBLIC_URL": f"https://127.0.0.1:{port}",
        }
    )
    cli = [sys.executable, "-m", "vcenter.cli"]
    subprocess.run(cli + ["db", "upgrade"], env=env, check=True, capture_output=True)
    log = open(tmp_path / "api.log", "wb")
    proc = subprocess.Popen(cli + ["serve"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"https://127.0.0.1:{port}"
    ca = tmp_path / "keys" / "tls" / "api.crt"

    def up() -> bool:
        try:
            return httpx.get(url + "/livez", verify=ssl.create_default_context(cafile=ca), timeout=2).status_code == 200
        except (httpx.HTTPError, OSError):
            return False

    try:
        wait_for(up, 30, interval=0.2, what=f"HTTPS API (see {tmp_path / 'api.log'})")
        yield url, ca, tmp_path
    finally:
        proc.terminate()
        proc.wait(10)


def test_https_with_a_self_signed_certificate(https_server):
    from workers.agent.api_client import ApiClient
    from workers.agent.tls import api_verify, pinned_context, thumbprint_of_pem

    url, ca, workdir = https_server
    assert oct((ca.parent / "api.key").stat().st_mode & 0o777) == "0o600"
    assert httpx.get(url + "/livez", verify=ssl.create_default_context(cafile=ca)).status_code == 200
    with pytest.raises(httpx.ConnectError):  # the system CAs do not know it
        httpx.get(url + "/livez")
    with pytest.raises(httpx.TransportError):  # plain HTTP against the TLS port: no answer
        httpx.get(url.replace("https", "http") + "/livez")

    # The thumbprint `vcenter serve` printed is the one to pin.
    thumb = thumbprint_of_pem(ca.read_bytes())
    assert thumb in (workdir / "api.log").read_text()
    assert httpx.get(url + "/livez", verify=pinned_context(url, thumb)).status_code == 200
    with pytest.raises(SystemExit):
        pinned_context(url, "SHA256:" + ":".join(["00"] * 32))

    # The agent's clients: by CA file and by pin; a report is refused for want of a credential,
    # which proves the TLS connection was made.
    for settings in (Settings(public_url=url, api_ca=str(ca)), Settings(public_url=url, api_thumbprint=thumb)):
        client = ApiClient(url, 1, "no-such-token", verify=api_verify(settings))
        with pytest.raises(Exception) as e:
            client.post("/state", {"facts": {"hostname": "x"}, "domains": []}, retry_for=0)
        assert "401" in str(e.value) or "403" in str(e.value), e.value
        client.close()
    # The certificate is generated once and kept: the next start serves the same one.
    from vcenter.api.tls import server_certificate

    assert server_certificate(Settings(key_dir=str(workdir / "keys"), tls_self_signed=True)) == (ca, ca.parent / "api.key")
    assert thumbprint_of_pem(ca.read_bytes()) == thumb
