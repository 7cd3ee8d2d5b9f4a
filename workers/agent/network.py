"""Host networking as the agent provides it: the Linux bridge of each port group the server
expects on this host. ``LinuxHostNetwork`` changes the real host (ip link); the simulated
variant keeps a set, for simulated hosts."""
from __future__ import annotations

import logging
import os
import subprocess
from typing import Protocol

log = logging.getLogger(__name__)


class HostNetwork(Protocol):
    def ensure_bridge(self, name: str) -> None: ...

    def bridges_present(self, names: list[str]) -> list[str]: ...


class LinuxHostNetwork:
    def ensure_bridge(self, name: str) -> None:
        if os.path.isdir(f"/sys/class/net/{name}"):
            return
        try:
            subprocess.run(["ip", "link", "add", "name", name, "type", "bridge"], check=True, capture_output=True, timeout=10)
            subprocess.run(["ip", "link", "set", name, "up"], check=True, capture_output=True, timeout=10)
            log.info("port group bridge %s created", name)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("cannot create bridge %s: %s", name, exc)

    def bridges_present(self, names: list[str]) -> list[str]:
        return sorted(n for n in names if os.path.isdir(f"/sys/class/net/{n}/bridge"))


class SimulatedHostNetwork:
    def __init__(self) -> None:
        self.bridges: set[str] = set()

    def ensure_bridge(self, name: str) -> None:
        self.bridges.add(name)

    def bridges_present(self, names: list[str]) -> list[str]:
        return sorted(n for n in names if n in self.bridges)
