"""CPU definitions in the domain XML: validation refuses injection, the element is exact."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from vcenter.hypervisor.base import DriverError
from vcenter.hypervisor.libvirt.xml import (
    build_cpu_xml,
    build_domain_xml,
    compare_feature_sets,
    host_style_cpu_xml,
    parse_cpu_xml,
)
from vcenter.messaging.contracts import CpuSpec, VmSpec

UUID = "6f1c1a52-0000-4000-8000-000000000002"


def spec(cpu: CpuSpec | None) -> VmSpec:
    return VmSpec(name="cpu-01", uuid=UUID, vcpus=1, memory_mib=64, cpu=cpu)


def test_custom_cpu_element():
    cpu = CpuSpec(model="Westmere", vendor="Intel", features_require=["avx2", "sse4.2"], features_disable=["aes"])
    dom = ET.fromstring(build_domain_xml(spec(cpu), "qemu"))
    el = dom.find("cpu")
    assert el.attrib == {"mode": "custom", "match": "exact", "check": "partial"}
    assert el.find("model").text == "Westmere" and el.find("model").get("fallback") == "forbid"
    assert el.findtext("vendor") == "Intel"
    assert [(f.get("policy"), f.get("name")) for f in el.findall("feature")] == [("require", "avx2"), ("require", "sse4.2"), ("disable", "aes")]
    assert len(dom.findall("cpu")) == 1


def test_no_cpu_keeps_the_defaults():
    assert ET.fromstring(build_domain_xml(spec(None), "qemu")).find("cpu") is None
    assert ET.fromstring(build_domain_xml(spec(None), "kvm")).find("cpu").get("mode") == "host-passthrough"


def test_cpu_spec_wins_over_kvm_passthrough():
    el = ET.fromstring(build_domain_xml(spec(CpuSpec(model="Nehalem")), "kvm")).find("cpu")
    assert el.get("mode") == "custom" and el.findtext("model") == "Nehalem"


def test_host_model_and_passthrough():
    el = ET.fromstring(build_domain_xml(spec(CpuSpec(mode="host-model", features_disable=["x2apic"])), "qemu")).find("cpu")
    assert el.get("mode") == "host-model" and el.find("model") is None
    assert el.find("feature").attrib == {"policy": "disable", "name": "x2apic"}
    assert ET.fromstring(build_domain_xml(spec(CpuSpec(mode="host-passthrough")), "kvm")).find("cpu").get("mode") == "host-passthrough"
    with pytest.raises(DriverError) as e:
        build_domain_xml(spec(CpuSpec(mode="host-passthrough")), "qemu")
    assert e.value.code == "INVALID_SPEC"


@pytest.mark.parametrize(
    "cpu",
    [
        CpuSpec(model="Westmere</model><feature policy='require' name='x'/><model>"),
        CpuSpec(model="West mere"),
        CpuSpec(model=""),
        CpuSpec(model="x" * 65),
        CpuSpec(model="Westmere'"),
        CpuSpec(model="Westmere", vendor="Intel<x/>"),
        CpuSpec(model="Westmere", features_require=['avx2"/><feature name="y']),
        CpuSpec(model="Westmere", features_disable=["a/b"]),
        CpuSpec(model="Westmere", features_require=["sse4\n2"]),
        CpuSpec(model="Westmere", features_require=["avx2"], features_disable=["avx2"]),
        CpuSpec(model=None),  # custom needs a model
        CpuSpec(mode="host-model", model="Westmere"),  # host modes take no model
        CpuSpec(mode="host-passthrough", vendor="Intel"),
    ],
)
def test_bad_cpu_refused(cpu):
    with pytest.raises(DriverError) as e:
        build_domain_xml(spec(cpu), "qemu")
    assert e.value.code == "INVALID_SPEC"
    with pytest.raises(DriverError):
        build_cpu_xml(cpu)


def test_cpu_xml_round_trips_through_the_parser():
    cpu = CpuSpec(model="Skylake-Client-IBRS", vendor="Intel", features_require=["sse4.2"], features_disable=["hle", "rtm"])
    p = parse_cpu_xml(build_cpu_xml(cpu))
    assert (p.mode, p.model, p.vendor, p.require, p.disable) == ("custom", "Skylake-Client-IBRS", "Intel", {"sse4.2"}, {"hle", "rtm"})


def test_parse_host_and_domcaps_styles():
    host = parse_cpu_xml("<cpu><arch>x86_64</arch><model>kvm64</model><vendor>AMD</vendor><feature name='avx2'/><topology sockets='1'/></cpu>")
    assert (host.mode, host.model, host.arch, host.require) == (None, "kvm64", "x86_64", {"avx2"})
    mode = parse_cpu_xml(
        "<mode name='host-model' supported='yes'><model fallback='forbid'>EPYC</model>"
        "<feature policy='require' name='ss'/><feature policy='disable' name='vme'/>"
        "<feature policy='optional' name='x'/></mode>"
    )
    assert (mode.mode, mode.model, mode.require, mode.disable) == ("host-model", "EPYC", {"ss"}, {"vme"})


@pytest.mark.parametrize(
    "xml",
    [
        "<cpu><model>",
        "<domain/>",
        "<cpu><model>a b</model></cpu>",
        "<cpu><model>X</model><feature name='a&quot;b'/></cpu>",
        "<cpu><feature/></cpu>",
    ],
)
def test_parse_refuses_bad_xml(xml):
    with pytest.raises(DriverError) as e:
        parse_cpu_xml(xml)
    assert e.value.code == "INVALID_SPEC"


def test_host_style_drops_mode_and_policies():
    p = parse_cpu_xml(build_cpu_xml(CpuSpec(model="Westmere", vendor="Intel", features_require=["avx2"], features_disable=["aes"])))
    el = ET.fromstring(host_style_cpu_xml(p))
    assert el.attrib == {} and el.findtext("arch") == "x86_64" and el.findtext("model") == "Westmere"
    assert [f.attrib for f in el.findall("feature")] == [{"name": "avx2"}]
    assert ET.fromstring(host_style_cpu_xml(p, with_vendor=False)).find("vendor") is None


def test_compare_feature_sets():
    assert compare_feature_sets({"a"}, None, {"a"}, "Intel") == (True, "identical")
    assert compare_feature_sets({"a"}, None, {"a", "b"}, None) == (True, "superset")
    ok, detail = compare_feature_sets({"a", "c", "d"}, None, {"a"}, None)
    assert not ok and detail == "incompatible: host CPU lacks c, d"
    ok, detail = compare_feature_sets({"a"}, "AMD", {"a"}, "Intel")
    assert not ok and "vendor" in detail
