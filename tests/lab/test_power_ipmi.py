"""IPMI power control for real: Debian's ipmitool (IPMI 2.0 over LAN, RMCP+) against a pyghmi
BMC on loopback (vcenter.lab.bmc.LabBmc) that powers a one-host lab off and on.

Nothing here is faked: the BMC is a real IPMI-over-LAN peer, the lab host is a real set of
namespaces with a real libvirtd on TCP, and power off kills every process of the host.
Lab.up waits while another process uses this machine's lab (a machine-wide lock).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from vcenter.lab.hosts import Lab
from vcenter.lab.power import LabDriver
from vcenter.power import BMC_AUTH_FAILED, BMC_UNREACHABLE, IpmiDriver, PowerError

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("libvirtd") or not shutil.which("ipmitool"), reason="needs root, libvirtd and ipmitool (Debian package ipmitool)"),
]

SECRET = "lab-BMC-pw-7"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def libvirtd_answers(uri: str, timeout: float = 5) -> bool:
    try:
        return subprocess.run(["virsh", "-c", uri, "version"], capture_output=True, timeout=timeout).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def wait_libvirtd(uri: str, timeout: float = 15) -> float:
    """Seconds until the host's libvirtd answers over TCP on the lab network."""
    t0 = time.monotonic()
    while not libvirtd_answers(uri, timeout=3):
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"libvirtd at {uri} did not answer within {timeout}s")
        time.sleep(0.1)
    return time.monotonic() - t0


def fresh(lab: Lab, name: str):
    """The host as the lab state file says now (the BMC changed it from its own Lab view)."""
    return Lab(lab.workdir).host(name)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("powerlab"))
    t0 = time.monotonic()
    lab.up(1)
    print(f"\nlab up (1 host): {time.monotonic() - t0:.2f} s")
    try:
        yield lab
    finally:
        lab.down()


def test_ipmi_powers_a_lab_host_off_and_on(lab):
    from vcenter.lab.bmc import LabBmc

    host = lab.host("host1")
    # A boot process, standing in for the host's agent: it must come back with the host.
    host.start_process(["sleep", "infinity"], name="agent", boot=True)
    assert libvirtd_answers(host.uri)

    port = free_udp_port()
    with LabBmc(lab, "host1", port, "admin", SECRET) as bmc:
        drv = IpmiDriver("127.0.0.1", port, "admin", SECRET, timeout=5, action_timeout=30)

        t0 = time.monotonic()
        for _ in range(5):
            assert drv.status() == "on"
        rtt = (time.monotonic() - t0) / 5
        print(f"\nipmitool chassis power status round trip: {rtt * 1000:.0f} ms")

        t0 = time.monotonic()
        drv.power_off()  # graceful: "chassis power soft"
        print(f"power off (soft) until status off: {time.monotonic() - t0:.2f} s (BMC action {bmc.actions[-1][1]:.2f} s)")
        h = fresh(lab, "host1")
        assert not h.powered
        assert h.pids() == set(), "processes of a powered-off host survived"
        assert not h.libvirtd_running()
        assert h.process_pid("agent") is None
        assert not libvirtd_answers(h.uri, timeout=3)
        assert drv.status() == "off"

        t0 = time.monotonic()
        drv.power_on()
        print(f"power on until status on: {time.monotonic() - t0:.2f} s (BMC action {bmc.actions[-1][1]:.2f} s)")
        assert drv.status() == "on"
        h = fresh(lab, "host1")
        assert h.powered
        print(f"then libvirtd answered over TCP ({h.uri}) after {wait_libvirtd(h.uri):.2f} s")
        assert h.process_pid("agent") is not None, "the boot process did not come back"

        t0 = time.monotonic()
        drv.power_off(graceful=False)  # "chassis power off"
        assert not fresh(lab, "host1").powered and drv.status() == "off"
        drv.power_on()
        print(f"hard off + on: {time.monotonic() - t0:.2f} s")
        wait_libvirtd(fresh(lab, "host1").uri)
        drv.power_on()  # already on: nothing happens
        assert [a for a, _ in bmc.actions] == ["off", "on", "off", "on"]

        t0 = time.monotonic()
        with pytest.raises(PowerError) as e:
            IpmiDriver("127.0.0.1", port, "admin", "wrong-password", timeout=5).status()
        assert e.value.code == BMC_AUTH_FAILED
        print(f"wrong password refused in {time.monotonic() - t0:.2f} s")
        assert bmc.last_error is None

    # Nothing listens on the BMC's port any more.
    t0 = time.monotonic()
    with pytest.raises(PowerError) as e:
        IpmiDriver("127.0.0.1", port, "admin", SECRET, timeout=3).status()
    took = time.monotonic() - t0
    assert e.value.code == BMC_UNREACHABLE and took < 4
    print(f"unreachable BMC reported in {took:.2f} s (timeout 3 s)")
    assert fresh(lab, "host1").powered

    # The lab's own driver, without a BMC.
    lab_drv = LabDriver(lab.workdir, "host1", action_timeout=30)
    assert lab_drv.status() == "on"
    t0 = time.monotonic()
    lab_drv.power_off()
    assert lab_drv.status() == "off" and fresh(lab, "host1").pids() == set()
    lab_drv.power_on()
    print(f"LabDriver off + on: {time.monotonic() - t0:.2f} s")
    assert lab_drv.status() == "on"
    wait_libvirtd(fresh(lab, "host1").uri)


def test_lab_bmc_as_a_process(lab):
    port = free_udp_port()
    env = dict(os.environ, VCENTER_LAB_BMC_PASSWORD=SECRET)
    proc = subprocess.Popen(
        [sys.executable, "-m", "vcenter.lab.bmc", "--workdir", str(lab.workdir), "--host", "host1", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        drv = IpmiDriver("127.0.0.1", port, "admin", SECRET, timeout=2)
        deadline = time.monotonic() + 15
        while True:
            try:
                assert drv.status() == "on"
                break
            except PowerError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
        assert SECRET not in " ".join(cmdline(proc.pid))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    assert proc.returncode == 0


def cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [a.decode() for a in f.read().split(b"\0") if a]
