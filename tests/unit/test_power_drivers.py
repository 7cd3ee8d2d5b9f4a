"""Power drivers without hardware: settings validation, the Wake-on-LAN packet on a loopback
UDP socket, Redfish against a FAKE Redfish server (a few handlers on http.server written here,
not a real BMC), and IPMI's command line through a FAKE ipmitool script that records what it
was given. The real IPMI path (Debian's ipmitool against a pyghmi BMC powering a lab host) is
tests/lab/test_power_ipmi.py.
"""

from __future__ import annotations

import base64
import json
import socket
import stat
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from vcenter.power import (
    BMC_AUTH_FAILED,
    BMC_UNREACHABLE,
    POWER_ACTION_FAILED,
    IpmiDriver,
    PowerDriver,
    PowerError,
    RedfishDriver,
    WakeOnLanDriver,
    make_driver,
)
from vcenter.lab.power import LabDriver
from vcenter.power.drivers import magic_packet

SECRET = "s3cr3t-Pa55"


# --- make_driver ----------------------------------------------------------------------------
def test_make_driver_builds_each_type(tmp_path):
    d = make_driver({"type": "ipmi", "address": "10.0.0.5", "username": "admin", "password": SECRET})
    assert isinstance(d, IpmiDriver) and d.port == 623 and d.address == "10.0.0.5"
    assert SECRET not in repr(d)
    d = make_driver({"type": "redfish", "base_url": "https://bmc.example/", "username": "u", "password": SECRET, "verify": False, "system_id": "1"})
    assert isinstance(d, RedfishDriver) and d.base_url == "https://bmc.example" and d.verify is False
    assert SECRET not in repr(d)
    d = make_driver({"type": "wol", "mac": "52:54:00:12:34:56", "broadcast": "10.213.0.255"})
    assert isinstance(d, WakeOnLanDriver) and d.port == 9
    d = make_driver({"type": "lab", "host": "host1", "workdir": str(tmp_path)})
    assert isinstance(d, LabDriver) and d.host == "host1"
    for drv in (d, WakeOnLanDriver("52:54:00:12:34:56")):
        assert isinstance(drv, PowerDriver)


@pytest.mark.parametrize(
    "config, words",
    [
        ({}, "power type"),
        ({"type": "amt"}, "power type"),
        ("ipmi", "object"),
        ({"type": "ipmi", "address": "10.0.0.5", "username": "admin"}, "password"),
        ({"type": "ipmi", "address": "", "username": "a", "password": "b"}, "address"),
        ({"type": "ipmi", "address": "10.0.0.5", "username": "a", "password": "b", "port": 70000}, "port"),
        ({"type": "ipmi", "address": "10.0.0.5", "username": "a", "password": "b", "port": "623"}, "port"),
        ({"type": "ipmi", "address": "10.0.0.5", "username": "a", "password": "b", "passwd": "c"}, "passwd"),
        ({"type": "ipmi", "address": "10.0.0.5", "username": "a", "password": "b", "timeout": 0}, "timeout"),
        ({"type": "ipmi", "address": "10.0.0.5", "username": "a", "password": "b", "privilege": "ROOT"}, "privilege"),
        ({"type": "redfish"}, "base_url"),
        ({"type": "redfish", "base_url": "ftp://bmc"}, "http"),
        ({"type": "wol"}, "mac"),
        ({"type": "wol", "mac": "52:54:00:12:34"}, "MAC"),
        ({"type": "wol", "mac": "52:54:00:12:34:zz"}, "MAC"),
        ({"type": "lab"}, "host"),
    ],
)
def test_make_driver_refuses_bad_settings(config, words):
    with pytest.raises(ValueError, match=words):
        make_driver(config)


def test_power_error_has_stable_codes():
    e = PowerError(BMC_AUTH_FAILED, "nope")
    assert e.code == "BMC_AUTH_FAILED" and e.message == "nope" and str(e) == "BMC_AUTH_FAILED: nope"
    with pytest.raises(ValueError):
        PowerError("SOMETHING_ELSE", "x")


# --- Wake-on-LAN ----------------------------------------------------------------------------
def test_wol_sends_the_magic_packet():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(2)
        port = rx.getsockname()[1]
        drv = make_driver({"type": "wol", "mac": "52-54-00-AB-cd-0F", "broadcast": "127.0.0.1", "port": port})
        drv.power_on(timeout=2)
        packet, _ = rx.recvfrom(1024)
    mac = bytes.fromhex("525400abcd0f")
    assert len(packet) == 102
    assert packet[:6] == b"\xff" * 6
    assert packet[6:] == mac * 16
    assert packet == magic_packet("525400abcd0f")


