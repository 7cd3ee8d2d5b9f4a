"""LibvirtDriver against libvirt's test:///default driver: idempotency and state mapping.

The test driver keeps its state inside one connection (a new connection starts afresh), and
has no keepalive, block jobs or guest agent; those are proved by the integration tests.
Within one process, connections to test:///default share one driver instance for as long as
any of them (or a domain object holding one) lives, so every test uses its own UUID and name.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

import libvirt  # noqa: E402  (libvirt-python: installed by make install, never skipped)

from vcenter.hypervisor.base import DriverError  # noqa: E402
from vcenter.hypervisor.libvirt.driver import LibvirtDriver  # noqa: E402
from vcenter.hypervisor.libvirt.host import translate_event  # noqa: E402
from vcenter.messaging.contracts import DiskSpec, NicSpec, VmSpec  # noqa: E402

UUID = ""


@pytest.fixture(autouse=True)
def fresh_uuid():
    global UUID
    UUID = str(uuid.uuid4())


@pytest.fixture
def drv():
    d = LibvirtDriver("test:///default")
    d.connect()
    yield d
    d.close()


def spec(**kw) -> VmSpec:
    base = dict(name="vm-" + UUID[:8], uuid=UUID, vcpus=1, memory_mib=64)
    base.update(kw)
    return VmSpec(**base)


def test_connect_and_facts(drv):
    assert drv.is_alive()
    facts = drv.host_facts()
    assert facts.hypervisor == "test"
    assert facts.cpu_cores and facts.memory_mib
    assert facts.libvirt_version.count(".") == 2


def test_define_is_idempotent_by_uuid(drv):
    s1 = drv.define(spec())
    s2 = drv.define(spec())
    assert s1.uuid == s2.uuid == UUID and s1.power_state == "poweredOff"
    assert [d.uuid for d in drv.list_domains()].count(UUID) == 1
    with pytest.raises(DriverError) as e:
        drv.define(spec(name="other-name"))
    assert e.value.code == "VM_UUID_CONFLICT"


def test_start_stop_idempotent(drv):
    drv.define(spec())
    assert drv.start(UUID).power_state == "poweredOn"
    assert drv.start(UUID).power_state == "poweredOn"
    assert drv.stop(UUID).power_state == "poweredOff"
    assert drv.stop(UUID).power_state == "poweredOff"


def test_suspend_resume(drv):
    drv.define(spec())
    drv.start(UUID)
    assert drv.suspend(UUID).power_state == "suspended"
    assert drv.suspend(UUID).power_state == "suspended"
    assert drv.resume(UUID).power_state == "poweredOn"
    assert drv.resume(UUID).power_state == "poweredOn"


def test_undefine_idempotent(drv):
    drv.define(spec())
    drv.start(UUID)
    drv.undefine(UUID, [])
    assert drv.domain_state(UUID) is None
    drv.undefine(UUID, [])


def test_unknown_domain(drv):
    assert drv.domain_state(UUID) is None
    with pytest.raises(DriverError) as e:
        drv.start(UUID)
    assert e.value.code == "VM_NOT_FOUND"


def test_reconfigure_refused_when_running(drv):
    drv.define(spec())
    drv.start(UUID)
    with pytest.raises(DriverError) as e:
        drv.reconfigure(UUID, 2, None)
    assert e.value.code == "VM_POWERED_ON"
    drv.stop(UUID)
    st = drv.reconfigure(UUID, 2, 128)
    assert (st.vcpus, st.memory_mib) == (2, 128)


def test_portgroup_absent(drv):
    with pytest.raises(DriverError) as e:
        drv.define(spec(nics=[NicSpec(index=0, portgroup="pg", bridge="vcnosuchbr0", mac="52:54:00:00:00:01")]))
    assert e.value.code == "PORTGROUP_ABSENT"
    assert drv.domain_state(UUID) is None


def test_create_disks_skips_existing(drv, tmp_path):
    disks = [DiskSpec(index=0, datastore_id=1, datastore_path=str(tmp_path), file="a.qcow2", capacity_mib=16)]
    paths = drv.create_disks(spec(disks=disks))
    assert paths == [str(tmp_path / "a.qcow2")]
    mtime = (tmp_path / "a.qcow2").stat().st_mtime_ns
    assert drv.create_disks(spec(disks=disks)) == paths
    assert (tmp_path / "a.qcow2").stat().st_mtime_ns == mtime
    drv.define(spec(disks=disks))
    drv.undefine(UUID, paths)
    assert not (tmp_path / "a.qcow2").exists()


def test_lifecycle_events(drv):
    got, seen = [], threading.Event()

    def cb(ev):
        got.append(ev)
        if ev.event == "stopped":
            seen.set()

    drv.subscribe_lifecycle(cb)
    drv.define(spec())
    drv.start(UUID)
    drv.stop(UUID)
    assert seen.wait(5)
    stopped = [e for e in got if e.event == "stopped"][-1]
    assert stopped.reason == "destroyed" and stopped.power_state == "poweredOff"
    assert any(e.event == "started" and e.power_state == "poweredOn" for e in got)


def test_translate_event_table():
    S = libvirt
    assert translate_event(S.VIR_DOMAIN_EVENT_STOPPED, S.VIR_DOMAIN_EVENT_STOPPED_DESTROYED) == ("stopped", "destroyed", "poweredOff")
    assert translate_event(S.VIR_DOMAIN_EVENT_STOPPED, S.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN)[1] == "shutdown"
    assert translate_event(S.VIR_DOMAIN_EVENT_STOPPED, S.VIR_DOMAIN_EVENT_STOPPED_FAILED)[1] == "crashed"
    assert translate_event(S.VIR_DOMAIN_EVENT_STOPPED, S.VIR_DOMAIN_EVENT_STOPPED_CRASHED)[1] == "crashed"
    assert translate_event(S.VIR_DOMAIN_EVENT_STOPPED, S.VIR_DOMAIN_EVENT_STOPPED_SAVED) == ("stopped", "saved", "suspended")
    assert translate_event(S.VIR_DOMAIN_EVENT_STOPPED, S.VIR_DOMAIN_EVENT_STOPPED_MIGRATED)[1] == "migrated"
    assert translate_event(S.VIR_DOMAIN_EVENT_STARTED, S.VIR_DOMAIN_EVENT_STARTED_RESTORED) == ("started", "started", "poweredOn")
    assert translate_event(S.VIR_DOMAIN_EVENT_DEFINED, S.VIR_DOMAIN_EVENT_DEFINED_ADDED) == ("defined", "added", None)


def test_connect_timeout_to_unreachable_host():
    # 192.0.2.0/24 (TEST-NET-1) is never routed: the TCP pre-check must give up on time.
    d = LibvirtDriver("qemu+tcp://192.0.2.1:16509/system", connect_timeout=1)
    t0 = time.monotonic()
    with pytest.raises(DriverError) as e:
        d.connect()
    assert e.value.code == "HYPERVISOR_UNREACHABLE"
    assert time.monotonic() - t0 < 3
