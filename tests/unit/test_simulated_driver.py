"""SimulatedDriver keeps the driver contract: idempotency, power states, events, files (the
shared contract with the libvirt driver: tests/libvirtd/test_driver_contract.py)."""

from __future__ import annotations

import os
import struct
import uuid

import pytest

from vcenter.hypervisor.base import DriverError
from vcenter.hypervisor.simulated import SimulatedDriver, qcow2_image
from vcenter.messaging.contracts import DiskSpec, NicSpec, VmSpec


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
        ("defined", "added", None),
        ("started", "started", "poweredOn"),
        ("stopped", "saved", "suspended"),
        ("started", "started", "poweredOn"),
        ("stopped", "crashed", "poweredOff"),
        ("undefined", "removed", None),
    ]


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


def test_qcow2_image_layout_for_an_l1_table_of_two_clusters():
    """5 TiB needs 10,240 L1 entries (80 KiB): the L1 table spans clusters 3 and 4, and the
    refcount block counts clusters 0..4 once each (what qemu-img check accepts)."""
    image = qcow2_image(5 << 40)
    (magic, version, _bfo, _bfs, cluster_bits, size, _crypt, l1_size, l1_offset, rt_offset, rt_clusters, _nsnap, _soff, incompat, _compat, _autoclear, refcount_order, header_length) = (
        struct.unpack_from(">IIQIIQIIQQIIQQQQII", image)
    )
    assert (magic, version, cluster_bits, size) == (0x514649FB, 3, 16, 5 << 40)
    assert (l1_size, l1_offset, rt_offset, rt_clusters) == (10240, 3 << 16, 1 << 16, 1)
    assert (incompat, refcount_order, header_length) == (0, 4, 104)
    assert len(image) == l1_offset + l1_size * 8
    assert struct.unpack_from(">Q", image, rt_offset) == (2 << 16,)
    refcounts = struct.unpack_from(">6H", image, 2 << 16)
    assert refcounts == (1, 1, 1, 1, 1, 0)
    assert not any(image[l1_offset:])  # nothing allocated


def test_files_of_disks(tmp_path):
    """With create_files: disks are files of their format; undefine deletes them, refuses a
    relative path before anything is done, and names a file it cannot delete."""
    d = SimulatedDriver(create_files=True)
    d.connect()
    s = spec(
        disks=[
            DiskSpec(index=0, datastore_id=1, datastore_path=str(tmp_path), file="a.qcow2", capacity_mib=1),
            DiskSpec(index=1, datastore_id=1, datastore_path=str(tmp_path), file="b.raw", capacity_mib=2, format="raw"),
        ]
    )
    paths = d.create_disks(s)
    assert (tmp_path / "a.qcow2").read_bytes()[:4] == b"QFI\xfb"
    assert os.path.getsize(tmp_path / "b.raw") == 2 << 20
    d.define(s)
    with pytest.raises(DriverError) as e:
        d.undefine(s.uuid, ["b.raw"])
    assert e.value.code == "INVALID_SPEC" and d.domain_state(s.uuid) is not None
    d.undefine(s.uuid, paths)
    assert os.listdir(tmp_path) == []
    with pytest.raises(DriverError) as e:
        d.undefine(s.uuid, [str(tmp_path)])
    assert e.value.code == "DISK_DELETE_FAILED"


def test_jobs_of_an_unknown_domain():
    d = SimulatedDriver()
    d.connect()
    for call in (d.job_progress, d.abort_job):
        with pytest.raises(DriverError) as e:
            call(str(uuid.uuid4()))
        assert e.value.code == "VM_NOT_FOUND"
