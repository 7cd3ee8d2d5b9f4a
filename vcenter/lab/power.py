"""The lab's power type: a lab host switched off and on like a machine at its power supply.

What this module decides:
- :class:`LabDriver` is a power driver (vcenter.power.drivers.PowerDriver) for a host of the
  lab (vcenter.lab.hosts): power off kills every process of the host, power on boots it with
  libvirtd and its boot processes. No answer from the lab (no state file, no such host) is
  BMC_UNREACHABLE; an action that fails or outlasts its timeout is POWER_ACTION_FAILED.
- :data:`LAB_POWER` is power type ``lab``: settings ``{"type": "lab", "host": <lab host name>,
  "workdir": <the lab's workdir, default /run/virtcenter-lab>, "action_timeout": <s>}``. The
  product finds it through the entry point ``lab`` of the group ``virtcenter.power_types``
  (pyproject.toml; vcenter.core.plugins says why entry points).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vcenter.lab.hosts import DEFAULT_WORKDIR, Lab
from vcenter.power.drivers import (
    BMC_UNREACHABLE,
    DEFAULT_ACTION_TIMEOUT,
    POWER_ACTION_FAILED,
    PowerError,
    PowerState,
    PowerType,
)


class LabDriver:
    """A lab host (vcenter.lab.hosts): power off kills every process of the host, power on boots
    it with libvirtd and its boot processes. The lab's state file is read afresh on every call,
    so any process may hold this driver."""

    kind = "lab"

    def __init__(self, workdir: str | Path, host: str, action_timeout: float = DEFAULT_ACTION_TIMEOUT):
        self.workdir = Path(workdir)
        self.host = host
        self.action_timeout = float(action_timeout)

    def __repr__(self) -> str:
        return f"LabDriver({self.workdir}, {self.host})"

    def _lab_host(self) -> Any:
        if not (self.workdir / "lab.json").exists():
            raise PowerError(BMC_UNREACHABLE, f"no lab at {self.workdir}")
        lab = Lab(self.workdir)
        try:
            return lab.host(self.host)
        except KeyError as e:
            raise PowerError(BMC_UNREACHABLE, str(e.args[0])) from None

    def status(self, timeout: float | None = None) -> PowerState:
        return "on" if self._lab_host().powered else "off"

    def _act(self, action: Callable[[Any], None], timeout: float | None) -> None:
        host = self._lab_host()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with host.lab._locked():
                    action(host.lab.host(self.host))
            except BaseException as e:  # reported to the caller below
                failure.append(e)

        worker = threading.Thread(target=run, name=f"lab-power-{self.host}", daemon=True)
        worker.start()
        worker.join(self.action_timeout if timeout is None else timeout)
        if worker.is_alive():
            raise PowerError(POWER_ACTION_FAILED, f"lab host {self.host}: power action still running after {self.action_timeout if timeout is None else timeout:g}s")
        if failure:
            raise PowerError(POWER_ACTION_FAILED, f"lab host {self.host}: {failure[0]}")

    def power_on(self, timeout: float | None = None) -> None:
        self._act(lambda h: h.power_on(), timeout)

    def power_off(self, timeout: float | None = None, graceful: bool = True) -> None:
        self._act(lambda h: h.power_off(), timeout)


def _build(workdir: str | Path = DEFAULT_WORKDIR, **params: Any) -> LabDriver:
    return LabDriver(workdir, **params)


LAB_POWER = PowerType("lab", frozenset({"host"}), frozenset({"workdir", "action_timeout"}), _build, strings=("host",), non_empty="host")
