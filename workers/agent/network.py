"""Host networking as the agent provides it: the port groups the server expects on this host.

What this module decides:
- A port group on a real host is a Linux bridge named as the server says; the agent makes the
  bridges of the port groups it is given and reports which of them exist (a bridge is there
  when the kernel lists it under /sys/class/net/<name>/bridge). Simulated hosts keep a set in
  memory instead.
- How a bridge is made is the port-group mode (setting ``agent_portgroup_mode``): ``bridge``
  (here) is a plain Linux bridge with no uplink (a single host, or a demo). Other modes are
  plugins: entry points of the group ``virtcenter.portgroup_modes`` (vcenter.core.plugins says
  why entry points), each a :data:`PortgroupModeFactory` whose name is the mode. The lab
  provides ``vxlan`` (vcenter.lab.network: the bridges of one VLAN id on different hosts joined
  by a VXLAN segment, the lab's stand-in for 802.1Q); no code here imports a plugin.
- A port group on a switch (it names ``uplinks``) is made here whatever the mode: the bridge
  with the host's active uplink NIC, or its 802.1Q sub-interface, enslaved, as
  vcenter.domain.uplinks plans it. What the plan refuses (VLAN_UNSUPPORTED, UPLINK_MISSING,
  UPLINK_IN_USE) or the kernel refuses is raised as UplinkRefused with its code: the agent
  reports it to the server, which shows it on the port group. The host's NICs and whether its
  kernel has 802.1Q (measured once per agent process, vcenter.core.links) are facts of the
  host's state report; the server refuses a tagged port group on a host without 802.1Q before
  it sends it, the plan here refuses it again.
- A port group that cannot be made now is logged and reported absent; the next state report
  tries again.

Vocabulary: a port group here is {"bridge", "vlan_id", "peers": [addresses of the other
hosts that carry it]} as the server's answer to a state report gives it, plus "switch" and
"uplinks" (NIC names in failover order) for a port group on a switch.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from vcenter.core import links, plugins
from vcenter.domain.uplinks import NIC_NAME, UplinkRefused, plan_uplink_portgroup

if TYPE_CHECKING:
    from vcenter.core.settings import Settings

log = logging.getLogger(__name__)


# Makes one port group's bridge on this host; idempotent; logs what fails and returns.
PortgroupMaker = Callable[[dict[str, Any]], None]
# A port-group mode: from the agent's settings, its PortgroupMaker (SystemExit when the
# settings lack what the mode needs: the agent cannot start).
PortgroupModeFactory = Callable[["Settings"], PortgroupMaker]
PORTGROUP_MODES_GROUP = "virtcenter.portgroup_modes"


class HostNetwork(Protocol):
    def ensure_portgroup(self, portgroup: dict[str, Any]) -> None:
        """Make it (idempotent); UplinkRefused when it cannot be made as asked."""

    def portgroups_present(self, bridges: list[str]) -> list[str]: ...

    def facts(self) -> tuple[list[str] | None, bool | None]:
        """This host's NICs, and whether its kernel has 802.1Q (None: not known)."""


def _bridge_exists(name: str) -> bool:
    return os.path.isdir(f"/sys/class/net/{name}/bridge")


def make_plain_bridge(portgroup: dict[str, Any]) -> None:
    """Port-group mode ``bridge``: a Linux bridge with no uplink."""
    name = portgroup["bridge"]
    if os.path.isdir(f"/sys/class/net/{name}"):
        return
    try:
        subprocess.run(["ip", "link", "add", "name", name, "type", "bridge"], check=True, capture_output=True, timeout=10)
        subprocess.run(["ip", "link", "set", name, "up"], check=True, capture_output=True, timeout=10)
        log.info("port group bridge %s created", name)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("cannot create bridge %s: %s", name, exc)


