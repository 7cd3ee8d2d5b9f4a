"""Port groups on a switch's uplinks (vSphere's standard switch): what a host makes for one.

What this module decides:
- An uplink NIC name is a Linux interface name of 1-15 characters of [A-Za-z0-9_.-] that
  starts with a letter or digit (bounded, and nothing a shell or a path would read otherwise).
- A switch's uplinks are in failover order: on a host the first of them the host has is the
  active uplink; the others stay out of the bridge (two NICs of one physical network in one
  bridge would loop it). A host with none of them: UPLINK_MISSING.
- VLAN 0 is untagged: the switch's bridge (``vcsw<switch id>``) with the uplink itself
  enslaved. Every untagged port group of a switch is that one bridge: one layer-2 segment.
- VLAN N (1-4094): a bridge of the port group (``vcpg<id>``) with the 802.1Q sub-interface of
  the uplink enslaved, named ``<nic>.<N>`` (a stable short name when that exceeds 15
  characters). On a host whose kernel has no 802.1Q it is refused (VLAN_UNSUPPORTED), never
  made untagged; a host that has not said is tried (its agent refuses if the kernel does).
- A port (the NIC or its sub-interface) already in another bridge is not taken from it
  (UPLINK_IN_USE): two switches naming one NIC on a host are a configuration error.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass

NIC_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
MAX_UPLINKS = 8


class UplinkRefused(Exception):
    """A port group this host cannot make as asked; ``code`` is stable (API and reports)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def check_nic_name(name: str) -> str:
    if not isinstance(name, str) or not NIC_NAME.match(name):
        raise ValueError(f"invalid NIC name {name!r}: 1-15 of [A-Za-z0-9_.-], starting with a letter or digit")
    return name


def switch_bridge(switch_id: int) -> str:
    return f"vcsw{switch_id}"


def portgroup_bridge(portgroup_id: int, switch_id: int | None, vlan_id: int) -> str:
    """The bridge of a port group: untagged ones on a switch share the switch's bridge."""
    if switch_id is not None and vlan_id == 0:
        return switch_bridge(switch_id)
    return f"vcpg{portgroup_id}"


def vlan_link_name(nic: str, vlan_id: int) -> str:
    """The 802.1Q sub-interface of ``nic`` for ``vlan_id``: ``eth1.10``; when that exceeds an
    interface name's 15 characters, ``vcv<crc of the NIC name>.<vlan>`` (stable, distinct per NIC)."""
    name = f"{nic}.{vlan_id}"
    if len(name) <= 15:
        return name
    return f"vcv{zlib.crc32(nic.encode()) & 0xFFFFFF:06x}.{vlan_id}"


def vlan_refusal(vlan_id: int, vlan_8021q: bool | None) -> str | None:
    """VLAN_UNSUPPORTED for a tagged port group on a host known to lack 802.1Q, else None."""
    if vlan_id != 0 and vlan_8021q is False:
        return "VLAN_UNSUPPORTED"
    return None


@dataclass(frozen=True)
class UplinkPlan:
    bridge: str
    nic: str  # the active physical uplink
    vlan_id: int
    vlan_link: str | None  # the 802.1Q sub-interface to make over ``nic``; None: untagged

    @property
    def port(self) -> str:
        """What is enslaved to the bridge."""
        return self.vlan_link or self.nic


def plan_uplink_portgroup(bridge: str, vlan_id: int, uplinks: Collection[str], host_nics: Collection[str], vlan_8021q: bool | None, masters: Mapping[str, str | None]) -> UplinkPlan:
    """What to make on a host for a port group on a switch; UplinkRefused when it cannot be made.
    ``masters``: the bridge each existing interface of the host is enslaved to (None: none)."""
    if not 0 <= vlan_id <= 4094:
        raise UplinkRefused("INVALID_VLAN", f"VLAN {vlan_id} outside 0..4094")
    if vlan_refusal(vlan_id, vlan_8021q):
        raise UplinkRefused("VLAN_UNSUPPORTED", f"VLAN {vlan_id} needs 802.1Q, which this host's kernel lacks; a tagged port group is never made untagged")
    nic = next((n for n in uplinks if n in host_nics), None)
    if nic is None:
        raise UplinkRefused("UPLINK_MISSING", f"none of the uplink NICs {', '.join(uplinks) or '(none)'} exists on this host (it has {', '.join(sorted(host_nics)) or 'none'})")
    vlan_link = vlan_link_name(nic, vlan_id) if vlan_id else None
    port = vlan_link or nic
    owner = masters.get(port)
    if owner is not None and owner != bridge:
        raise UplinkRefused("UPLINK_IN_USE", f"{port} is already a port of bridge {owner}")
    return UplinkPlan(bridge=bridge, nic=nic, vlan_id=vlan_id, vlan_link=vlan_link)
