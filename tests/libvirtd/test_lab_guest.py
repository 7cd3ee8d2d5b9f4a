"""The lab guest for real: Debian cloud kernel + busybox initramfs under QEMU on a private libvirtd.

Two guests (96 MiB, direct kernel boot, TCG on this machine) share a temporary bridge; guest A
also has a 16 MiB raw disk. The tests run in file order on the same two guests (booting costs
seconds under TCG): heartbeats, ping between them, CPU burn, disk pattern + ACPI shutdown of A,
``poweroff`` from inside B. Needs network (apt-get download) once; later runs use the cache
under $VCENTER_LAB_CACHE or /var/cache/virtcenter/guest.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
import uuid

import pytest

from vcenter.hypervisor.libvirt.driver import LibvirtDriver
from vcenter.hypervisor.libvirt.guestchannel import GuestChannel
from vcenter.lab.guest import build_guest, first_bad_block, verify_pattern
from vcenter.lab.libvirtd import PrivateLibvirtd
from vcenter.messaging.contracts import DiskSpec, LifecycleEvent, NicSpec, VmSpec


IP_A, IP_B, IP_NOBODY = "10.251.7.1", "10.251.7.2", "10.251.7.99"


class Recorder:
    def __init__(self) -> None:
        self.events: list[LifecycleEvent] = []
        self.cond = threading.Condition()

    def __call__(self, ev: LifecycleEvent) -> None:
        with self.cond:
            self.events.append(ev)
            self.cond.notify_all()

    def wait(self, uuid_: str, event: str, timeout: float = 10.0) -> LifecycleEvent:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for ev in self.events:
                    if ev.uuid == uuid_ and ev.event == event:
                        return ev
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {event} event for {uuid_} within {timeout}s: {self.events}")
                self.cond.wait(left)


class Guest:
    def __init__(self, spec: VmSpec, started: float, channel: GuestChannel, disk: str | None):
        self.spec = spec
        self.uuid = spec.uuid
        self.started = started
        self.channel = channel
        self.disk = disk
        self.first_heartbeat: dict | None = None
        self.first_heartbeat_after: float | None = None


@pytest.fixture(scope="module")
def image():
    t0 = time.monotonic()
    img = build_guest()
    print(f"guest image ready in {time.monotonic() - t0:.2f}s: kernel {img.kernel.stat().st_size} B, initrd {img.initrd.stat().st_size} B")
    return img


@pytest.fixture(scope="module")
def libvirtd(tmp_path_factory):
    d = PrivateLibvirtd(tmp_path_factory.mktemp("labguest"), "it-labguest")
    d.start()
    yield d
    d.stop()
    assert d.qemu_pids() == []


@pytest.fixture(scope="module")
def bridge():
    name = f"vclg{os.getpid() % 100000}"
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "link", "set", name, "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], check=False)


@pytest.fixture(scope="module")
def recorder():
    return Recorder()


@pytest.fixture(scope="module")
def drv(libvirtd, recorder):
    d = LibvirtDriver(libvirtd.uri, connect_timeout=5)
    d.connect()
    d.subscribe_lifecycle(recorder)
    yield d
    d.close()


@pytest.fixture(scope="module")
def guests(drv, libvirtd, image, bridge, tmp_path_factory):
    ds = tmp_path_factory.mktemp("ds")
    specs = []
    for tag, ip, mac, disk in (("a", IP_A, "52:54:00:7c:00:01", True), ("b", IP_B, "52:54:00:7c:00:02", False)):
        u = str(uuid.uuid4())
        name = f"lg-{tag}-{u[:6]}"
        specs.append(
            VmSpec(
                name=name,
                uuid=u,
                vcpus=1,
                memory_mib=image.memory_mib,
                kernel=str(image.kernel),
                initrd=str(image.initrd),
                cmdline=image.cmdline_for(hostname=f"guest-{tag}", ip=f"{ip}/24"),
                disks=[DiskSpec(index=0, datastore_id=1, datastore_path=str(ds), file=f"{name}.raw", capacity_mib=16, format="raw")] if disk else [],
                nics=[NicSpec(index=0, portgroup="pg-lab", bridge=bridge, mac=mac)],
            )
        )
    out = []
    try:
        for spec in specs:
            drv.create_disks(spec)
            drv.define(spec)
        for spec in specs:
            started = time.monotonic()
            drv.start(spec.uuid)
            path = drv.guest_channel_path(spec.uuid)
            assert path and path.endswith("/org.virtcenter.heartbeat")
            # The private daemon sees its own /var/lib/libvirt and /run/libvirt.
            channel = GuestChannel(libvirtd.path(path))
            disk = os.path.join(str(ds), spec.disks[0].file) if spec.disks else None
            out.append(Guest(spec, started, channel, disk))
        yield out
    finally:
        for g in out:
            g.channel.close()
        for spec in specs:
            drv.undefine(spec.uuid, [])


def test_heartbeat_arrives_with_cmdline_settings(guests):
    for g, ip in zip(guests, (IP_A, IP_B)):
        hb = g.channel.read_heartbeat(timeout=15)
        g.first_heartbeat, g.first_heartbeat_after = hb, time.monotonic() - g.started
        print(f"{g.spec.name}: first heartbeat {g.first_heartbeat_after:.2f}s after start (guest uptime {hb['uptime']}s)")
        assert g.first_heartbeat_after < 15
        assert hb["hostname"] == f"guest-{g.spec.name.split('-')[1]}"
        assert hb["ip"] == f"{ip}/24" and hb["burn"] == 0
        assert re.fullmatch(r"[0-9a-f]{32}", hb["machine_id"])
        nxt = g.channel.read_heartbeat(timeout=5)
        assert nxt["seq"] > hb["seq"] and nxt["uptime"] > hb["uptime"]
        assert nxt["machine_id"] == hb["machine_id"]
        assert g.channel.send("hostname") == {"reply": "hostname", "hostname": hb["hostname"]}
    a, b = guests
    assert a.first_heartbeat["machine_id"] != b.first_heartbeat["machine_id"]


def test_ping_between_guests_on_the_bridge(guests):
    a, b = guests
    assert a.channel.send(f"ping {IP_B}", timeout=15) == {"reply": "ping", "ip": IP_B, "ok": True}
    assert b.channel.send(f"ping {IP_A}", timeout=15)["ok"] is True
    assert a.channel.send(f"ping {IP_NOBODY}", timeout=15) == {"reply": "ping", "ip": IP_NOBODY, "ok": False}


def _cpu_rate(drv, g: Guest, seconds: float) -> float:
    """Share of one host CPU the guest's QEMU used over ``seconds`` (heartbeats drained)."""
    c0, t0 = drv.domain_state(g.uuid).cpu_time_ns, time.monotonic()
    while time.monotonic() - t0 < seconds:
        try:
            g.channel.read_heartbeat(timeout=seconds - (time.monotonic() - t0))
        except TimeoutError:
            break
    return (drv.domain_state(g.uuid).cpu_time_ns - c0) / 1e9 / (time.monotonic() - t0)


