"""The replicated shape of a whole virtcenter on this machine: N API processes (`vcenter serve`,
each on its own loopback port) behind HAProxy with the repository's configuration
(deploy/haproxy/haproxy.cfg), M orchestrator workers and beat processes, on one Stack
(vcenter.lab.stack). `make run` starts it with VCENTER_API_REPLICAS > 1; the system tests
(tests/system/test_replicas.py, test_no_loss.py) start it to kill parts of it.

What this decides:
- HAProxy connects to the replicas from one address of its own (``source``, default
  127.0.0.9, an address of the loopback network nobody else uses), and the replicas trust
  that address alone as a proxy (VCENTER_TRUSTED_PROXIES): a client on this machine (127.0.0.1,
  or any other loopback address) that reaches a replica directly is no proxy;
- clients and agents reach the system through the balancer (VCENTER_PUBLIC_URL is its URL);
- each worker has its own Celery node name (orchestrator<i>@host), so they answer pings apart.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from vcenter.lab.stack import Stack, free_port

ROOT = Path(__file__).resolve().parents[2]
HAPROXY_CFG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
LB_SOURCE = "127.0.0.9"


def server_lines(ports: dict[str, int], host: str = "127.0.0.1") -> str:
    """The `backend api` section naming each replica (the second file HAProxy reads)."""
    lines = ["backend api"] + [f"    server {name} {host}:{port}" for name, port in ports.items()]
    return "\n".join(lines) + "\n"


@dataclass
class Replicas:
    """What `start` started: the replicas' ports by process name, the workers' and beats' names."""

    stack: Stack
    api_ports: dict[str, int]
    workers: list[str] = field(default_factory=list)
    beats: list[str] = field(default_factory=list)

    def replica_url(self, name: str) -> str:
        return f"{self.stack.scheme}://127.0.0.1:{self.api_ports[name]}"

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill one process of the stack (and its children: uvicorn's, Celery's) without notice."""
        proc = self.stack.processes[name]
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
            proc.wait(15)


def start(stack: Stack, replicas: int, workers: int = 1, beats: int = 1, lb_port: int | None = None, source: str = LB_SOURCE) -> Replicas:
    """Migrate, create the administrator, then start HAProxy on ``lb_port`` (the stack's port
    from then on), ``replicas`` API processes, ``workers`` workers and ``beats`` beats; return
    when /readyz answers through the balancer."""
    if shutil.which("haproxy") is None:
        raise RuntimeError("haproxy is not installed (Debian package haproxy; scripts/install.sh installs it)")
    stack.api_port = lb_port or stack.api_port
    stack.env["VCENTER_API_PORT"] = str(stack.api_port)
    stack.env["VCENTER_PUBLIC_URL"] = stack.url
    stack.env["VCENTER_TRUSTED_PROXIES"] = source
    stack.run_cli("db", "upgrade")
    stack.run_cli("admin", "create", stack.admin[0], "--password", stack.admin[1], "--exist-ok")
    ports = {f"api{i}": free_port() for i in range(1, replicas + 1)}
    for name, port in ports.items():
        stack._spawn(name, ["serve"], {"VCENTER_API_PORT": str(port), "VCENTER_API_HOST": "127.0.0.1"})
    servers = stack.workdir / "haproxy-servers.cfg"
    servers.write_text(server_lines(ports))
    # The balancer listens where a single API would (VCENTER_API_HOST: loopback, and the lab
    # network where the lab's agents are), the replicas on loopback only.
    addresses = [a.strip() for a in stack.env.get("VCENTER_API_HOST", "127.0.0.1").split(",") if a.strip()]
    env = {**stack.env, "VCENTER_LB_BIND": ",".join(f"{a}:{stack.api_port}" for a in addresses), "VCENTER_LB_SOURCE": source}
    logfile = open(stack.workdir / "haproxy.log", "ab")
    stack.processes["haproxy"] = subprocess.Popen(["haproxy", "-db", "-f", str(HAPROXY_CFG), "-f", str(servers)], env=env, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True)
    started = Replicas(stack, ports)
    for i in range(1, workers + 1):
        started.workers.append(f"worker{i}")
        stack._spawn(f"worker{i}", ["worker", "--node-name", f"orchestrator{i}@%h"])
    for i in range(1, beats + 1):
        started.beats.append(f"beat{i}")
        stack._spawn(f"beat{i}", ["beat"])
    stack.wait_http("/readyz", 60)
    return started