def test_wol_cannot_power_off_and_does_not_know_the_state():
    drv = WakeOnLanDriver("52:54:00:12:34:56", "127.0.0.1")
    assert drv.status() == "unknown"
    with pytest.raises(PowerError) as e:
        drv.power_off()
    assert e.value.code == POWER_ACTION_FAILED and "Wake-on-LAN cannot power off" in e.value.message


# --- Redfish against a fake server ------------------------------------------------------------
class FakeRedfish:
    """A FAKE Redfish service: one ComputerSystem with PowerState and the Reset action; power
    changes take ``delay`` seconds (PoweringOn/PoweringOff in between). Not a real BMC."""

    def __init__(self, username="root", password=SECRET, delay=0.3, state="On"):
        self.username, self.password, self.delay = username, password, delay
        self.state = state
        self.resets: list[str] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code, body=None):
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(code)
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorised(self):
                want = "Basic " + base64.b64encode(f"{fake.username}:{fake.password}".encode()).decode()
                if self.headers.get("Authorization") != want:
                    self._send(401, {"error": {"code": "Base.1.0.GeneralError", "message": "unauthorised"}})
                    return False
                return True

            def do_GET(self):
                if not self._authorised():
                    return
                if self.path == "/redfish/v1/Systems":
                    return self._send(200, {"Members": [{"@odata.id": "/redfish/v1/Systems/node1"}]})
                if self.path == "/redfish/v1/Systems/node1":
                    return self._send(
                        200,
                        {
                            "@odata.id": "/redfish/v1/Systems/node1",
                            "Id": "node1",
                            "PowerState": fake.state,
                            "Actions": {
                                "#ComputerSystem.Reset": {
                                    "target": "/redfish/v1/Systems/node1/Actions/ComputerSystem.Reset",
                                    "ResetType@Redfish.AllowableValues": ["On", "ForceOff", "GracefulShutdown"],
                                }
                            },
                        },
                    )
                self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                if not self._authorised():
                    return
                if self.path != "/redfish/v1/Systems/node1/Actions/ComputerSystem.Reset":
                    return self._send(404, {"error": {"message": "not found"}})
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                kind = body.get("ResetType")
                final = {"On": "On", "ForceOff": "Off", "GracefulShutdown": "Off"}.get(kind)
                if final is None:
                    return self._send(400, {"error": {"@Message.ExtendedInfo": [{"Message": f"ResetType {kind} is not supported"}]}})
                fake.resets.append(kind)
                fake.state = "PoweringOn" if final == "On" else "PoweringOff"
                threading.Timer(fake.delay, lambda: setattr(fake, "state", final)).start()
                self._send(204)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_redfish():
    fake = FakeRedfish()
    yield fake
    fake.close()


def test_redfish_status_off_on(fake_redfish):
    drv = make_driver({"type": "redfish", "base_url": fake_redfish.url, "username": "root", "password": SECRET, "timeout": 2, "action_timeout": 5})
    assert drv.status() == "on"
    t0 = time.monotonic()
    drv.power_off()  # graceful by default
    assert time.monotonic() - t0 >= fake_redfish.delay * 0.9, "returned before the host was off"
    assert drv.status() == "off"
    drv.power_off()  # already off: no second request
    drv.power_on()
    assert drv.status() == "on"
    drv.power_off(graceful=False)
    assert fake_redfish.resets == ["GracefulShutdown", "On", "ForceOff"]


def test_redfish_wrong_password(fake_redfish):
    drv = RedfishDriver(fake_redfish.url, "root", "wrong", timeout=2)
    with pytest.raises(PowerError) as e:
        drv.status()
    assert e.value.code == BMC_AUTH_FAILED
    with pytest.raises(PowerError) as e:
        drv.power_on()
    assert e.value.code == BMC_AUTH_FAILED


def test_redfish_state_not_reached(fake_redfish):
    fake_redfish.delay = 5
    drv = RedfishDriver(fake_redfish.url, "root", SECRET, system_id="node1", timeout=1)
    t0 = time.monotonic()
    with pytest.raises(PowerError) as e:
        drv.power_off(timeout=1)
    assert e.value.code == POWER_ACTION_FAILED and "did not reach" in e.value.message
    assert time.monotonic() - t0 < 3


def test_redfish_unreachable():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    drv = RedfishDriver(f"http://127.0.0.1:{port}", "root", SECRET, timeout=1)
    with pytest.raises(PowerError) as e:
        drv.status()
    assert e.value.code == BMC_UNREACHABLE


def test_redfish_silent_server_times_out():
    with socket.socket() as srv:  # accepts TCP connections, never answers
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        drv = RedfishDriver(f"http://127.0.0.1:{srv.getsockname()[1]}", "root", SECRET, timeout=0.5)
        t0 = time.monotonic()
        with pytest.raises(PowerError) as e:
            drv.status()
    assert e.value.code == BMC_UNREACHABLE and time.monotonic() - t0 < 2


