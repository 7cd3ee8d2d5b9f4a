"""The server deployment of docker-compose.yml runs here, with no container registry: images
built from Debian packages on a debootstrap base (deploy/build-images.sh), the stack started by
docker-compose v1 against podman's Docker-compatible socket, every service healthy, the API on
HTTPS by default (its self-signed certificate verified for the published address; plain HTTP
answered by nothing), an administrator logging in through the published API port, a lab host's
agent registering with the stack through the published API (HTTPS, the certificate as its CA)
and Redis ports, confirmed, a VM created and powered on;
then `docker-compose down -v` and nothing of the project left: no container, pod, volume or
network, and none of the bridges and nftables chains podman leaves in the kernel the lab shares.

Podman here needs three settings (the lab notes' traps), given through a containers.conf of
this test's own (CONTAINERS_CONF), not the machine's: runc (crun refuses this hybrid cgroup
mode), default ulimits root may set, and a loop running `podman healthcheck run` for the
project's containers (no systemd timers run them; without it docker-compose waits for ever on
`condition: service_healthy`).

Images are cached between runs by podman's layer cache: the first run builds the base and the
three images (minutes), later runs reuse every unchanged layer. Ports, project name and socket
are this run's own. The lab runs one test at a time (the e2e tier), under /tmp/vc-lab.lock when
run by hand.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import ssl
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.apihelpers import wait_for
from vcenter.lab.guest import build_guest
from vcenter.lab.hosts import GATEWAY, Capacity, Lab
from vcenter.lab.stack import Stack, free_port

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("db", "redis", "api", "lb", "worker", "beat", "ha", "ha-standby")
PROJECT_LABEL = "com.docker.compose.project"

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=16384:16384", "nproc=8192:8192"]
[engine]
runtime = "runc"
"""


def _run(args: list[str], env: dict[str, str], timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def _lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stdout.splitlines() if line.strip()]


class ComposeStack(Stack):
    """The lab's Stack driving the compose deployment's API: published on the lab gateway, over
    HTTPS with the certificate the api container made on its first start (verified as the CA:
    ``env["VCENTER_API_CA"]``, which the lab host's agent gets too)."""

    @property
    def url(self) -> str:
        return f"https://{GATEWAY}:{self.api_port}"

    def client(self) -> httpx.Client:
        # One uvicorn worker in a container on a machine other suites load: a login (argon2)
        # can take longer than httpx's default 5 s there.
        verify = _verify(self.env["VCENTER_API_CA"])
        response = httpx.post(self.url + "/api/v1/session", json={"username": self.admin[0], "password": self.admin[1]}, timeout=60, verify=verify)
        response.raise_for_status()
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {response.json()['token']}"}, timeout=60, verify=verify)


def _verify(ca_file: str) -> ssl.SSLContext:
    """Trust exactly the deployment's own certificate, host name checked."""
    return ssl.create_default_context(cafile=ca_file)


