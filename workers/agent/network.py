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
- A port group that cannot be made now is logged and reported absent; the next state report
  tries again.

Vocabulary: a port group here is {"bridge", "vlan_id", "peers": [addresses of the other
hosts that carry it]} as the server's answer to a state report gives it.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from vcenter.core import plugins

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
    def ensure_portgroup(self, portgroup: dict[str, Any]) -> None: ...

    def portgroups_present(self, bridges: list[str]) -> list[str]: ...


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


class BridgeHostNetwork:
    """Port groups as Linux bridges of this host, each made by ``make`` (a port-group mode)."""

    def __init__(self, make: PortgroupMaker = make_plain_bridge):
        self.make = make

    def ensure_portgroup(self, portgroup: dict[str, Any]) -> None:
        self.make(portgroup)

    def portgroups_present(self, bridges: list[str]) -> list[str]:
        return sorted(b for b in bridges if _bridge_exists(b))


class SimulatedHostNetwork:
    def __init__(self) -> None:
        self.bridges: set[str] = set()

    def ensure_portgroup(self, portgroup: dict[str, Any]) -> None:
        self.bridges.add(portgroup["bridge"])

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
