"""Datastores as libvirt dir storage pools, against a real private libvirtd."""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from vcenter.hypervisor.base import DriverError
from vcenter.hypervisor.libvirt.driver import LibvirtDriver
from vcenter.lab.libvirtd import PrivateLibvirtd
from vcenter.messaging.contracts import DiskSpec, VmSpec


@pytest.fixture(scope="module")
def libvirtd(tmp_path_factory):
    d = PrivateLibvirtd(tmp_path_factory.mktemp("poolhost"), "it-pool-host")
    d.start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def drv(libvirtd):
    d = LibvirtDriver(libvirtd.uri, connect_timeout=5)
    d.connect()
    yield d
    d.close()


def virsh(libvirtd, *args) -> str:
    return subprocess.run(["virsh", "-c", libvirtd.uri, *args], capture_output=True, text=True, check=True).stdout


def pool_names(libvirtd) -> list[str]:
    return virsh(libvirtd, "pool-list", "--all", "--name").split()


def disk_spec(path, name: str, capacity_mib: int = 16) -> VmSpec:
    return VmSpec(name=name, uuid=str(uuid.uuid4()), vcpus=1, memory_mib=32, disks=[DiskSpec(index=0, datastore_id=1, datastore_path=str(path), file=f"{name}.qcow2", capacity_mib=capacity_mib)])


def test_pool_lifecycle(drv, libvirtd, tmp_path):
    path = tmp_path / "ds-a"  # absent: ensure_pool builds it
    drv.ensure_pool("ds-a", str(path))
    drv.ensure_pool("ds-a", str(path))
    assert path.is_dir()
    assert pool_names(libvirtd).count("ds-a") == 1
    info = virsh(libvirtd, "pool-info", "ds-a")
    assert "running" in info and "Autostart:      yes" in info

    capacity, available = drv.pool_usage("ds-a")
    st = os.statvfs(path)
    print(f"pool ds-a: capacity {capacity} B, available {available} B")
    assert capacity == st.f_blocks * st.f_frsize
    assert 0 < available <= capacity

    paths = drv.create_disks(disk_spec(path, "vol-a"))
    vols = virsh(libvirtd, "vol-list", "ds-a")
    assert "vol-a.qcow2" in vols and paths[0] in vols
    assert virsh(libvirtd, "vol-info", "--pool", "ds-a", "vol-a.qcow2").count("16.00 MiB") == 1

    drv.remove_pool("ds-a")
    drv.remove_pool("ds-a")
    assert "ds-a" not in pool_names(libvirtd)
    assert os.path.exists(paths[0])  # files stay
    with pytest.raises(DriverError) as e:
        drv.pool_usage("ds-a")
    assert e.value.code == "DATASTORE_ABSENT"


def test_conflicts_and_validation(drv, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    drv.ensure_pool("ds-c", str(a))
    try:
        with pytest.raises(DriverError) as e:
            drv.ensure_pool("ds-c", str(b))
        assert e.value.code == "POOL_CONFLICT"
        with pytest.raises(DriverError) as e:
            drv.ensure_pool("ds-c2", str(a))
        assert e.value.code == "POOL_CONFLICT"
    finally:
        drv.remove_pool("ds-c")
    for name, path in (("bad name", str(a)), ("x'/><y", str(a)), ("ok", "relative"), ("ok", "/a/../etc")):
        with pytest.raises(DriverError) as e:
            drv.ensure_pool(name, path)
        assert e.value.code == "INVALID_SPEC"


def test_disks_outside_any_pool_still_created(drv, tmp_path):
    paths = drv.create_disks(disk_spec(tmp_path, "nopool"))
    assert os.path.exists(paths[0])


def test_pool_survives_daemon_restart(drv, libvirtd, tmp_path):
    drv.ensure_pool("ds-r", str(tmp_path / "r"))
    try:
        libvirtd.restart_daemon()
        drv.connect()
        assert "running" in virsh(libvirtd, "pool-info", "ds-r")
        assert drv.pool_usage("ds-r")[0] > 0
    finally:
        drv.remove_pool("ds-r")