class HealthcheckLoop(threading.Thread):
    """Runs `podman healthcheck run` for the project's running containers every 2 s: what
    podman's systemd timers would do on a machine with systemd."""

    def __init__(self, project: str, env: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.project, self.env, self.stop = project, env, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(2):
            names = subprocess.run(["podman", "ps", "--filter", f"label={PROJECT_LABEL}={self.project}", "--format", "{{.Names}}"], env=self.env, capture_output=True, text=True).stdout.split()
            checks = [
                subprocess.Popen(["podman", "healthcheck", "run", name], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for name in names
            ]  # side by side: each starts a Python process
            for check in checks:
                check.wait()


def _health(project: str, env: dict[str, str]) -> dict[str, str]:
    """service -> health status ("healthy", "starting", "unhealthy", or the container state
    for a container without a healthcheck)."""
    ids = _lines(_run(["podman", "ps", "-a", "-q", "--filter", f"label={PROJECT_LABEL}={project}"], env))
    if not ids:
        return {}
    out: dict[str, str] = {}
    for c in json.loads(_run(["podman", "inspect", *ids], env).stdout):
        service = c["Config"]["Labels"].get("com.docker.compose.service", c["Name"])
        health = (c["State"].get("Health") or c["State"].get("Healthcheck") or {}).get("Status") or ""
        out[service] = health or c["State"]["Status"]
    return out


def _project_leftovers(project: str, env: dict[str, str]) -> dict[str, list[str]]:
    label = f"label={PROJECT_LABEL}={project}"
    return {
        "containers": _lines(_run(["podman", "ps", "-a", "--filter", label, "--format", "{{.Names}}"], env)),
        "pods": [p for p in _lines(_run(["podman", "pod", "ls", "--format", "{{.Name}}"], env)) if project in p],
        "volumes": [v for v in _lines(_run(["podman", "volume", "ls", "--format", "{{.Name}}"], env)) if v.startswith(project)],
        "networks": [n for n in _lines(_run(["podman", "network", "ls", "--format", "{{.Name}}"], env)) if n.startswith(project)],
    }


def _conmons_of(project: str) -> list[int]:
    """conmon processes (podman's container and exec monitors) still naming one of the
    project's containers: an exec session whose container was removed under it can leave its
    monitor behind."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"conmon") and any(a.startswith(f"{project}_".encode()) for a in args):
            pids.append(int(proc.name))
    return pids


def _podman_kernel_leftovers() -> dict[str, list[str]]:
    """What podman's networking leaves in the kernel: its bridges (podman0, podman1, ...) and
    the NETAVARK chains netavark adds to iptables-nft's tables."""
    links = [entry["ifname"] for entry in json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True, text=True).stdout or "[]")]
    ruleset = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    return {"bridges": [name for name in links if name.startswith("podman")], "netavark chains": sorted({w for w in ruleset.split() if w.startswith("NETAVARK")})}


def _clean_podman_kernel_state(env: dict[str, str]) -> None:
    """Remove what podman leaves behind once none of its containers runs: its bridges, and
    iptables-nft's ip nat/ip filter tables when netavark's are the only chains with rules
    there (otherwise only netavark's chains and the rules jumping to them)."""
    if _lines(_run(["podman", "ps", "-q"], env, check=False)):
        return  # another podman user on this machine: leave its networking alone
    for name in _podman_kernel_leftovers()["bridges"]:
        subprocess.run(["ip", "link", "delete", name], capture_output=True)
    for table in ("nat", "filter"):
        listing = subprocess.run(["nft", "-j", "list", "table", "ip", table], capture_output=True, text=True)
        if listing.returncode != 0:
            continue
        items = json.loads(listing.stdout)["nftables"]
        rules = [i["rule"] for i in items if "rule" in i]
        foreign = [r for r in rules if not r["chain"].startswith("NETAVARK") and "NETAVARK" not in json.dumps(r["expr"])]
        if not foreign:
            subprocess.run(["nft", "delete", "table", "ip", table], capture_output=True)
            continue
        for r in rules:
            if not r["chain"].startswith("NETAVARK") and "NETAVARK" in json.dumps(r["expr"]):
                subprocess.run(["nft", "delete", "rule", "ip", table, r["chain"], "handle", str(r["handle"])], capture_output=True)
        chains = [i["chain"]["name"] for i in items if "chain" in i and i["chain"]["name"].startswith("NETAVARK")]
        for chain in chains:
            subprocess.run(["nft", "flush", "chain", "ip", table, chain], capture_output=True)
        for chain in chains:
            subprocess.run(["nft", "delete", "chain", "ip", table, chain], capture_output=True)


