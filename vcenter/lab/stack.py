"""A whole virtcenter on this machine, as real processes: API (`vcenter serve`), an
orchestrator worker, beat, and per host a private real libvirtd with its agent.

Used by the integration tests (brought up once per session) and by `make run`. Processes
are started with ``VCENTER_*`` variables only, as an operator would start them.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from cryptography import x509

from vcenter.core.registration import thumbprint
from vcenter.core.settings import DEFAULT_DATASTORE_ROOTS
from vcenter.lab.install import AGENT_ENV, BOOTSTRAP, INSTALLER, build_wheel, installer_env
from vcenter.lab.libvirtd import PrivateLibvirtd

log = logging.getLogger(__name__)

VCENTER = [sys.executable, "-m", "vcenter.cli"]


def with_host(url: str, host: str) -> str:
    """``url`` with its host replaced, keeping credentials, port, path: redis://:pw@h:p/db."""
    parts = urlsplit(url)
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    if "@" in parts.netloc:
        netloc = parts.netloc.rsplit("@", 1)[0] + "@" + netloc
    return urlunsplit(parts._replace(netloc=netloc))


# The stack's settings that are the server's own, not an agent's (its database, its keys, its
# listener) or that the installer writes (the server's URL, Redis, the API's CA).
_SERVER_ONLY = {"VCENTER_DATABASE_URL", "VCENTER_KEY_DIR", "VCENTER_API_PORT", "VCENTER_API_HOST", "VCENTER_PUBLIC_URL", "VCENTER_REDIS_URL", "VCENTER_API_CA", "VCENTER_DATASTORE_ROOTS"}


def lab_agent_settings(stack_env: dict[str, str], lab_host: Any) -> dict[str, str]:
    """What a lab host's agent.env gets besides the installer's: the stack's settings an agent
    reads (the tests' short periods, datastore roots), and the lab's own: port groups as VXLAN
    segments (the lab plugin's mode) and the host's declared capacity (every lab host shares
    this machine)."""
    settings = {k: v for k, v in stack_env.items() if k.startswith("VCENTER_") and k not in _SERVER_ONLY}
    settings.update(
        {
            "VCENTER_AGENT_PORTGROUP_MODE": "vxlan",
            "VCENTER_AGENT_DECLARED_CPUS": str(lab_host.capacity.cpus),
            "VCENTER_AGENT_DECLARED_MEMORY_MIB": str(lab_host.capacity.memory_mib),
        }
    )
    return settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LabHost:
    name: str
    libvirtd: PrivateLibvirtd | None
    lab_host: Any = None  # a vcenter.lab.hosts.LabHost when the host lives in the lab
    host_id: int | None = None
    token: str | None = None
    agent: subprocess.Popen | None = None


