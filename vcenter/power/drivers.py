"""Power drivers: switch a host on and off through its BMC, Wake-on-LAN or the lab.

What this module decides:
- A driver has three calls, each bounded by a timeout: ``status()`` returns "on", "off" or
  "unknown"; ``power_on()`` and ``power_off()`` return once the host reached that state (the
  driver asks again until it does) or raise. Both are idempotent: a host already in the state
  is left alone.
- Every failure is a :class:`PowerError` with a stable code:
  ``BMC_UNREACHABLE`` (no answer from the power controller within the timeout, connection
  refused, no such lab host), ``BMC_AUTH_FAILED`` (the controller answered but refused the
  credentials), ``POWER_ACTION_FAILED`` (the controller refused the action, or the host did
  not reach the state in time, or the driver cannot do it, e.g. Wake-on-LAN has no power-off).
- ``power_off(graceful=True)`` asks for an orderly shutdown (IPMI "chassis power soft", Redfish
  GracefulShutdown); ``graceful=False`` cuts power (IPMI "off", Redfish ForceOff). DPM
  evacuates a host before it powers it off either way.
- IPMI goes through Debian's ``ipmitool -I lanplus``. The password never appears on its command
  line (``ps`` would show it): ``-E`` makes ipmitool read it from ``IPMI_PASSWORD`` in its
  environment. ``-v`` output tells an unreachable BMC ("Get Auth Capabilities error") from
  refused credentials ("RAKP 2 HMAC is invalid", or a BMC that drops an unknown user's RAKP 1).
- Redfish uses the standard ComputerSystem: ``PowerState`` for status and the
  ``#ComputerSystem.Reset`` action (ResetType On / GracefulShutdown / ForceOff), HTTP basic auth.
- A host's power settings are a JSON document ``{"type": "ipmi"|"redfish"|"wol"|..., ...}``;
  :func:`make_driver` validates it against its :class:`PowerType` (unknown keys are refused: a
  typo must not pass silently).
- The types are ``ipmi``, ``redfish`` and ``wol`` (here) and those that installed packages
  provide as entry points of the group ``virtcenter.power_types`` (vcenter.core.plugins), each
  a :class:`PowerType` whose name is the entry point's: the lab provides ``lab``
  (vcenter.lab.power), a lab host switched off and on; no code here imports a plugin.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from vcenter.core import plugins

PowerState = Literal["on", "off", "unknown"]

BMC_UNREACHABLE = "BMC_UNREACHABLE"
BMC_AUTH_FAILED = "BMC_AUTH_FAILED"
POWER_ACTION_FAILED = "POWER_ACTION_FAILED"
ERROR_CODES = (BMC_UNREACHABLE, BMC_AUTH_FAILED, POWER_ACTION_FAILED)

DEFAULT_TIMEOUT = 10.0  # one request to the power controller
DEFAULT_ACTION_TIMEOUT = 120.0  # power_on/power_off until the host is in the state


class PowerError(Exception):
    """A power operation failed; ``code`` is one of :data:`ERROR_CODES`."""

    def __init__(self, code: str, message: str):
        if code not in ERROR_CODES:
            raise ValueError(f"unknown power error code {code!r}")
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@runtime_checkable
class PowerDriver(Protocol):
    kind: str

    def status(self, timeout: float | None = None) -> PowerState: ...

    def power_on(self, timeout: float | None = None) -> None: ...

    def power_off(self, timeout: float | None = None, graceful: bool = True) -> None: ...


def _wait_for_state(driver: PowerDriver, want: PowerState, deadline: float, poll: float = 0.25) -> None:
    """Ask ``driver.status()`` until it says ``want``; POWER_ACTION_FAILED at ``deadline``."""
    last: PowerState = "unknown"
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise PowerError(POWER_ACTION_FAILED, f"the host did not reach power state {want!r} in time (last seen {last!r})")
        last = driver.status(timeout=min(left, DEFAULT_TIMEOUT))
        if last == want:
            return
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))


# --- IPMI -------------------------------------------------------------------------------------
_IPMI_PRIVILEGES = ("CALLBACK", "USER", "OPERATOR", "ADMINISTRATOR")


class IpmiDriver:
    """IPMI 2.0 over LAN (RMCP+) through ``ipmitool -I lanplus``."""

    kind = "ipmi"

    def __init__(
        self,
        address: str,
        port: int = 623,
        username: str = "",
        password: str = "",
        timeout: float = DEFAULT_TIMEOUT,
        action_timeout: float = DEFAULT_ACTION_TIMEOUT,
        privilege: str = "ADMINISTRATOR",
        cipher_suite: int | None = None,
        ipmitool: str = "ipmitool",
    ):
        if privilege not in _IPMI_PRIVILEGES:
            raise ValueError(f"privilege must be one of {', '.join(_IPMI_PRIVILEGES)}")
        self.address = address
        self.port = int(port)
        self.username = username
        self._password = password
        self.timeout = float(timeout)
        self.action_timeout = float(action_timeout)
        self.privilege = privilege
        self.cipher_suite = cipher_suite
        self.ipmitool = ipmitool

    def __repr__(self) -> str:  # never the password
        return f"IpmiDriver({self.address}:{self.port}, user={self.username!r})"

    def command(self, *args: str, timeout: float | None = None) -> list[str]:
        """The ipmitool argv for ``args`` (e.g. "chassis", "power", "status"): no password in it."""
        timeout = self.timeout if timeout is None else timeout
        # ipmitool retransmits every -N seconds, -R times; keep its own give-up inside ours.
        retries = max(1, min(4, int(timeout // 2)))
        argv = [self.ipmitool, "-I", "lanplus", "-H", self.address, "-p", str(self.port), "-U", self.username, "-E", "-L", self.privilege, "-N", "1", "-R", str(retries), "-v"]
        if self.cipher_suite is not None:
            argv += ["-C", str(int(self.cipher_suite))]
        return argv + list(args)

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IPMI_")}
        env["IPMI_PASSWORD"] = self._password
        return env

    def _run(self, *args: str, timeout: float | None = None) -> str:
        timeout = self.timeout if timeout is None else timeout
        if shutil.which(self.ipmitool) is None:
            raise PowerError(BMC_UNREACHABLE, f"{self.ipmitool} is not installed (Debian package ipmitool)")
        argv = self.command(*args, timeout=timeout)
        try:
            proc = subprocess.run(argv, env=self._env(), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            out = _text(e.stdout) + _text(e.stderr)
            if _auth_refused(out):
                raise PowerError(BMC_AUTH_FAILED, f"BMC {self.address}:{self.port} refused user {self.username!r}: {_last_error(out)}") from None
            raise PowerError(BMC_UNREACHABLE, f"no answer from BMC {self.address}:{self.port} within {timeout:g}s") from None
        out = proc.stdout + proc.stderr
        if proc.returncode == 0:
            return proc.stdout
        if _auth_refused(out):
            raise PowerError(BMC_AUTH_FAILED, f"BMC {self.address}:{self.port} refused the credentials of {self.username!r}: {_last_error(out)}")
        if any(m in out for m in ("Unable to establish", "Get Auth Capabilities error", "Error issuing Get Channel", "No response from remote controller")):
            raise PowerError(BMC_UNREACHABLE, f"BMC {self.address}:{self.port}: {_last_error(out)}")
        raise PowerError(POWER_ACTION_FAILED, f"ipmitool {' '.join(args)}: {_last_error(out)}")

    def status(self, timeout: float | None = None) -> PowerState:
        out = self._run("chassis", "power", "status", timeout=timeout)
        m = re.search(r"Chassis Power is (on|off)", out)
        return m.group(1) if m else "unknown"  # type: ignore[return-value]

    def _act(self, verb: str, want: PowerState, timeout: float | None) -> None:
        deadline = time.monotonic() + (self.action_timeout if timeout is None else timeout)
        if self.status(timeout=min(self.timeout, max(0.5, deadline - time.monotonic()))) == want:
            return
        self._run("chassis", "power", verb, timeout=min(self.timeout, max(0.5, deadline - time.monotonic())))
        _wait_for_state(self, want, deadline)

    def power_on(self, timeout: float | None = None) -> None:
        self._act("on", "on", timeout)

    def power_off(self, timeout: float | None = None, graceful: bool = True) -> None:
        self._act("soft" if graceful else "off", "off", timeout)


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _auth_refused(out: str) -> bool:
    markers = (
        "RAKP 2 HMAC is invalid",
        "RAKP 2 message indicates an error",
        "unauthorized name",
        "invalid integrity check",
        "no response from RAKP 1",
        "no response from RAKP 3",
        "RAKP 4 message indicates an error",
        "insufficient resources for session",
        "Invalid user name",
        "invalid role",
    )
    return any(m.lower() in out.lower() for m in markers)


def _last_error(out: str) -> str:
    lines = [ln.strip(" >") for ln in out.splitlines() if ln.strip() and not ln.startswith(("Loading IANA", "Using best available"))]
    errors = [ln for ln in lines if "rror" in ln or "invalid" in ln.lower() or "failed" in ln.lower()]
    return "; ".join(dict.fromkeys(errors or lines[-1:])) or "no output"


# --- Redfish ----------------------------------------------------------------------------------
_REDFISH_STATES: dict[str, PowerState] = {"On": "on", "Off": "off"}


class RedfishDriver:
    """DMTF Redfish: ComputerSystem ``PowerState`` and the ``ComputerSystem.Reset`` action."""

    kind = "redfish"

    def __init__(
        self,
        base_url: str,
        username: str = "",
        password: str = "",
        verify: bool | str = True,
        system_id: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        action_timeout: float = DEFAULT_ACTION_TIMEOUT,
    ):
        if not re.match(r"^https?://", base_url):
            raise ValueError("base_url must start with http:// or https://")
        self.base_url = base_url.rstrip("/")
        self.username = username
        self._password = password
        self.verify = verify
        self.system_id = system_id
        self.timeout = float(timeout)
        self.action_timeout = float(action_timeout)
        self._system_path: str | None = f"/redfish/v1/Systems/{system_id}" if system_id else None

    def __repr__(self) -> str:
        return f"RedfishDriver({self.base_url}, user={self.username!r})"

    def _request(self, method: str, path: str, timeout: float | None, json: Any = None) -> Any:
        import httpx

        timeout = self.timeout if timeout is None else timeout
        auth = (self.username, self._password) if self.username else None
        try:
            with httpx.Client(base_url=self.base_url, verify=self.verify, timeout=timeout, auth=auth, follow_redirects=False) as client:
                resp = client.request(method, path, json=json, headers={"Accept": "application/json"})
        except httpx.TimeoutException:
            raise PowerError(BMC_UNREACHABLE, f"no answer from {self.base_url} within {timeout:g}s") from None
        except httpx.HTTPError as e:  # refused, DNS, TLS
            raise PowerError(BMC_UNREACHABLE, f"{self.base_url}: {e.__class__.__name__}: {e}") from None
        if resp.status_code in (401, 403):
            raise PowerError(BMC_AUTH_FAILED, f"{self.base_url} refused user {self.username!r} (HTTP {resp.status_code})")
        if resp.status_code >= 400:
            raise PowerError(POWER_ACTION_FAILED, f"{method} {path}: HTTP {resp.status_code}: {_redfish_message(resp)}")
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise PowerError(POWER_ACTION_FAILED, f"{method} {path}: not JSON") from None

    def _system(self, timeout: float | None) -> str:
        if self._system_path is None:
            doc = self._request("GET", "/redfish/v1/Systems", timeout) or {}
            members = doc.get("Members") or []
            if len(members) != 1:
                raise PowerError(POWER_ACTION_FAILED, f"{self.base_url} has {len(members)} systems; set system_id")
            self._system_path = members[0]["@odata.id"]
        return self._system_path

    def status(self, timeout: float | None = None) -> PowerState:
        doc = self._request("GET", self._system(timeout), timeout) or {}
        return _REDFISH_STATES.get(doc.get("PowerState", ""), "unknown")

    def _reset(self, reset_type: str, want: PowerState, timeout: float | None) -> None:
        deadline = time.monotonic() + (self.action_timeout if timeout is None else timeout)
        step = lambda: min(self.timeout, max(0.5, deadline - time.monotonic()))  # noqa: E731
        system = self._system(step())
        doc = self._request("GET", system, step()) or {}
        if _REDFISH_STATES.get(doc.get("PowerState", "")) == want:
            return
        action = (doc.get("Actions") or {}).get("#ComputerSystem.Reset") or {}
        allowed = action.get("ResetType@Redfish.AllowableValues")
        if allowed is not None and reset_type not in allowed:
            raise PowerError(POWER_ACTION_FAILED, f"{self.base_url} does not offer ResetType {reset_type} (offers {', '.join(allowed)})")
        target = action.get("target") or f"{system}/Actions/ComputerSystem.Reset"
        self._request("POST", target, step(), json={"ResetType": reset_type})
        _wait_for_state(self, want, deadline)

    def power_on(self, timeout: float | None = None) -> None:
        self._reset("On", "on", timeout)

    def power_off(self, timeout: float | None = None, graceful: bool = True) -> None:
        self._reset("GracefulShutdown" if graceful else "ForceOff", "off", timeout)


def _redfish_message(resp: Any) -> str:
    try:
        err = resp.json().get("error", {})
        infos = err.get("@Message.ExtendedInfo") or []
        return "; ".join(i.get("Message", "") for i in infos if i.get("Message")) or err.get("message", "")
    except (ValueError, AttributeError):
        return resp.text[:200]


# --- Wake-on-LAN ------------------------------------------------------------------------------
_MAC = re.compile(r"^[0-9a-f]{2}([:-]?)[0-9a-f]{2}(\1[0-9a-f]{2}){4}$", re.I)


def parse_mac(mac: str) -> bytes:
    """``aa:bb:cc:dd:ee:ff``, ``aa-bb-...`` or ``aabbccddeeff`` as 6 bytes."""
    if not isinstance(mac, str) or not _MAC.match(mac.strip()):
        raise ValueError(f"invalid MAC address {mac!r}")
    return bytes.fromhex(re.sub(r"[:-]", "", mac.strip()))


def magic_packet(mac: str) -> bytes:
    """The Wake-on-LAN magic packet: 6 bytes 0xFF, then the MAC 16 times (102 bytes)."""
    return b"\xff" * 6 + parse_mac(mac) * 16


class WakeOnLanDriver:
    """Wake-on-LAN: power on only (a magic packet by UDP broadcast); it cannot see or cut power."""

    kind = "wol"

    def __init__(self, mac: str, broadcast: str = "255.255.255.255", port: int = 9, repeat: int = 3):
        parse_mac(mac)
        self.mac = mac
        self.broadcast = broadcast
        self.port = int(port)
        self.repeat = max(1, int(repeat))

    def __repr__(self) -> str:
        return f"WakeOnLanDriver({self.mac} via {self.broadcast}:{self.port})"

    def status(self, timeout: float | None = None) -> PowerState:
        return "unknown"

    def power_on(self, timeout: float | None = None) -> None:
        """Send the magic packet (``repeat`` times: UDP may drop one). Returns once sent; the
        caller learns that the host woke from the host itself (its agent reconnecting)."""
        packet = magic_packet(self.mac)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                s.settimeout(DEFAULT_TIMEOUT if timeout is None else timeout)
                for _ in range(self.repeat):
                    s.sendto(packet, (self.broadcast, self.port))
        except OSError as e:
            raise PowerError(BMC_UNREACHABLE, f"cannot send the magic packet to {self.broadcast}:{self.port}: {e}") from None

    def power_off(self, timeout: float | None = None, graceful: bool = True) -> None:
        raise PowerError(POWER_ACTION_FAILED, "Wake-on-LAN cannot power off")


# --- from a host's power settings -------------------------------------------------------------
POWER_TYPES_GROUP = "virtcenter.power_types"  # entry points: name -> a PowerType of that name


@dataclass(frozen=True)
class PowerType:
    """One ``type`` of power settings: the keys it takes and how its driver is built.

    ``strings`` are the keys that must be strings (in the order they are checked),
    ``non_empty`` a required key that must not be empty; ``build`` gets the settings without
    ``type`` once they passed every check."""

    name: str
    required: frozenset[str]
    optional: frozenset[str]
    build: Callable[..., PowerDriver]
    strings: tuple[str, ...] = ()
    non_empty: str | None = None


_BUILT_IN = {
    t.name: t
    for t in (
        PowerType(
            "ipmi",
            frozenset({"address", "username", "password"}),
            frozenset({"port", "timeout", "action_timeout", "privilege", "cipher_suite"}),
            IpmiDriver,
            strings=("address", "username", "password"),
            non_empty="address",
        ),
        PowerType(
            "redfish",
            frozenset({"base_url"}),
            frozenset({"username", "password", "verify", "system_id", "timeout", "action_timeout"}),
            RedfishDriver,
            strings=("username", "password", "base_url", "system_id"),
        ),
        PowerType("wol", frozenset({"mac"}), frozenset({"broadcast", "port", "repeat"}), WakeOnLanDriver, strings=("broadcast",)),
    )
}


def power_type_names() -> frozenset[str]:
    """Every power type this process can build: the built-in ones and the plugins'."""
    return frozenset(_BUILT_IN) | plugins.names(POWER_TYPES_GROUP)


