"""CPU definitions against a real private libvirtd (libvirt 9.0, QEMU 7.2, TCG here).

Every lab host has the same real CPU, so CPU generations are given by CPU definitions: a guest
gets a custom model, and a lab host declares a CPU (``declared_cpu_xml``) that stands in for the
real one in host_facts / compare_cpu. Models are expanded to features by libvirt's CPU map.
"""

from __future__ import annotations

import re
import subprocess
import uuid

import pytest

from vcenter.hypervisor.base import DriverError
from vcenter.hypervisor.libvirt.driver import LibvirtDriver
from vcenter.hypervisor.libvirt.xml import build_cpu_xml, parse_cpu_xml
from vcenter.lab.libvirtd import PrivateLibvirtd
from vcenter.messaging.contracts import CpuSpec, VmSpec


WESTMERE = "<cpu><arch>x86_64</arch><model>Westmere</model><vendor>Intel</vendor></cpu>"
SKYLAKE = "<cpu><arch>x86_64</arch><model>Skylake-Client</model><vendor>Intel</vendor></cpu>"


@pytest.fixture(scope="module")
def libvirtd(tmp_path_factory):
    d = PrivateLibvirtd(tmp_path_factory.mktemp("cpuhost"), "it-cpu-host")
    d.start()
    yield d
    d.stop()
    assert d.qemu_pids() == []


def _driver(libvirtd, declared=None):
    d = LibvirtDriver(libvirtd.uri, connect_timeout=5, declared_cpu_xml=declared)
    d.connect()
    return d


@pytest.fixture(scope="module")
def real(libvirtd):
    d = _driver(libvirtd)
    yield d
    d.close()


@pytest.fixture(scope="module")
def westmere_host(libvirtd):
    d = _driver(libvirtd, WESTMERE)
    yield d
    d.close()


@pytest.fixture(scope="module")
def skylake_host(libvirtd):
    d = _driver(libvirtd, SKYLAKE)
    yield d
    d.close()


def virsh(libvirtd, *args) -> str:
    return subprocess.run(["virsh", "-c", libvirtd.uri, *args], capture_output=True, text=True, check=True).stdout


def guest(cpu: CpuSpec | None) -> VmSpec:
    u = str(uuid.uuid4())
    return VmSpec(name=f"cpu-{u[:8]}", uuid=u, vcpus=1, memory_mib=32, cpu=cpu)


def test_declared_cpu_is_what_host_facts_report(real, westmere_host, skylake_host):
    w, s, r = westmere_host.host_facts(), skylake_host.host_facts(), real.host_facts()
    assert (w.cpu_model, s.cpu_model) == ("Westmere", "Skylake-Client")
    assert {"sse4.2", "aes", "popcnt"} <= set(w.cpu_features)
    assert "avx2" not in w.cpu_features and "avx" not in w.cpu_features
    assert {"avx2", "avx", "bmi2", "sse4.2"} <= set(s.cpu_features)
    assert set(w.cpu_features) < set(s.cpu_features)
    print(f"features: Westmere {len(w.cpu_features)}, Skylake-Client {len(s.cpu_features)}, real ({r.cpu_model}, {r.hypervisor}) {len(r.cpu_features)}")
    assert r.cpu_features and w.cpu_features != r.cpu_features


def test_baseline_of_two_generations_is_the_older_one(real, westmere_host, skylake_host):
    hosts = [skylake_host.host_cpu_xml(), westmere_host.host_cpu_xml()]
    base = parse_cpu_xml(real.cpu_baseline(hosts))
    assert base.model == "Westmere"
    expanded = parse_cpu_xml(real.cpu_baseline(hosts, expand_features=True))
    features = expanded.require - expanded.disable
    assert features <= set(westmere_host.host_facts().cpu_features)
    assert "avx2" not in features and "sse4.2" in features
    # The baseline runs on both hosts.
    for host in (westmere_host, skylake_host):
        assert host.compare_cpu(build_cpu_xml(CpuSpec(model=base.model)))[0]


