"""Object states and the power-action rules of vCenter.

Vocabulary:
- power state: poweredOn / poweredOff / suspended (vCenter's words). A suspended VM has its
  memory saved to disk (libvirt managed save) and no QEMU process.
- connection state of a host: connected / disconnected / notResponding.
- task state: queued -> running -> success | error | cancelled.
- power action: what a user asks; ``check_power_action`` decides whether the VM's current
  state allows it and returns the error code when it does not.
"""

from __future__ import annotations

from enum import Enum


class PowerState(str, Enum):
    POWERED_ON = "poweredOn"
    POWERED_OFF = "poweredOff"
    SUSPENDED = "suspended"


class ConnectionState(str, Enum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    NOT_RESPONDING = "notResponding"


class TaskState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    ERROR = "error"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (TaskState.SUCCESS, TaskState.ERROR, TaskState.CANCELLED)


class PowerAction(str, Enum):
    POWER_ON = "powerOn"
    POWER_OFF = "powerOff"
    SHUTDOWN_GUEST = "shutdownGuest"
    RESET = "reset"
    SUSPEND = "suspend"
    RESUME = "resume"


# Which power states each action may start from, and the state it leads to.
_ALLOWED: dict[PowerAction, tuple[frozenset[PowerState], PowerState]] = {
    PowerAction.POWER_ON: (frozenset({PowerState.POWERED_OFF}), PowerState.POWERED_ON),
    PowerAction.POWER_OFF: (frozenset({PowerState.POWERED_ON, PowerState.SUSPENDED}), PowerState.POWERED_OFF),
    PowerAction.SHUTDOWN_GUEST: (frozenset({PowerState.POWERED_ON}), PowerState.POWERED_OFF),
    PowerAction.RESET: (frozenset({PowerState.POWERED_ON}), PowerState.POWERED_ON),
    PowerAction.SUSPEND: (frozenset({PowerState.POWERED_ON}), PowerState.SUSPENDED),
    PowerAction.RESUME: (frozenset({PowerState.SUSPENDED}), PowerState.POWERED_ON),
}


def check_power_action(action: PowerAction, current: PowerState) -> str | None:
    """Return None when ``action`` is allowed from ``current``, else a stable error code."""
    allowed, _ = _ALLOWED[action]
    if current in allowed:
        return None
    if action in (PowerAction.POWER_ON, PowerAction.RESUME) and current == PowerState.POWERED_ON:
        return "ALREADY_POWERED_ON"
    if current == PowerState.POWERED_OFF:
        return "ALREADY_POWERED_OFF" if action in (PowerAction.POWER_OFF, PowerAction.SHUTDOWN_GUEST) else "VM_POWERED_OFF"
    if current == PowerState.SUSPENDED:
        return "VM_SUSPENDED"
    return "INVALID_POWER_STATE"


def power_state_after(action: PowerAction) -> PowerState:
    return _ALLOWED[action][1]


class StopReason(str, Enum):
    """Why a running VM stopped, as libvirt's lifecycle events tell it."""

    DESTROYED = "destroyed"  # hard power-off from outside (virsh destroy) or by us
    SHUTDOWN = "shutdown"  # the guest shut itself down
    CRASHED = "crashed"  # QEMU died (killed, crashed) or the guest crashed
    SAVED = "saved"  # managed save: suspended
    MIGRATED = "migrated"
    UNKNOWN = "unknown"
