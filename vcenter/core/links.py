"""Linux network links through ``ip``: what the agent (a host's port groups) and the lab (its
network) both drive.

What this module decides:
- Every command runs through a runner: by default in the current namespaces; the lab passes
  one that enters a lab host's network namespace. A refused command is a NetworkError with
  the command's stderr.
- Bridges are made without STP and without forwarding delay: a port forwards as soon as it is up.
- A host's NICs, as the agent reports them: its links that are physical (no link kind), or a
  veth or dummy (how a lab or a container gives a host its "physical" NIC); never loopback, a
  bridge, a VLAN sub-interface, a tunnel or a guest's tap.
- Whether the kernel has 802.1Q is measured, not assumed: a VLAN link is made on a scratch
  parent link (a dummy, else a veth pair: some kernels have only one of them) and deleted
  (True/False); None when no scratch parent can be made.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

Runner = Callable[..., subprocess.CompletedProcess]

_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
NIC_KINDS = frozenset({"", "veth", "dummy"})
_PROBE = "vcvlanprobe"  # a scratch dummy of the 802.1Q probe; never a real interface's name


class NetworkError(RuntimeError):
    pass


def run_local(argv: Sequence[str], check: bool = True, input: str | None = None, timeout: float = 20) -> subprocess.CompletedProcess:
    """Run a command in the current namespaces; raise NetworkError with its stderr."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, input=input, timeout=timeout)
    if check and proc.returncode != 0:
        raise NetworkError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def ifname(name: str) -> str:
    if not _IFNAME.match(name):
        raise ValueError(f"invalid interface name {name!r} (1-15 of [A-Za-z0-9_.-])")
    return name


def link_exists(name: str, run: Runner = run_local) -> bool:
    return run(["ip", "link", "show", "dev", ifname(name)], check=False).returncode == 0


def link_details(name: str, run: Runner = run_local) -> dict | None:
    proc = run(["ip", "-d", "-j", "link", "show", "dev", ifname(name)], check=False)
    if proc.returncode != 0:
        return None
    data = json.loads(proc.stdout or "[]")
    return data[0] if data else None


def all_links(run: Runner = run_local) -> list[dict[str, Any]]:
    return list(json.loads(run(["ip", "-d", "-j", "link", "show"]).stdout or "[]"))


def delete_link(name: str, run: Runner = run_local) -> None:
    if link_exists(name, run):
        run(["ip", "link", "del", "dev", name], check=False)


def set_link(name: str, up: bool, run: Runner = run_local) -> None:
    run(["ip", "link", "set", "dev", ifname(name), "up" if up else "down"])


def link_is_up(name: str, run: Runner = run_local) -> bool:
    details = link_details(name, run)
    return bool(details) and "UP" in details.get("flags", [])


def ensure_bridge(name: str, address_cidr: str | None = None, run: Runner = run_local) -> None:
    """A bridge without STP or forwarding delay (a port is forwarding as soon as it is up)."""
    if not link_exists(name, run):
        run(["ip", "link", "add", "name", ifname(name), "type", "bridge", "stp_state", "0", "forward_delay", "0"])
    if address_cidr:
        existing = run(["ip", "-j", "addr", "show", "dev", name]).stdout
        have = {f"{a['local']}/{a['prefixlen']}" for link in json.loads(existing or "[]") for a in link.get("addr_info", [])}
        if address_cidr not in have:
            run(["ip", "addr", "add", address_cidr, "dev", name])
    set_link(name, True, run)


def link_kind(link: dict[str, Any]) -> str:
    return str(link.get("linkinfo", {}).get("info_kind", ""))


def nics(links: list[dict[str, Any]]) -> list[str]:
    """The NICs among ``links`` (``ip -d -j link show``), sorted."""
    return sorted(link["ifname"] for link in links if link.get("ifname") != "lo" and "LOOPBACK" not in link.get("flags", []) and link_kind(link) in NIC_KINDS)


def masters(links: list[dict[str, Any]]) -> dict[str, str | None]:
    """Each link's bridge (None: not enslaved)."""
    return {link["ifname"]: link.get("master") for link in links}


def probe_8021q(run: Runner = run_local) -> bool | None:
    """Does this kernel make 802.1Q links? Measured on a scratch parent, which is deleted."""
    delete_link(_PROBE, run)
    parents = (["type", "dummy"], ["type", "veth", "peer", "name", f"{_PROBE}p"])
    if not any(run(["ip", "link", "add", _PROBE, *kind], check=False).returncode == 0 for kind in parents):
        return None
    try:
        return run(["ip", "link", "add", "link", _PROBE, "name", f"{_PROBE}.9", "type", "vlan", "id", "9"], check=False).returncode == 0
    finally:
        delete_link(_PROBE, run)  # takes its VLAN link (and a veth peer) with it
