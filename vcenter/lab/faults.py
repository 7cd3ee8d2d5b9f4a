"""Faults on demand in the lab, each with its opposite.

What this module decides (the words an HA test speaks):
- kill_host / start_host: power loss and power on. Every process in the host's cgroup
  (agent, libvirtd, QEMU, the namespace anchor) gets SIGKILL at once; on start the host boots
  with a fresh libvirtd, no QEMU, its datastores and its boot processes (the agent).
- crash_libvirtd / restart_libvirtd: only the daemon dies; guests keep running and a new
  daemon re-attaches them.
- isolate / reconnect: the bridge-side end of the host's veth goes down; inside, the host
  keeps its address, its guests keep running, but no packet reaches the lab network.
- set_loss / set_bandwidth / clear_net: nftables random drop on the host's ``eth0`` (each
  direction), tbf on both ends of its link; clear_net removes both.
- datastore_gone / datastore_back: the datastore's mount is lazily detached in its hosts /
  mounted again.

Every function takes a :class:`~vcenter.lab.hosts.Lab` (any process may build one from the
workdir) and records what it did in the lab state, so ``lab status`` shows it.
"""

from __future__ import annotations

from collections.abc import Sequence

from vcenter.lab import network as net
from vcenter.lab.hosts import Lab


def kill_host(lab: Lab, name: str) -> None:
    with lab._locked():
        lab.host(name).power_off()


def start_host(lab: Lab, name: str) -> None:
    with lab._locked():
        lab.host(name).power_on()


def crash_libvirtd(lab: Lab, name: str) -> None:
    with lab._locked():
        lab.host(name).crash_libvirtd()


def restart_libvirtd(lab: Lab, name: str) -> None:
    with lab._locked():
        lab.host(name).restart_libvirtd()


def isolate(lab: Lab, name: str) -> None:
    with lab._locked():
        host = lab.host(name)
        net.set_link(host.root_link, False)
        host.record["net"]["isolated"] = True
        lab._save()


def reconnect(lab: Lab, name: str) -> None:
    with lab._locked():
        host = lab.host(name)
        net.set_link(host.root_link, True)
        host.record["net"]["isolated"] = False
        lab._save()


def set_loss(lab: Lab, name: str, percent: int) -> None:
    """Drop ``percent`` % of the packets on the host's link, in each direction (0 clears)."""
    with lab._locked():
        host = lab.host(name)
        net.set_loss(percent, host.inner_link, host.net_run)
        host.record["net"]["loss"] = percent
        lab._save()


def set_bandwidth(lab: Lab, name: str, kbit: int) -> None:
    """Limit the host's link to ``kbit`` kbit/s in each direction."""
    with lab._locked():
        host = lab.host(name)
        net.set_bandwidth(kbit, host.inner_link, host.net_run)  # leaving the host
        net.set_bandwidth(kbit, host.root_link)  # entering it
        host.record["net"]["kbit"] = kbit
        lab._save()


def clear_net(lab: Lab, name: str) -> None:
    """Remove packet loss and bandwidth limits (isolation has its own opposite)."""
    with lab._locked():
        host = lab.host(name)
        net.clear_loss(host.net_run)
        net.clear_bandwidth(host.inner_link, host.net_run)
        net.clear_bandwidth(host.root_link)
        host.record["net"].update(loss=0, kbit=None)
        lab._save()


def datastore_gone(lab: Lab, datastore: str, hosts: Sequence[str] | None = None) -> None:
    lab.datastore_gone(datastore, hosts)


def datastore_back(lab: Lab, datastore: str, hosts: Sequence[str] | None = None) -> None:
    lab.datastore_back(datastore, hosts)