def power_type(name: str) -> PowerType:
    """The PowerType called ``name`` (a plugin's module is imported now); KeyError if none."""
    if name in _BUILT_IN:
        return _BUILT_IN[name]
    found = plugins.load(POWER_TYPES_GROUP, name)
    if found is None:
        raise KeyError(name)
    if not isinstance(found, PowerType) or found.name != name:
        raise TypeError(f"entry point {name!r} of {POWER_TYPES_GROUP} is not the PowerType {name!r}")
    return found


def make_driver(config: Mapping[str, Any]) -> PowerDriver:
    """A driver from a host's power settings, e.g. ``{"type": "ipmi", "address": "10.0.0.5",
    "username": "admin", "password": "..."}``. Raises ValueError naming what is wrong."""
    if not isinstance(config, Mapping):
        raise ValueError("power settings must be an object")
    kind = config.get("type")
    names = power_type_names()
    if kind not in names:
        raise ValueError(f"power type must be one of {', '.join(sorted(names))}, not {kind!r}")
    ptype = power_type(kind)
    params = {k: v for k, v in config.items() if k != "type"}
    missing = sorted(ptype.required - params.keys())
    if missing:
        raise ValueError(f"{kind} power settings need {', '.join(missing)}")
    unknown = sorted(params.keys() - ptype.required - ptype.optional)
    if unknown:
        raise ValueError(f"unknown {kind} power settings: {', '.join(unknown)}")
    for key in ("port",):
        if key in params and (not isinstance(params[key], int) or isinstance(params[key], bool) or not 0 < params[key] < 65536):
            raise ValueError(f"{key} must be a port number")
    for key in ("timeout", "action_timeout"):
        if key in params and (not isinstance(params[key], (int, float)) or isinstance(params[key], bool) or params[key] <= 0):
            raise ValueError(f"{key} must be a positive number of seconds")
    for key in ptype.strings:
        if key in params and not isinstance(params[key], str):
            raise ValueError(f"{key} must be a string")
    if ptype.non_empty is not None and not params.get(ptype.non_empty):
        raise ValueError(f"{kind} power settings need a non-empty {ptype.non_empty}")
    return ptype.build(**params)