@dataclass
class Stack:
    workdir: Path
    env: dict[str, str]
    api_port: int
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    hosts: dict[str, LabHost] = field(default_factory=dict)
    admin: tuple[str, str] = ("admin", "admin-pass-phrase")  # the password policy: 12+ characters
    scheme: str = "http"  # the API's; a deployment under test may serve HTTPS (its agents get VCENTER_API_CA)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.api_port}"

    @classmethod
    def create(cls, workdir: Path, database_url: str | None, redis_url: str, **settings: Any) -> "Stack":
        workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("VCENTER_")}
        env.update(
            {
                "VCENTER_DATABASE_URL": database_url or f"sqlite:///{workdir / 'vcenter.db'}",
                "VCENTER_REDIS_URL": redis_url,
                "VCENTER_API_PORT": str(port),
                "VCENTER_PUBLIC_URL": f"http://127.0.0.1:{port}",
                # The server's command signing key (and a self-signed certificate, if asked for).
                "VCENTER_KEY_DIR": str(workdir / "keys"),
                # Datastores of a stack live below its work directory (the lab's loop mounts in
                # <workdir>/lab/datastores, a simulated host's folder): a root for the server and
                # for every agent (they inherit this environment).
                "VCENTER_DATASTORE_ROOTS": f"{DEFAULT_DATASTORE_ROOTS},{workdir}",
                "VCENTER_AGENT_DATASTORE_ROOTS": f"{DEFAULT_DATASTORE_ROOTS},{workdir}",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update({f"VCENTER_{k.upper()}": str(v) for k, v in settings.items()})
        return cls(workdir=workdir, env=env, api_port=port)

    # --- processes -----------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str], extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        logfile = open(self.workdir / f"{name}.log", "ab")
        proc = subprocess.Popen(VCENTER + args, env={**self.env, **(extra_env or {})}, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes[name] = proc
        return proc

    def run_cli(self, *args: str) -> str:
        return subprocess.run(VCENTER + list(args), env=self.env, check=True, capture_output=True, text=True).stdout

    def start_server(self, with_beat: bool = True) -> None:
        self.run_cli("db", "upgrade")
        self.run_cli("admin", "create", self.admin[0], "--password", self.admin[1], "--exist-ok")
        self._spawn("api", ["serve"])
        self._spawn("worker", ["worker"])
        if with_beat:
            self._spawn("beat", ["beat"])
        self.wait_http("/readyz", 30)

    def start_ha_monitor(self, name: str) -> subprocess.Popen:
        """One `vcenter ha` process (its log: <workdir>/<name>.log); start two for an active
        monitor and a standby."""
        return self._spawn(name, ["ha"])

    def stop_api(self) -> None:
        proc = self.processes["api"]
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)

    def start_api(self) -> None:
        self._spawn("api", ["serve"])
        self.wait_http("/readyz", 30)

    def wait_http(self, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.url}{path} did not answer within {timeout} s; see {self.workdir}/api.log")

    def client(self) -> httpx.Client:
        response = httpx.post(self.url + "/api/v1/session", json={"username": self.admin[0], "password": self.admin[1]})
        response.raise_for_status()
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {response.json()['token']}"}, timeout=30)

    # --- hosts ---------------------------------------------------------------------------
    def add_host(self, name: str, datacenter_id: int, cluster_id: int | None = None, simulated: bool = False) -> LabHost:
        """Add a host to the inventory and start its hypervisor (a private real libvirtd, or
        nothing for a simulated host) and its agent."""
        daemon = None if simulated else PrivateLibvirtd(self.workdir / "hosts" / name, name)
        if daemon is not None:
            daemon.start()
        host = LabHost(name=name, libvirtd=daemon)
        uri = daemon.uri if daemon else "simulated:///"
        with self.client() as api:
            created = api.post("/api/v1/hosts", json={"name": name, "datacenter_id": datacenter_id, "cluster_id": cluster_id, "libvirt_uri": uri})
            created.raise_for_status()
        host.host_id, host.token = created.json()["id"], created.json()["registration_token"]
        self.hosts[name] = host
        self.start_agent(name)
        self.confirm_host(name)
        return host

    def add_lab_host(self, lab_host: Any, datacenter_id: int, cluster_id: int | None = None, gateway: str = "10.213.0.1", declared_cpu_xml: str | None = None) -> LabHost:
        """Add a host of the lab (its own network namespace, cgroup and libvirtd) as a real host
        is added: the operator adds it to the inventory, installs it with deploy/install-host.sh
        and the one-time token, and starts its agent as the installer says; the agent reaches
        Redis and the API over the lab network only."""
        host = LabHost(name=lab_host.name, libvirtd=None, lab_host=lab_host)
        with self.client() as api:
            created = api.post("/api/v1/hosts", json={"name": lab_host.name, "address": lab_host.address, "datacenter_id": datacenter_id, "cluster_id": cluster_id, "libvirt_uri": lab_host.tls_uri})
            created.raise_for_status()
        host.host_id, host.token = created.json()["id"], created.json()["registration_token"]
        self.hosts[lab_host.name] = host
        self.install_lab_host(lab_host.name, gateway)
        extra = {"VCENTER_AGENT_DECLARED_CPU_XML": declared_cpu_xml} if declared_cpu_xml else None
        self.start_agent(lab_host.name, extra)
        self.confirm_host(lab_host.name)
        # As a host's install does: registered, the agent installs the certificate of the
        # server's CA; then libvirtd starts listening on TLS (migrations arrive that way).
        wait = time.monotonic() + 60
        while not lab_host.libvirtd.tls_ready:
            if time.monotonic() > wait:
                raise RuntimeError(f"agent of {lab_host.name} installed no TLS certificate; see {lab_host.workdir}/agent.log")
            time.sleep(0.2)
        lab_host.listen_tls()
        return host

    def install_lab_host(self, name: str, gateway: str = "10.213.0.1") -> None:
        """Run deploy/install-host.sh inside the lab host (its default paths, Debian packages
        already there), then add to its /etc/virtcenter/agent.env what an operator of this
        stack would: the stack's own settings (periods of the tests) and the lab's
        (vcenter.lab.stack.lab_agent_settings)."""
        host = self.hosts[name]
        lab_host = host.lab_host
        argv = [
            "sh",
            str(INSTALLER),
            "--server",
            f"{self.scheme}://{gateway}:{self.api_port}",
            "--registration-token",
            host.token or "",
            "--redis-url",
            with_host(self.env["VCENTER_REDIS_URL"], gateway),
        ]
        argv += ["--address", lab_host.address, "--wheel", str(build_wheel()), "--no-packages"]
        if self.env.get("VCENTER_API_CA"):
            argv += ["--api-ca", self.env["VCENTER_API_CA"]]
        done = lab_host.run(argv, check=False, timeout=600, env=installer_env())
        with open(lab_host.workdir / "install.log", "a") as log_file:
            log_file.write(done.stdout + done.stderr)
        if done.returncode != 0:
            raise RuntimeError(f"install-host.sh failed on {name} ({done.returncode}); see {lab_host.workdir}/install.log")
        self.set_agent_settings(name, lab_agent_settings(self.env, lab_host))

    def set_agent_settings(self, name: str, settings: dict[str, str]) -> None:
        """Set NAME=VALUE lines in a lab host's /etc/virtcenter/agent.env (values quoted for the
        shell that reads it), as an operator editing the file would."""
        env_file = self.hosts[name].lab_host.path(AGENT_ENV)
        lines = [ln for ln in env_file.read_text().splitlines() if ln.partition("=")[0] not in settings]
        lines += [f"{k}={shlex.quote(v)}" for k, v in settings.items()]
        tmp = env_file.with_name(".agent.env.lab")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, env_file)

    def agent_state_dir(self, name: str) -> Path:
        """Where the agent of ``name`` keeps its state, seen from here: the default path of an
        installed host (inside a lab host), or a directory of this stack."""
        lab_host = self.hosts[name].lab_host if name in self.hosts else None
        if lab_host is not None:
            return lab_host.path("/var/lib/virtcenter/agent")
        return self.workdir / "hosts" / name / "agent-state"

    def confirm_host(self, name: str, timeout: float = 60) -> None:
        """Do what the operator does: compare the thumbprint the agent registered with the
        one of the certificate on the host, and confirm it."""
        host = self.hosts[name]
        cert = self.agent_state_dir(name) / "agent.crt"
        deadline = time.monotonic() + timeout
        with self.client() as api:
            while True:
                current = api.get(f"/api/v1/hosts/{host.host_id}").json()
                if current["trust_state"] == "awaitingConfirmation" and cert.exists():
                    break
                if current["trust_state"] == "trusted":
                    return
                agent_dead = (host.agent is not None and host.agent.poll() is not None) or (host.lab_host is not None and host.lab_host.process_pid("agent") is None)
                if time.monotonic() > deadline or agent_dead:
                    raise RuntimeError(f"agent of {name} did not register; see {self.workdir}/agent-{name}.log")
                time.sleep(0.2)
            if current["thumbprint"] != thumbprint(x509.load_pem_x509_certificate(cert.read_bytes())):
                raise RuntimeError(f"host {name}: registered thumbprint differs from the agent's certificate")
            api.post(f"/api/v1/hosts/{host.host_id}/confirm", json={"thumbprint": current["thumbprint"]}).raise_for_status()

    def start_agent(self, name: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen | None:
        """Start the agent of ``name``; a lab host's as an installed host without systemd
        starts it (the installer's bootstrap line), ``extra_env`` added to its agent.env."""
        host = self.hosts[name]
        if host.lab_host is not None:
            if extra_env:
                self.set_agent_settings(name, extra_env)
            host.lab_host.start_process(BOOTSTRAP, env=installer_env(), name="agent", cwd="/")
            return None
        env = {"VCENTER_AGENT_REGISTRATION_TOKEN": host.token or "", "VCENTER_AGENT_STATE_DIR": str(self.agent_state_dir(name)), **(extra_env or {})}
        args = ["agent"]
        if host.libvirtd is None:
            args.append("--simulated")
        else:
            env["VCENTER_LIBVIRT_URI"] = host.libvirtd.uri
            # The agent runs in the root namespace here: its TLS files go where the host's
            # daemon sees /etc/pki, and it reloads that daemon, not the machine's.
            for var, inside in (("CA", "/etc/pki/CA"), ("LIBVIRT", "/etc/pki/libvirt"), ("QEMU", "/etc/pki/qemu")):
                env[f"VCENTER_AGENT_PKI_{var}_DIR"] = str(host.libvirtd.path(inside))
            env["VCENTER_AGENT_LIBVIRT_TLS_RELOAD"] = f"virt-admin -c {host.libvirtd.admin_uri} server-update-tls libvirtd"
        host.agent = self._spawn(f"agent-{name}", args, env)
        return host.agent

    def kill_agent(self, name: str, sig: int = signal.SIGKILL) -> None:
        agent = self.hosts[name].agent
        if agent is not None and agent.poll() is None:
            os.killpg(agent.pid, sig)
            agent.wait(15)

    # --- diagnosis -----------------------------------------------------------------------
    def log_tails(self, lines: int = 25) -> str:
        """The last lines of every process log of this stack (server processes, and agents in
        lab hosts): what a test failure report shows, since a CI run keeps nothing else."""
        logs = sorted(self.workdir.glob("*.log"))
        for host in self.hosts.values():
            if host.lab_host is not None:
                logs += sorted(Path(host.lab_host.workdir).glob("*.log"))
        parts = []
        for log in logs:
            try:
                tail = log.read_text(errors="replace").splitlines()[-lines:]
            except OSError as exc:
                tail = [f"(unreadable: {exc})"]
            parts.append(f"--- {log} (last {len(tail)} lines)\n" + "\n".join(tail))
        return "\n".join(parts)

    # --- teardown ------------------------------------------------------------------------
    def stop(self) -> None:
        for name, proc in reversed(list(self.processes.items())):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for name, proc in self.processes.items():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        for host in self.hosts.values():
            if host.libvirtd is not None:
                host.libvirtd.stop()
