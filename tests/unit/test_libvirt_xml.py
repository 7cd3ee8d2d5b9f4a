"""The domain XML builder: validation refuses injection, valid specs round-trip."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET

import pytest

from vcenter.hypervisor.base import DriverError
from vcenter.hypervisor.libvirt.xml import (
    HEARTBEAT_CHANNEL,
    build_domain_xml,
    check_bridges,
    choose_domain_type,
)
from vcenter.messaging.contracts import DiskSpec, NicSpec, VmSpec

UUID = "6f1c1a52-0000-4000-8000-000000000001"


def spec(**kw) -> VmSpec:
    base = dict(
        name="web-01",
        uuid=UUID,
        vcpus=2,
        memory_mib=96,
        disks=[
            DiskSpec(index=0, datastore_id=1, datastore_path="/srv/ds1", file="web-01.qcow2", capacity_mib=512),
            DiskSpec(index=1, datastore_id=1, datastore_path="/srv/ds1", file="web-01_1.img", capacity_mib=64, format="raw"),
        ],
        nics=[NicSpec(index=0, portgroup="VM Network", bridge="vcbr0", mac="52:54:00:12:34:56")],
    )
    base.update(kw)
    return VmSpec(**base)


@pytest.mark.parametrize(
    "kvm,pvm,expected",
    [
        (True, False, "kvm"),
        (True, True, "qemu"),
        (False, False, "qemu"),
        (False, True, "qemu"),
    ],
)
def test_choose_domain_type(kvm, pvm, expected):
    assert choose_domain_type(kvm, pvm) == expected


@pytest.mark.parametrize("name", ["a</name><devices>", "", "x" * 65, "a b", "a/b", "ä", "a\nb", "a'b", 'a"b'])
def test_bad_names_refused(name):
    with pytest.raises(DriverError) as e:
        build_domain_xml(spec(name=name), "qemu")
    assert e.value.code == "INVALID_SPEC"


@pytest.mark.parametrize(
    "kw",
    [
        dict(uuid="not-a-uuid"),
        dict(uuid="</uuid><x/>"),
        dict(disks=[DiskSpec(index=0, datastore_id=1, datastore_path="/srv/ds1", file="../etc/passwd", capacity_mib=1)]),
        dict(disks=[DiskSpec(index=0, datastore_id=1, datastore_path="/srv/ds1", file="a/b.qcow2", capacity_mib=1)]),
        dict(disks=[DiskSpec(index=0, datastore_id=1, datastore_path="relative", file="a.qcow2", capacity_mib=1)]),
        dict(disks=[DiskSpec(index=0, datastore_id=1, datastore_path="/srv/../etc", file="a.qcow2", capacity_mib=1)]),
        dict(nics=[NicSpec(index=0, portgroup="p", bridge="br0", mac="52:54:00:12:34")]),
        dict(nics=[NicSpec(index=0, portgroup="p", bridge="br0", mac="52:54:00:12:34:56'/><x")]),
        dict(nics=[NicSpec(index=0, portgroup="p", bridge="br0 x", mac="52:54:00:12:34:56")]),
        dict(kernel="relative/vmlinuz"),
        dict(vcpus=0),
        dict(memory_mib=1),
    ],
)
def test_bad_values_refused(kw):
    with pytest.raises(DriverError) as e:
        build_domain_xml(spec(**kw), "qemu")
    assert e.value.code == "INVALID_SPEC"


def test_valid_spec_round_trips():
    root = ET.fromstring(build_domain_xml(spec(), "qemu"))
    assert root.tag == "domain" and root.get("type") == "qemu"
    assert root.findtext("name") == "web-01"
    assert root.findtext("uuid") == UUID
    mem = root.find("memory")
    assert mem.text == "96" and mem.get("unit") == "MiB"
    assert root.findtext("vcpu") == "2"
    tb = root.find("features/tcg/tb-cache")
    assert tb is not None and tb.get("unit") == "MiB" and int(tb.text) > 0
    assert root.findtext("on_poweroff") == "destroy"
    assert root.findtext("on_reboot") == "restart"
    assert root.findtext("on_crash") == "destroy"
    disks = root.findall("devices/disk")
    assert [(d.find("source").get("file"), d.find("target").get("dev"), d.find("driver").get("type")) for d in disks] == [
        ("/srv/ds1/web-01.qcow2", "vda", "qcow2"),
        ("/srv/ds1/web-01_1.img", "vdb", "raw"),
    ]
    nic = root.find("devices/interface")
    assert nic.get("type") == "bridge"
    assert nic.find("source").get("bridge") == "vcbr0"
    assert nic.find("mac").get("address") == "52:54:00:12:34:56"
    assert nic.find("model").get("type") == "virtio"
    assert root.find("devices/serial").get("type") == "pty"
    assert root.find("devices/console") is not None
    ch = root.find("devices/channel")
    assert ch.get("type") == "unix" and ch.find("source").get("mode") == "bind"
    assert ch.find("target").get("name") == HEARTBEAT_CHANNEL
    assert root.find("os/kernel") is None


def test_kvm_has_no_tcg_feature_and_kernel_boot():
    root = ET.fromstring(build_domain_xml(spec(kernel="/boot/vmlinuz", initrd="/boot/initrd.img", cmdline="console=ttyS0 root=/dev/vda <&>"), "kvm"))
    assert root.get("type") == "kvm"
    assert root.find("features/tcg") is None
    assert root.findtext("os/kernel") == "/boot/vmlinuz"
    assert root.findtext("os/initrd") == "/boot/initrd.img"
    # Special characters are data, escaped by the library, never markup.
    assert root.findtext("os/cmdline") == "console=ttyS0 root=/dev/vda <&>"


def test_absent_bridge_is_portgroup_absent():
    with pytest.raises(DriverError) as e:
        check_bridges(spec(), exists=lambda b: False)
    assert e.value.code == "PORTGROUP_ABSENT"
    check_bridges(spec(), exists=lambda b: b == "vcbr0")


def test_unique_uuid_generation_is_accepted():
    assert ET.fromstring(build_domain_xml(spec(uuid=str(uuid.uuid4()).upper()), "qemu")) is not None


def test_a_virtio_balloon_reports_memory_statistics_at_the_given_period():
    balloon = ET.fromstring(build_domain_xml(spec(), "qemu", balloon_stats_period=2)).find("devices/memballoon")
    assert balloon.get("model") == "virtio" and balloon.find("stats").get("period") == "2"
    quiet = ET.fromstring(build_domain_xml(spec(), "qemu", balloon_stats_period=0)).find("devices/memballoon")
    assert quiet.get("model") == "virtio" and quiet.find("stats") is None