def test_baseline_across_vendors_is_refused(real):
    amd = "<cpu><arch>x86_64</arch><model>Opteron_G2</model><vendor>AMD</vendor></cpu>"
    with pytest.raises(DriverError) as e:
        real.cpu_baseline([amd, WESTMERE])
    assert e.value.code == "CPU_INCOMPATIBLE"


@pytest.mark.parametrize("model", ["Westmere", "kvm64"])
def test_guest_requiring_avx2_fits_skylake_not_westmere(westmere_host, skylake_host, model):
    xml = build_cpu_xml(CpuSpec(model=model, features_require=["avx2"]))
    ok, detail = westmere_host.compare_cpu(xml)
    assert not ok and "avx2" in detail
    ok, detail = skylake_host.compare_cpu(xml)
    assert ok and detail == "superset"
    assert westmere_host.compare_cpu(build_cpu_xml(CpuSpec(model="Westmere"))) == (True, "identical")


def test_qemu64_carries_svm_in_libvirts_cpu_map(skylake_host):
    # Measured fact: libvirt's qemu64 includes svm, so by the CPU map it does not fit an Intel
    # CPU definition; kvm64 is the vendor-neutral baseline model.
    ok, detail = skylake_host.compare_cpu(build_cpu_xml(CpuSpec(model="qemu64")))
    assert not ok and "svm" in detail


def test_compare_against_the_real_hypervisor(real):
    # Under TCG libvirt compares against what QEMU emulates (domain capabilities' host-model).
    assert real.compare_cpu(build_cpu_xml(CpuSpec(model="Westmere")))[0]
    ok, detail = real.compare_cpu(build_cpu_xml(CpuSpec(model="Skylake-Client")))
    assert not ok and detail.startswith("incompatible")
    with pytest.raises(DriverError) as e:
        real.compare_cpu(build_cpu_xml(CpuSpec(model="NoSuchModel")))
    assert e.value.code == "INVALID_SPEC"


@pytest.mark.parametrize(
    "cpu",
    [
        CpuSpec(model="Westmere"),
        CpuSpec(model="Nehalem"),
        CpuSpec(model="kvm64", features_require=["sse4.2", "avx2"], features_disable=["svm"]),
        CpuSpec(model="Westmere", features_require=["avx2"], features_disable=["aes"]),
        CpuSpec(mode="host-model"),
    ],
    ids=lambda c: f"{c.mode}-{c.model}-{'+'.join(c.features_require)}",
)
def test_custom_cpu_guest_starts_under_tcg(real, libvirtd, cpu):
    spec = guest(cpu)
    real.define(spec)
    try:
        assert real.start(spec.uuid).power_state == "poweredOn"
        live = virsh(libvirtd, "dumpxml", spec.uuid)
        if cpu.model:
            assert re.search(rf"<model fallback='forbid'>{cpu.model}</model>", live)
        for f in cpu.features_require:
            assert f"<feature policy='require' name='{f}'/>" in live
        for f in cpu.features_disable:
            assert f"<feature policy='disable' name='{f}'/>" in live
    finally:
        real.undefine(spec.uuid, [])


def test_model_the_hypervisor_cannot_give_is_refused_at_start(real):
    spec = guest(CpuSpec(model="Skylake-Client"))
    real.define(spec)
    try:
        with pytest.raises(DriverError) as e:
            real.start(spec.uuid)
        assert e.value.code == "CPU_INCOMPATIBLE"
    finally:
        real.undefine(spec.uuid, [])


def test_declared_host_refuses_a_guest_its_cpu_cannot_give(westmere_host, skylake_host):
    spec = guest(CpuSpec(model="Westmere", features_require=["avx2"]))
    with pytest.raises(DriverError) as e:
        westmere_host.define(spec)
    assert e.value.code == "CPU_INCOMPATIBLE"
    # Defined through a host that can give it (same daemon), then started through one that cannot.
    skylake_host.define(spec)
    try:
        with pytest.raises(DriverError) as e:
            westmere_host.start(spec.uuid)
        assert e.value.code == "CPU_INCOMPATIBLE"
        assert skylake_host.start(spec.uuid).power_state == "poweredOn"
    finally:
        skylake_host.undefine(spec.uuid, [])