@pytest.mark.timeout(2400)
def test_compose_deployment_runs_a_lab_host_and_leaves_nothing(tmp_path):
    for tool in ("podman", "docker-compose", "debootstrap", "runc"):
        assert shutil.which(tool), f"{tool} missing: run scripts/install.sh"
    project = f"vccompose{secrets.token_hex(3)}"
    conf = tmp_path / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    socket_path = tmp_path / "podman.sock"
    api_port, redis_port = free_port(), free_port()
    db_password, redis_password = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("VCENTER_")}, "CONTAINERS_CONF": str(conf)}
    compose_env = {
        **env,
        "DOCKER_HOST": f"unix://{socket_path}",
        "COMPOSE_PROJECT_NAME": project,
        "VCENTER_DB_PASSWORD": db_password,
        "VCENTER_REDIS_PASSWORD": redis_password,
        # Published on the lab network's gateway, where lab hosts and this test reach them
        # (netavark 1.4 publishes nothing for a 0.0.0.0 bind: its rule matches 0.0.0.0 itself).
        "VCENTER_API_BIND": GATEWAY,
        "VCENTER_API_PUBLISH_PORT": str(api_port),
        "VCENTER_REDIS_BIND": GATEWAY,
        "VCENTER_REDIS_PUBLISH_PORT": str(redis_port),
        "VCENTER_PUBLIC_URL": f"https://{GATEWAY}:{api_port}",
        # HTTPS is the compose file's default: the self-signed certificate names the gateway too
        "VCENTER_TLS_HOSTNAMES": GATEWAY,
    }
    env_file = tmp_path / "compose.env"  # not the developer's .env beside docker-compose.yml
    env_file.write_text("")
    compose = ["docker-compose", "--env-file", str(env_file), "-p", project, "-f", str(ROOT / "docker-compose.yml")]
    timings: dict[str, float] = {}

    started = time.monotonic()
    _run([str(ROOT / "deploy" / "build-images.sh")], env, timeout=1800)
    timings["images"] = time.monotonic() - started

    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{socket_path}"], env=env, stdout=open(tmp_path / "podman-service.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    health_loop = HealthcheckLoop(project, env)
    lab = None
    datastore_dir = Path("/srv") / project  # a default datastore root of the server and agents
    try:
        wait_for(lambda: socket_path.exists(), 30, what="podman's socket")
        build_guest()
        lab = Lab(tmp_path / "lab")
        lab.up(1, Capacity(cpus=2, memory_mib=1024))  # first: the ports are published on its gateway
        started = time.monotonic()
        health_loop.start()
        _run(compose + ["up", "-d", "--no-build"], compose_env, timeout=600)
        wait_for(lambda: (h := _health(project, env)) and all(h.get(s) == "healthy" for s in SERVICES) and h, 300, interval=2, what="every service healthy")
        assert _health(project, env).get("migrate") == "exited"
        timings["up"] = time.monotonic() - started

        # An administrator, made inside the api container as an operator would, logs in
        # through the published port.
        _run(compose + ["exec", "-T", "api", "vcenter", "admin", "create", "admin", "--password", "compose-admin-pass"], compose_env)
        # HTTPS by default, with the certificate the api container made: plain HTTP gets no
        # answer, and the certificate verifies for the published address.
        api_ca = tmp_path / "api-ca.pem"
        api_ca.write_text(_run(compose + ["exec", "-T", "api", "cat", "/var/lib/virtcenter/keys/tls/api.crt"], compose_env).stdout)
        url = f"https://{GATEWAY}:{api_port}"
        with pytest.raises(httpx.HTTPError):
            httpx.post(f"http://{GATEWAY}:{api_port}/api/v1/session", json={"username": "admin", "password": "compose-admin-pass"}, timeout=30).raise_for_status()
        login = httpx.post(f"{url}/api/v1/session", json={"username": "admin", "password": "compose-admin-pass"}, timeout=30, verify=_verify(str(api_ca)))
        assert login.status_code == 201, login.text

        # A lab host's agent registers with the stack over the lab network (the published
        # ports on the gateway), is confirmed, and runs a VM.
        started = time.monotonic()
        stack = ComposeStack.create(tmp_path / "stack", None, f"redis://:{redis_password}@{GATEWAY}:{redis_port}/0")
        stack.api_port = api_port
        stack.env.update({"VCENTER_API_PORT": str(api_port), "VCENTER_PUBLIC_URL": url, "VCENTER_API_CA": str(api_ca)})
        stack.scheme = "https"
        stack.admin = ("admin", "compose-admin-pass")
        try:
            with stack.client() as api:
                dc = api.post("/api/v1/datacenters", json={"name": "dc1"}).json()
                cl = api.post("/api/v1/clusters", json={"name": "cl1", "datacenter_id": dc["id"]}).json()
                host = stack.add_lab_host(lab.hosts[0], dc["id"], cl["id"])
                wait_for(lambda: api.get(f"/api/v1/hosts/{host.host_id}").json()["connection_state"] == "connected", 60, what="host connected")
                path = lab.create_datastore("ds1", 64, [lab.hosts[0].name], path=str(datastore_dir / "ds1"))
                ds = api.post("/api/v1/datastores", json={"name": "ds1", "datacenter_id": dc["id"], "kind": "lab-dir", "url": path, "host_ids": [host.host_id]})
                assert ds.status_code in (200, 201), ds.text
                task = api.post(
                    "/api/v1/vms",
                    json={
                        "name": "vm1",
                        "host_id": host.host_id,
                        "memory_mib": 96,
                        "kernel_boot": {"image": "tiny-linux", "ip": "10.99.0.11/24"},
                        "disks": [{"datastore_id": ds.json()["id"], "capacity_mib": 8}],
                    },
                ).json()
                done = wait_for(lambda: (t := api.get(f"/api/v1/tasks/{task['id']}").json())["state"] in ("success", "error") and t, 90, what="create vm1")
                assert done["state"] == "success", (done["error_code"], done["error_message"], stack.log_tails())
                vm_id = done["object_id"]
                on = api.post(f"/api/v1/vms/{vm_id}/power/on").json()
                done = wait_for(lambda: (t := api.get(f"/api/v1/tasks/{on['id']}").json())["state"] in ("success", "error") and t, 90, what="power on vm1")
                assert done["state"] == "success", (done["error_code"], done["error_message"], stack.log_tails())
                wait_for(lambda: api.get(f"/api/v1/vms/{vm_id}").json()["power_state"] == "poweredOn", 60, what="vm1 powered on")
            timings["lab host and VM"] = time.monotonic() - started
        finally:
            stack.stop()
    finally:
        try:
            if lab is not None:
                lab.down()
            shutil.rmtree(datastore_dir, ignore_errors=True)
            started = time.monotonic()
            if service.poll() is None:
                # The services' logs outlive the stack here (a failure's diagnosis).
                logs = _run(compose + ["logs", "--no-color", "--timestamps"], compose_env, timeout=120, check=False)
                (tmp_path / "compose.log").write_text(logs.stdout + logs.stderr)
                _run(compose + ["down", "-v", "--remove-orphans", "--timeout", "10"], compose_env, timeout=300, check=False)
            timings["down"] = time.monotonic() - started
        finally:
            health_loop.stop.set()
            health_loop.join(30)
            service.terminate()
            try:
                service.wait(15)
            except subprocess.TimeoutExpired:
                service.kill()
                service.wait(15)
    print(f"compose deployment timings (s): {json.dumps({k: round(v, 1) for k, v in timings.items()})}")

    assert _project_leftovers(project, env) == {"containers": [], "pods": [], "volumes": [], "networks": []}
    for pid in _conmons_of(project):
        os.kill(pid, 15)  # the monitor of a removed container: nothing left to watch
    wait_for(lambda: not _conmons_of(project), 10, what="no conmon of the project left")
    _clean_podman_kernel_state(env)
    assert _podman_kernel_leftovers() == {"bridges": [], "netavark chains": []}