# --- IPMI through a fake ipmitool -------------------------------------------------------------
FAKE_IPMITOOL = """#!/bin/sh
# FAKE ipmitool for unit tests: records its argv and environment, prints what the test asks.
printf '%s\\n' "$@" > "$FAKE_DIR/argv"
printf '%s' "$IPMI_PASSWORD" > "$FAKE_DIR/password"
cat "$FAKE_DIR/stdout" 2>/dev/null
cat "$FAKE_DIR/stderr" >&2 2>/dev/null
[ "$(cat "$FAKE_DIR/sleep" 2>/dev/null || echo 0)" = 0 ] || exec sleep "$(cat "$FAKE_DIR/sleep")"
exit "$(cat "$FAKE_DIR/rc" 2>/dev/null || echo 0)"
"""


@pytest.fixture
def fake_ipmitool(tmp_path, monkeypatch):
    tool = tmp_path / "ipmitool"
    tool.write_text(FAKE_IPMITOOL)
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("FAKE_DIR", str(tmp_path))
    monkeypatch.setenv("IPMI_PASSWORD", "inherited-must-not-leak")

    def answer(stdout="", stderr="", rc=0, sleep=0):
        (tmp_path / "stdout").write_text(stdout)
        (tmp_path / "stderr").write_text(stderr)
        (tmp_path / "rc").write_text(str(rc))
        (tmp_path / "sleep").write_text(str(sleep))

    answer()
    return tool, tmp_path, answer


def test_ipmitool_command_line_never_holds_the_password(fake_ipmitool):
    tool, d, answer = fake_ipmitool
    drv = IpmiDriver("127.0.0.1", 16230, "admin", SECRET, ipmitool=str(tool), timeout=5)
    argv = drv.command("chassis", "power", "status")
    assert SECRET not in " ".join(argv)
    assert argv[:8] == [str(tool), "-I", "lanplus", "-H", "127.0.0.1", "-p", "16230", "-U"]
    assert "-E" in argv and "-P" not in argv and argv[-3:] == ["chassis", "power", "status"]
    answer(stdout="Chassis Power is on\n")
    assert drv.status() == "on"
    recorded = (d / "argv").read_text().splitlines()
    assert SECRET not in "\n".join(recorded) and "-E" in recorded
    assert (d / "password").read_text() == SECRET  # given through IPMI_PASSWORD only
    answer(stdout="Chassis Power is off\n")
    assert drv.status() == "off"


def test_ipmitool_errors_are_classified(fake_ipmitool):
    tool, _, answer = fake_ipmitool
    drv = IpmiDriver("127.0.0.1", 16230, "admin", SECRET, ipmitool=str(tool), timeout=2)
    answer(stderr="> RAKP 2 HMAC is invalid\nError: Unable to establish IPMI v2 / RMCP+ session\n", rc=1)
    with pytest.raises(PowerError) as e:
        drv.status()
    assert e.value.code == BMC_AUTH_FAILED
    answer(stderr="Get Auth Capabilities error\nError issuing Get Channel Authentication Capabilities request\nError: Unable to establish IPMI v2 / RMCP+ session\n", rc=1)
    with pytest.raises(PowerError) as e:
        drv.status()
    assert e.value.code == BMC_UNREACHABLE
    answer(stderr="Set Chassis Power Control to Down/Off failed: Node busy\n", rc=1)
    with pytest.raises(PowerError) as e:
        drv._run("chassis", "power", "off")
    assert e.value.code == POWER_ACTION_FAILED
    answer(sleep=5)
    t0 = time.monotonic()
    with pytest.raises(PowerError) as e:
        drv.status(timeout=0.5)
    assert e.value.code == BMC_UNREACHABLE and time.monotonic() - t0 < 2


def test_missing_ipmitool_is_reported():
    drv = IpmiDriver("127.0.0.1", 623, "admin", SECRET, ipmitool="/nonexistent/ipmitool")
    with pytest.raises(PowerError) as e:
        drv.status()
    assert e.value.code == BMC_UNREACHABLE and "ipmitool" in e.value.message


# --- the lab driver without a lab ---------------------------------------------------------------
def test_lab_driver_without_a_lab(tmp_path):
    drv = LabDriver(tmp_path / "nolab", "host1")
    with pytest.raises(PowerError) as e:
        drv.status()
    assert e.value.code == BMC_UNREACHABLE and "no lab" in e.value.message
    with pytest.raises(PowerError) as e:
        drv.power_on(timeout=1)
    assert e.value.code == BMC_UNREACHABLE
