"""SimulatedDriver parity for CPU definitions (names only: no CPU map) and storage pools."""

from __future__ import annotations

import os

import pytest

from vcenter.hypervisor.base import DriverError
from vcenter.hypervisor.libvirt.xml import build_cpu_xml, parse_cpu_xml
from vcenter.hypervisor.simulated import SimulatedDriver
from vcenter.messaging.contracts import CpuSpec, DiskSpec, VmSpec

WESTMERE = "<cpu><arch>x86_64</arch><model>Westmere</model><vendor>Intel</vendor><feature name='sse4.2'/><feature name='aes'/></cpu>"


def drv(**kw) -> SimulatedDriver:
    d = SimulatedDriver(**kw)
    d.connect()
    return d


def test_declared_cpu_facts_and_compare():
    d = drv(declared_cpu_xml=WESTMERE)
    f = d.host_facts()
    assert (f.cpu_model, f.cpu_features) == ("Westmere", ["aes", "sse4.2"])
    assert d.host_cpu_xml() == WESTMERE
    assert d.compare_cpu(build_cpu_xml(CpuSpec(model="Westmere", features_require=["aes"])))[0]
    ok, detail = d.compare_cpu(build_cpu_xml(CpuSpec(model="Westmere", features_require=["avx2"])))
    assert not ok and "avx2" in detail
    assert not d.compare_cpu(build_cpu_xml(CpuSpec(model="Skylake-Client")))[0]
    assert d.compare_cpu(build_cpu_xml(CpuSpec(mode="host-model"))) == (True, "identical")
    with pytest.raises(DriverError) as e:
        d.define(VmSpec(name="v", uuid="6f1c1a52-0000-4000-8000-00000000000a", vcpus=1, memory_mib=64, cpu=CpuSpec(model="Westmere", features_require=["avx2"])))
    assert e.value.code == "CPU_INCOMPATIBLE"


def test_default_host_accepts_any_model_at_define():
    d = drv()
    assert d.host_facts().cpu_model == "simulated"
    d.define(VmSpec(name="v", uuid="6f1c1a52-0000-4000-8000-00000000000b", vcpus=1, memory_mib=64, cpu=CpuSpec(model="Westmere")))


def test_baseline_intersects():
    d = drv()
    other = WESTMERE.replace("<feature name='aes'/>", "")
    base = parse_cpu_xml(d.cpu_baseline([WESTMERE, other]))
    assert (base.model, base.require) == ("Westmere", {"sse4.2"})
    with pytest.raises(DriverError) as e:
        d.cpu_baseline([WESTMERE, WESTMERE.replace("Intel", "AMD")])
    assert e.value.code == "CPU_INCOMPATIBLE"


def test_pools_in_memory():
    d = drv(pool_capacity_bytes=1 << 30)
    d.ensure_pool("ds1", "/srv/ds1")
    d.ensure_pool("ds1", "/srv/ds1")
    assert d.pool_usage("ds1") == (1 << 30, 1 << 30)
    d.create_disks(
        VmSpec(name="v", uuid="6f1c1a52-0000-4000-8000-00000000000c", vcpus=1, memory_mib=64, disks=[DiskSpec(index=0, datastore_id=1, datastore_path="/srv/ds1", file="v.qcow2", capacity_mib=256)])
    )
    assert d.pool_usage("ds1") == (1 << 30, 3 << 28)
    for name, path in (("ds1", "/srv/other"), ("ds2", "/srv/ds1")):
        with pytest.raises(DriverError) as e:
            d.ensure_pool(name, path)
        assert e.value.code == "POOL_CONFLICT"
    with pytest.raises(DriverError) as e:
        d.ensure_pool("bad name", "/srv/x")
    assert e.value.code == "INVALID_SPEC"
    d.remove_pool("ds1")
    d.remove_pool("ds1")
    with pytest.raises(DriverError) as e:
        d.pool_usage("ds1")
    assert e.value.code == "DATASTORE_ABSENT"


def test_pools_with_files(tmp_path):
    d = drv(create_files=True)
    d.ensure_pool("ds1", str(tmp_path / "ds1"))
    assert (tmp_path / "ds1").is_dir()
    capacity, available = d.pool_usage("ds1")
    assert 0 < available <= capacity
    (tmp_path / "ds1" / "keep").write_text("x")
    d.remove_pool("ds1")
    assert os.path.exists(tmp_path / "ds1" / "keep")