def test_burn_raises_cpu_time_rate(drv, guests):
    a = guests[0]
    idle = _cpu_rate(drv, a, 3)
    assert a.channel.send("burn 50") == {"reply": "burn", "ok": True, "pct": 50}
    time.sleep(0.5)
    burning = _cpu_rate(drv, a, 3)
    assert a.channel.last_heartbeat["burn"] == 50
    assert a.channel.send("burn 0")["pct"] == 0
    print(f"CPU rate idle {idle:.2f}, burn 50: {burning:.2f}")
    assert burning > idle + 0.2 and burning > 0.3
    assert a.channel.send("burn 150")["ok"] is False


def test_write_pattern_then_acpi_shutdown(drv, guests, recorder):
    a = guests[0]
    reply = a.channel.send("write-pattern 4", timeout=60)
    assert reply == {"reply": "write-pattern", "ok": True, "mib": 4, "blocks": 1024}
    t0 = time.monotonic()
    assert drv.shutdown(a.uuid, timeout=30).power_state == "poweredOff"
    print(f"ACPI shutdown took {time.monotonic() - t0:.2f}s")
    ev = recorder.wait(a.uuid, "stopped")
    assert (ev.reason, ev.power_state) == ("shutdown", "poweredOff")
    assert drv.guest_channel_path(a.uuid) is None
    assert first_bad_block(a.disk, 4) is None
    assert verify_pattern(a.disk, 4)
    assert not verify_pattern(a.disk, 5)  # the fifth MiB was never written


def test_poweroff_from_inside(drv, guests, recorder):
    b = guests[1]
    assert b.channel.send("poweroff") == {"reply": "poweroff", "ok": True}
    deadline = time.monotonic() + 20
    while drv.domain_state(b.uuid).power_state != "poweredOff":
        assert time.monotonic() < deadline, "guest did not power itself off"
        time.sleep(0.1)
    ev = recorder.wait(b.uuid, "stopped")
    assert (ev.reason, ev.power_state) == ("shutdown", "poweredOff")
