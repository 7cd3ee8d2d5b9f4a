"""Links of the lab network, network faults, and port groups carried by VXLAN.

What this module decides:
- The lab network is one Linux bridge in the root namespace (``vclab0``, 10.213.0.1/24)
  with no uplink: nothing is routed or NATed out of it. Every lab host is a network
  namespace joined to it by a veth pair, ``vclab-<host>`` on the bridge side and ``eth0``
  inside the host.
- Each lab host also has a "physical NIC" ``eth1`` for its guests: a veth pair whose other end
  (``vclabu<host>``) is a port of the lab switch ``vclabsw0`` (no address). A switch made
  through the product with uplink ``eth1`` carries untagged port groups across hosts over it,
  as a real access switch would (workers.agent.network makes them; nothing here).
- Network faults act on a host's link: the bridge-side end goes down (isolation; the host
  keeps its address, its guests keep running), nftables drops a random share of the packets
  on ``eth0`` inside the host (loss), tbf shapes both directions (bandwidth).
- A port group without a switch is a Linux bridge; in the lab the bridges
  of one VLAN id on different hosts are joined by a unicast VXLAN segment, VNI = VLAN id,
  UDP 4789 over the hosts' lab addresses, with one all-zero FDB entry per peer carrying the
  same VLAN id (an overlay segment; a port group on a switch is a VLAN of its uplink
  instead, and 802.1Q is what this lab's kernel lacks, so tagged ones are refused). The agent
  makes them through port-group mode ``vxlan`` (:func:`vxlan_portgroups`, the entry point of
  the group ``virtcenter.portgroup_modes``, see workers.agent.network): over the agent's
  ``agent_address`` and ``agent_underlay``.

Every function runs its ``ip``/``bridge``/``nft``/``tc`` commands through a runner
(vcenter.core.links, shared with the agent): by default in the current namespaces (how the
agent calls them on its own host), or in a lab host's network namespace with
:func:`netns_runner` (how the lab calls them from the root namespace).

Vocabulary: underlay = the host interface the VXLAN packets leave by (``eth0`` in the lab);
peers = lab addresses of the other hosts carrying the same VLAN id.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import subprocess
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

# The link helpers are the product's (the agent makes port groups with them); the lab's callers name them here.
from vcenter.core.links import NetworkError, Runner, delete_link, ensure_bridge, ifname, link_details, run_local, set_link
from vcenter.core.links import link_exists as link_exists  # named by the lab's callers

if TYPE_CHECKING:
    from vcenter.core.settings import Settings

log = logging.getLogger(__name__)

VXLAN_PORT = 4789
_FAULT_TABLE = "vclab_fault"


def netns_runner(netns: str) -> Runner:
    """A runner that executes in the named network namespace (only the network namespace is
    entered: ip/bridge/nft/tc speak netlink and need no private /sys)."""

    def run(argv: Sequence[str], check: bool = True, input: str | None = None, timeout: float = 20) -> subprocess.CompletedProcess:
        return run_local(["nsenter", f"--net=/run/netns/{netns}", "--", *argv], check=check, input=input, timeout=timeout)

    return run


# --- the lab network (root namespace side) --------------------------------------------------
def check_subnet_free(subnet: str, bridge: str) -> None:
    """Refuse a lab subnet that overlaps a route of the machine not on our bridge."""
    net = ipaddress.ip_network(subnet)
    routes = json.loads(run_local(["ip", "-j", "route", "show"]).stdout or "[]")
    for r in routes:
        dst = r.get("dst")
        if not dst or dst == "default" or r.get("dev") == bridge:
            continue
        try:
            other = ipaddress.ip_network(dst, strict=False)
        except ValueError:
            continue
        if other.overlaps(net):
            raise NetworkError(f"lab subnet {subnet} overlaps route {dst} dev {r.get('dev')}")


def create_host_nic(netns: str, root_if: str, bridge: str, inner_if: str) -> None:
    """A NIC of the host cabled to ``bridge``: a veth pair, ``root_if`` a port of the bridge,
    ``inner_if`` in ``netns``; both up, no address."""
    run_local(["ip", "link", "add", ifname(root_if), "type", "veth", "peer", "name", ifname(inner_if), "netns", netns])
    run_local(["ip", "link", "set", "dev", root_if, "master", bridge, "up"])
    netns_runner(netns)(["ip", "link", "set", "dev", inner_if, "up"])


def create_host_link(netns: str, root_if: str, bridge: str, address_cidr: str, inner_if: str = "eth0") -> None:
    """The host's management NIC on ``bridge`` (:func:`create_host_nic`) with ``address_cidr``;
    loopback up. No default route: the host reaches only the lab subnet."""
    create_host_nic(netns, root_if, bridge, inner_if)
    inner = netns_runner(netns)
    inner(["ip", "addr", "add", address_cidr, "dev", inner_if])
    inner(["ip", "link", "set", "dev", "lo", "up"])


# --- network faults ----------------------------------------------------------------------------
def set_loss(percent: int, dev: str = "eth0", run: Runner = run_local) -> None:
    """Drop ``percent`` % of the packets entering and leaving ``dev`` (each direction drawn
    independently, as on a lossy link). 0 clears."""
    if not 0 <= percent <= 100:
        raise ValueError("percent must be within 0..100")
    clear_loss(run)
    if percent == 0:
        return
    dev = ifname(dev)
    draw = "" if percent == 100 else f"numgen random mod 100 < {percent} "
    rules = (
        f"table inet {_FAULT_TABLE} {{\n"
        f"  chain ingress {{ type filter hook input priority -300; policy accept;\n"
        f'    iifname "{dev}" {draw}counter drop\n  }}\n'
        f"  chain egress {{ type filter hook output priority -300; policy accept;\n"
        f'    oifname "{dev}" {draw}counter drop\n  }}\n'
        f"}}\n"
    )
    run(["nft", "-f", "-"], input=rules)


def clear_loss(run: Runner = run_local) -> None:
    run(["nft", "delete", "table", "inet", _FAULT_TABLE], check=False)


def set_bandwidth(kbit: int, dev: str, run: Runner = run_local) -> None:
    """Limit what leaves ``dev`` to ``kbit`` kbit/s with a token bucket (tbf)."""
    if kbit <= 0:
        raise ValueError("kbit must be positive")
    burst = max(4096, kbit * 125 // 50)  # 20 ms at the rate, at least a few full frames
    run(["tc", "qdisc", "replace", "dev", ifname(dev), "root", "tbf", "rate", f"{kbit}kbit", "burst", str(burst), "latency", "200ms"])


def clear_bandwidth(dev: str, run: Runner = run_local) -> None:
    run(["tc", "qdisc", "del", "dev", ifname(dev), "root"], check=False)


# --- port groups -------------------------------------------------------------------------------
def vxlan_name(vlan_id: int) -> str:
    return f"vxlan{vlan_id}"


def _check_vlan(vlan_id: int) -> int:
    if not isinstance(vlan_id, int) or not 1 <= vlan_id <= 4094:
        raise ValueError(f"VLAN id {vlan_id!r} outside 1..4094")
    return vlan_id


def fdb_peers(vxlan: str, run: Runner = run_local) -> set[str]:
    out = run(["bridge", "fdb", "show", "dev", ifname(vxlan)], check=False).stdout
    peers = set()
    for line in out.splitlines():
        parts = line.split()
        if parts[:1] == ["00:00:00:00:00:00"] and "dst" in parts:
            peers.add(parts[parts.index("dst") + 1])
    return peers


def ensure_vxlan_portgroup(bridge: str, vlan_id: int, local_address: str, peers: Iterable[str], underlay: str = "eth0", run: Runner = run_local) -> None:
    """Make port group ``bridge`` with VLAN ``vlan_id`` exist on this host: a bridge, a VXLAN
    device (VNI = VLAN id, unicast to exactly ``peers``) enslaved to it, both up. Idempotent:
    a VXLAN device of another VNI, local address or bridge is rebuilt; peers are set exactly."""
    _check_vlan(vlan_id)
    ensure_bridge(bridge, run=run)
    vx = vxlan_name(vlan_id)
    details = link_details(vx, run)
    if details is not None:
        data = details.get("linkinfo", {}).get("info_data", {})
        if data.get("id") != vlan_id or data.get("local") != local_address or data.get("port") != VXLAN_PORT:
            run(["ip", "link", "del", "dev", vx])
            details = None
    if details is None:
        run(["ip", "link", "add", vx, "type", "vxlan", "id", str(vlan_id), "local", local_address, "dstport", str(VXLAN_PORT), "dev", ifname(underlay)])
    if (details or {}).get("master") != bridge:
        run(["ip", "link", "set", "dev", vx, "master", bridge])
    want = {str(ipaddress.ip_address(p)) for p in peers} - {local_address}
    have = fdb_peers(vx, run)
    for peer in sorted(want - have):
        run(["bridge", "fdb", "append", "00:00:00:00:00:00", "dev", vx, "dst", peer])
    for peer in sorted(have - want):
        run(["bridge", "fdb", "del", "00:00:00:00:00:00", "dev", vx, "dst", peer], check=False)
    set_link(vx, True, run)


def vxlan_portgroups(settings: Settings) -> Callable[[dict[str, Any]], None]:
    """Port-group mode ``vxlan`` of the agent: makes a port group ({"bridge", "vlan_id",
    "peers"}) with :func:`ensure_vxlan_portgroup` over this host's address; what fails is
    logged (the agent's next state report tries again). The agent cannot start without
    ``agent_address``."""
    if not settings.agent_address:
        raise SystemExit("VCENTER_AGENT_ADDRESS is required with VCENTER_AGENT_PORTGROUP_MODE=vxlan")
    local_address, underlay = settings.agent_address, settings.agent_underlay

    def make(portgroup: dict[str, Any]) -> None:
        try:
            ensure_vxlan_portgroup(portgroup["bridge"], int(portgroup["vlan_id"]), local_address, list(portgroup.get("peers", [])), underlay=underlay)
        except Exception as exc:  # report what exists; the next report tries again
            log.warning("port group %s (VLAN %s): %s", portgroup["bridge"], portgroup["vlan_id"], exc)

    return make


def remove_vxlan_portgroup(bridge: str, vlan_id: int, run: Runner = run_local) -> None:
    delete_link(vxlan_name(_check_vlan(vlan_id)), run)
    delete_link(bridge, run)


def list_vxlan_portgroups(run: Runner = run_local) -> dict[str, dict]:
    """Port groups that really exist here: {bridge: {"vlan_id", "vxlan", "peers", "up"}} for
    every VXLAN device enslaved to a bridge. What the agent reports, not what was asked for."""
    links = json.loads(run(["ip", "-d", "-j", "link", "show", "type", "vxlan"]).stdout or "[]")
    found = {}
    for link in links:
        master = link.get("master")
        if not master:
            continue
        found[master] = {
            "vlan_id": link.get("linkinfo", {}).get("info_data", {}).get("id"),
            "vxlan": link["ifname"],
            "peers": sorted(fdb_peers(link["ifname"], run)),
            "up": "UP" in link.get("flags", []),
        }
    return found