def make_uplink_portgroup(portgroup: dict[str, Any], vlan_8021q: bool | None, run: links.Runner = links.run_local) -> None:
    """A port group on a switch: its bridge with the planned port (the active uplink NIC, or
    its 802.1Q sub-interface) enslaved and up; ports of an earlier plan (another uplink, a
    changed VLAN) leave the bridge. Guests' taps and VXLAN links are never touched."""
    current = links.all_links(run)
    plan = plan_uplink_portgroup(portgroup["bridge"], int(portgroup["vlan_id"]), list(portgroup["uplinks"]), links.nics(current), vlan_8021q, links.masters(current))
    try:
        links.ensure_bridge(plan.bridge, run=run)
        links.set_link(plan.nic, True, run)
        if plan.vlan_link and not links.link_exists(plan.vlan_link, run):
            made = run(["ip", "link", "add", "link", plan.nic, "name", plan.vlan_link, "type", "vlan", "id", str(plan.vlan_id)], check=False)
            if made.returncode != 0:
                raise UplinkRefused("VLAN_UNSUPPORTED", f"the kernel refused 802.1Q link {plan.vlan_link}: {made.stderr.strip()}")
        for link in current:
            if link.get("master") == plan.bridge and link["ifname"] != plan.port and links.link_kind(link) in links.NIC_KINDS | {"vlan"}:
                run(["ip", "link", "set", "dev", link["ifname"], "nomaster"])
        run(["ip", "link", "set", "dev", plan.port, "master", plan.bridge, "up"])
    except links.NetworkError as exc:
        raise UplinkRefused("UPLINK_FAILED", str(exc)[:400]) from None
    log.info("port group bridge %s on uplink %s", plan.bridge, plan.port)


class BridgeHostNetwork:
    """Port groups as Linux bridges of this host: on a switch's uplink, or made by ``make`` (a
    port-group mode)."""

    def __init__(self, make: PortgroupMaker = make_plain_bridge, run: links.Runner = links.run_local):
        self.make = make
        self.run = run
        self._vlan_8021q: bool | None = None
        self._probed = False

    def ensure_portgroup(self, portgroup: dict[str, Any]) -> None:
        if portgroup.get("uplinks") is not None:
            make_uplink_portgroup(portgroup, self.facts()[1], self.run)
        else:
            self.make(portgroup)

    def portgroups_present(self, bridges: list[str]) -> list[str]:
        return sorted(b for b in bridges if _bridge_exists(b))

    def facts(self) -> tuple[list[str] | None, bool | None]:
        if not self._probed:  # a kernel does not gain or lose 802.1Q while the agent runs
            self._vlan_8021q, self._probed = links.probe_8021q(self.run), True
        try:
            return [n for n in links.nics(links.all_links(self.run)) if NIC_NAME.match(n)][:256], self._vlan_8021q
        except (links.NetworkError, OSError, ValueError) as exc:
            log.warning("cannot list this host's NICs: %s", exc)
            return None, self._vlan_8021q


class SimulatedHostNetwork:
    """In memory; the NICs and 802.1Q of a simulated host are ``nics`` and ``vlan_8021q``."""

    def __init__(self, nics: list[str] | None = None, vlan_8021q: bool | None = True) -> None:
        self.bridges: set[str] = set()
        self.nics = ["eth0", "eth1"] if nics is None else nics
        self.vlan_8021q = vlan_8021q

    def ensure_portgroup(self, portgroup: dict[str, Any]) -> None:
        if portgroup.get("uplinks") is not None:
            plan_uplink_portgroup(portgroup["bridge"], int(portgroup["vlan_id"]), list(portgroup["uplinks"]), self.nics, self.vlan_8021q, {})
        self.bridges.add(portgroup["bridge"])

    def facts(self) -> tuple[list[str] | None, bool | None]:
        return list(self.nics), self.vlan_8021q

    def portgroups_present(self, bridges: list[str]) -> list[str]:
        return sorted(b for b in bridges if b in self.bridges)


def make_network(settings: Settings, simulated: bool) -> HostNetwork:
    """This host's networking: simulated, or bridges made by the configured port-group mode."""
    if simulated:
        return SimulatedHostNetwork()
    mode = settings.agent_portgroup_mode
    if mode == "bridge":
        return BridgeHostNetwork()
    factory = plugins.load(PORTGROUP_MODES_GROUP, mode)
    if factory is None:
        raise SystemExit(f"VCENTER_AGENT_PORTGROUP_MODE={mode}: no installed package provides this port-group mode")
    return BridgeHostNetwork(factory(settings))
