"""Host networking as the agent provides it: the port groups the server expects on this host.

Modes (setting ``agent_portgroup_mode``):
- ``bridge``: a plain Linux bridge per port group, no uplink (a single host, or a demo).
- ``vxlan``: a bridge per port group joined to the other hosts carrying the same VLAN id by a
  VXLAN segment (VNI = VLAN id) over the host's address: the lab's stand-in for 802.1Q, since
  this kernel has no 802.1Q (LAB-NOTES.md). Real hosts would use an 802.1Q uplink.
- simulated: a set in memory, for simulated hosts.

Vocabulary: a port group here is {"bridge", "vlan_id", "peers": [addresses of the other
hosts that carry it]} as the server's answer to a state report gives it.
"""
from __future__ import annotations

import logging
import os
import subprocess
from typing import Any, Protocol

log = logging.getLogger(__name__)


class HostNetwork(Protocol):
    def ensure_portgroup(self, portgroup: dict[str, Any]) -> None: ...

    def portgroups_present(self, bridges: list[str]) -> list[str]: ...


def _bridge_exists(name: str) -> bool:
    return os.path.isdir(f"/sys/class/net/{name}/bridge")


class BridgeHostNetwork:
    def ensure_portgroup(self, portgroup: dict[str, Any]) -> None:
        name = portgroup["bridge"]
        if os.path.isdir(f"/sys/class/net/{name}"):
            return
        try:
            subprocess.run(["ip", "link", "add", "name", name, "type", "bridge"], check=True, capture_output=True, timeout=10)
            subprocess.run(["ip", "link", "set", name, "up"], check=True, capture_output=True, timeout=10)
            log.info("port group bridge %s created", name)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("cannot create bridge %s: %s", name, exc)

    def portgroups_present(self, bridges: list[str]) -> list[str]:
        return sorted(b for b in bridges if _bridge_exists(b))


class VxlanHostNetwork:
    def __init__(self, local_address: str, underlay: str = "eth0"):
        self.local_address = local_address
        self.underlay = underlay

    def ensure_portgroup(self, portgroup: dict[str, Any]) -> None:
        from vcenter.lab.network import ensure_vxlan_portgroup

        try:
            ensure_vxlan_portgroup(portgroup["bridge"], int(portgroup["vlan_id"]), self.local_address, list(portgroup.get("peers", [])), underlay=self.underlay)
        except Exception as exc:  # report what exists; the next report tries again
            log.warning("port group %s (VLAN %s): %s", portgroup["bridge"], portgroup["vlan_id"], exc)

    def portgroups_present(self, bridges: list[str]) -> list[str]:
        return sorted(b for b in bridges if _bridge_exists(b))


class SimulatedHostNetwork:
    def __init__(self) -> None:
        self.bridges: set[str] = set()

    def ensure_portgroup(self, portgroup: dict[str, Any]) -> None:
        self.bridges.add(portgroup["bridge"])

    def portgroups_present(self, bridges: list[str]) -> list[str]:
        return sorted(b for b in bridges if b in self.bridges)
