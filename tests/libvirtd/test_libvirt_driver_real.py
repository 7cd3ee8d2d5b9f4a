"""LibvirtDriver against a real private libvirtd with real QEMU guests.

Guests are firmware-only (no kernel, 32 MiB) with a small qcow2 disk on a temporary datastore
directory; the domain type is what this machine supports (qemu/TCG on a PVM nested host).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid

import pytest

from vcenter.hypervisor.base import DriverError
from vcenter.hypervisor.libvirt.driver import LibvirtDriver
from vcenter.hypervisor.libvirt.xml import detect_domain_type
from vcenter.lab.libvirtd import PrivateLibvirtd
from vcenter.messaging.contracts import DiskSpec, LifecycleEvent, NicSpec, VmSpec


@pytest.fixture(scope="session")
def libvirtd(tmp_path_factory):
    d = PrivateLibvirtd(tmp_path_factory.mktemp("host1"), "it-host1")
    d.start()
    yield d
    d.stop()
    assert d.qemu_pids() == []


class Recorder:
    def __init__(self) -> None:
        self.events: list[LifecycleEvent] = []
        self.cond = threading.Condition()

    def __call__(self, ev: LifecycleEvent) -> None:
        with self.cond:
            self.events.append(ev)
            self.cond.notify_all()

    def wait(self, uuid_: str, event: str, timeout: float = 5.0, after: int = 0) -> LifecycleEvent:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for ev in self.events[after:]:
                    if ev.uuid == uuid_ and ev.event == event:
                        return ev
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {event} event for {uuid_} within {timeout}s: {self.events}")
                self.cond.wait(left)


@pytest.fixture(scope="session")
def recorder():
    return Recorder()


@pytest.fixture(scope="session")
def drv(libvirtd, recorder):
    d = LibvirtDriver(libvirtd.uri, connect_timeout=5)
    d.connect()
    d.subscribe_lifecycle(recorder)
    yield d
    d.close()


@pytest.fixture
def datastore(tmp_path):
    ds = tmp_path / "ds"
    ds.mkdir()
    return ds


def make_spec(datastore, **kw) -> VmSpec:
    u = str(uuid.uuid4())
    base = dict(name=f"it-{u[:8]}", uuid=u, vcpus=1, memory_mib=32, disks=[DiskSpec(index=0, datastore_id=1, datastore_path=str(datastore), file=f"it-{u[:8]}.qcow2", capacity_mib=16)])
    base.update(kw)
    return VmSpec(**base)


def create(drv, spec):
    drv.create_disks(spec)
    return drv.define(spec)


def qemu_pid(libvirtd, name) -> int | None:
    pf = libvirtd.path(f"/run/libvirt/qemu/{name}.pid")
    try:
        pid = int(pf.read_text())
    except (OSError, ValueError):
        return None
    return pid if os.path.exists(f"/proc/{pid}") else None


def virsh(libvirtd, *args):
    return subprocess.run(["virsh", "-c", libvirtd.uri, *args], capture_output=True, text=True, check=True)


def test_host_facts(drv, libvirtd):
    f = drv.host_facts()
    assert f.host_uuid == libvirtd.host_uuid
    assert f.hypervisor == detect_domain_type()
    assert f.libvirt_version.startswith("9.")
    assert f.cpu_model and f.cpu_cores and f.memory_mib


def test_define_twice_gives_one_domain(drv, datastore):
    spec = make_spec(datastore)
    a = create(drv, spec)
    b = create(drv, spec)
    assert a.uuid == b.uuid and a.power_state == "poweredOff"
    assert [d.uuid for d in drv.list_domains()].count(spec.uuid) == 1
    drv.undefine(spec.uuid, [])


def test_power_cycle(drv, libvirtd, datastore, recorder):
    spec = make_spec(datastore)
    create(drv, spec)
    t0 = time.monotonic()
    assert drv.start(spec.uuid).power_state == "poweredOn"
    print(f"guest start: {time.monotonic() - t0:.2f}s")
    pid = qemu_pid(libvirtd, spec.name)
    assert pid
    assert drv.start(spec.uuid).power_state == "poweredOn"
    assert qemu_pid(libvirtd, spec.name) == pid  # no second QEMU

    n = len(recorder.events)
    t0 = time.monotonic()
    assert drv.suspend(spec.uuid).power_state == "suspended"
    print(f"managed save: {time.monotonic() - t0:.2f}s")
    assert qemu_pid(libvirtd, spec.name) is None and pid not in libvirtd.qemu_pids()  # no QEMU left
    assert drv.domain_state(spec.uuid).power_state == "suspended"
    ev = recorder.wait(spec.uuid, "stopped", after=n)
    assert (ev.reason, ev.power_state) == ("saved", "suspended")
    assert drv.suspend(spec.uuid).power_state == "suspended"

    assert drv.resume(spec.uuid).power_state == "poweredOn"
    assert qemu_pid(libvirtd, spec.name)
    assert drv.reset(spec.uuid).power_state == "poweredOn"

    with pytest.raises(DriverError) as e:
        drv.reconfigure(spec.uuid, 2, 48)
    assert e.value.code == "VM_POWERED_ON"

    assert drv.stop(spec.uuid).power_state == "poweredOff"
    assert drv.stop(spec.uuid).power_state == "poweredOff"
    st = drv.reconfigure(spec.uuid, 2, 48)
    assert (st.vcpus, st.memory_mib) == (2, 48)
    st = drv.reconfigure(spec.uuid, 1, 32)
    assert (st.vcpus, st.memory_mib) == (1, 32)
    assert drv.start(spec.uuid).power_state == "poweredOn"
    drv.stop(spec.uuid)
    drv.undefine(spec.uuid, [])


def test_shutdown_of_firmware_guest_times_out(drv, datastore):
    spec = make_spec(datastore)
    create(drv, spec)
    drv.start(spec.uuid)
    with pytest.raises(DriverError) as e:
        drv.shutdown(spec.uuid, timeout=1)
    assert e.value.code == "GUEST_SHUTDOWN_TIMEOUT"
    drv.stop(spec.uuid)
    assert drv.shutdown(spec.uuid, timeout=1).power_state == "poweredOff"
    drv.undefine(spec.uuid, [])


def test_undefine_deletes_disk_and_is_idempotent(drv, datastore):
    spec = make_spec(datastore)
    paths = drv.create_disks(spec)
    assert os.path.exists(paths[0])
    drv.define(spec)
    drv.start(spec.uuid)
    drv.suspend(spec.uuid)  # managed save image must go too
    drv.undefine(spec.uuid, paths)
    assert drv.domain_state(spec.uuid) is None
    assert not os.path.exists(paths[0])
    drv.undefine(spec.uuid, paths)


def test_virsh_destroy_event_is_destroyed(drv, libvirtd, datastore, recorder):
    spec = make_spec(datastore)
    create(drv, spec)
    drv.start(spec.uuid)
    n = len(recorder.events)
    virsh(libvirtd, "destroy", spec.uuid)
    ev = recorder.wait(spec.uuid, "stopped", after=n)
    assert (ev.reason, ev.power_state) == ("destroyed", "poweredOff")
    drv.undefine(spec.uuid, [])


def test_sigkill_of_qemu_is_crashed(drv, libvirtd, datastore, recorder):
    spec = make_spec(datastore)
    create(drv, spec)
    drv.start(spec.uuid)
    n = len(recorder.events)
    os.kill(qemu_pid(libvirtd, spec.name), signal.SIGKILL)
    ev = recorder.wait(spec.uuid, "stopped", after=n)
    assert (ev.reason, ev.power_state) == ("crashed", "poweredOff")
    assert drv.domain_state(spec.uuid).power_state == "poweredOff"
    drv.undefine(spec.uuid, [])


def test_bridge_nic(drv, datastore):
    bridge = f"vct{os.getpid() % 100000}"
    spec = make_spec(datastore, nics=[NicSpec(index=0, portgroup="pg-test", bridge=bridge, mac="52:54:00:aa:bb:01")])
    with pytest.raises(DriverError) as e:
        create(drv, spec)
    assert e.value.code == "PORTGROUP_ABSENT"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
        create(drv, spec)
        assert drv.start(spec.uuid).power_state == "poweredOn"
        drv.undefine(spec.uuid, [])
    finally:
        subprocess.run(["ip", "link", "del", bridge], check=False)


def test_libvirtd_restart_keeps_guest_and_driver_reconnects(drv, libvirtd, datastore, recorder):
    spec = make_spec(datastore)
    create(drv, spec)
    drv.start(spec.uuid)
    pid = qemu_pid(libvirtd, spec.name)

    libvirtd.kill_daemon()
    deadline = time.monotonic() + 5
    while drv.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not drv.is_alive()
    with pytest.raises(DriverError) as e:
        drv.list_domains()
    assert e.value.code == "HYPERVISOR_UNREACHABLE"
    assert os.path.exists(f"/proc/{pid}")  # the guest outlives its daemon

    libvirtd.start()
    drv.connect()
    assert drv.is_alive()
    assert drv.domain_state(spec.uuid).power_state == "poweredOn"
    assert qemu_pid(libvirtd, spec.name) == pid

    # Subscriptions were re-registered on the new connection.
    n = len(recorder.events)
    virsh(libvirtd, "destroy", spec.uuid)
    assert recorder.wait(spec.uuid, "stopped", after=n).reason == "destroyed"
    drv.undefine(spec.uuid, [])
