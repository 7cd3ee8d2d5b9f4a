"""SimulatedDriver keeps the driver contract: idempotency, power states, events."""
from __future__ import annotations

import uuid

import pytest

from vcenter.hypervisor.base import DriverError
from vcenter.hypervisor.simulated import SimulatedDriver
from vcenter.messaging.contracts import NicSpec, VmSpec


@pytest.fixture
def drv():
    d = SimulatedDriver(existing_bridges={"br0"})
    d.connect()
    return d


def spec(**kw):
    u = str(uuid.uuid4())
    return VmSpec(**{"name": f"vm-{u[:8]}", "uuid": u, "vcpus": 1, "memory_mib": 64, **kw})


def test_idempotent_lifecycle_and_events(drv):
    events = []
    drv.subscribe_lifecycle(events.append)
    s = spec()
    assert drv.define(s) == drv.define(s)
    assert len(drv.list_domains()) == 1
    assert drv.start(s.uuid).power_state == drv.start(s.uuid).power_state == "poweredOn"
    assert drv.suspend(s.uuid).power_state == drv.suspend(s.uuid).power_state == "suspended"
    assert drv.resume(s.uuid).power_state == "poweredOn"
    with pytest.raises(DriverError) as e:
        drv.reconfigure(s.uuid, 2, None)
    assert e.value.code == "VM_POWERED_ON"
    drv.crash(s.uuid)
    assert drv.domain_state(s.uuid).power_state == "poweredOff"
    assert drv.stop(s.uuid).power_state == "poweredOff"
    assert drv.reconfigure(s.uuid, 2, 128).vcpus == 2
    drv.undefine(s.uuid, [])
    drv.undefine(s.uuid, [])
    assert drv.domain_state(s.uuid) is None
    assert [(e.event, e.reason, e.power_state) for e in events] == [
        ("defined", "added", None), ("started", "started", "poweredOn"),
        ("stopped", "saved", "suspended"), ("started", "started", "poweredOn"),
        ("stopped", "crashed", "poweredOff"), ("undefined", "removed", None)]


def test_portgroup_absent_and_unreachable(drv):
    with pytest.raises(DriverError) as e:
        drv.define(spec(nics=[NicSpec(index=0, portgroup="pg", bridge="br1", mac="52:54:00:00:00:01")]))
    assert e.value.code == "PORTGROUP_ABSENT"
    drv.set_reachable(False)
    with pytest.raises(DriverError) as e:
        drv.list_domains()
    assert e.value.code == "HYPERVISOR_UNREACHABLE"
    with pytest.raises(DriverError):
        drv.connect()
    drv.set_reachable(True)
    drv.connect()
    assert drv.list_domains() == []


def test_shutdown_timeout_when_guest_ignores(drv):
    drv.guest_shuts_down = False
    s = spec()
    drv.define(s)
    drv.start(s.uuid)
    with pytest.raises(DriverError) as e:
        drv.shutdown(s.uuid, 0.1)
    assert e.value.code == "GUEST_SHUTDOWN_TIMEOUT"
