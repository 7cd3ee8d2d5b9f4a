"""The pure decisions about disks and pools (vcenter.hypervisor.libvirt.storage, storagemove)
and guests (guest.py): which elements are disks, how a moved disk is redefined, how a block
copy's progress reads, a guest's power state and heartbeat socket."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest


from vcenter.hypervisor.base import DriverError  # noqa: E402
from vcenter.hypervisor.libvirt.guest import heartbeat_socket, power_state  # noqa: E402
from vcenter.hypervisor.libvirt.storage import dir_pool_xml, domain_disks, find_disk, point_disk_at  # noqa: E402
from vcenter.hypervisor.libvirt.storagemove import block_progress  # noqa: E402
from vcenter.hypervisor.libvirt.xml import HEARTBEAT_CHANNEL  # noqa: E402

DOMAIN = """<domain type='kvm'><name>g</name><devices>
  <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/ds1/g/a.qcow2'/>
    <backingStore type='file'><format type='qcow2'/><source file='/ds1/base.qcow2'/></backingStore>
    <target dev='vda'/><mirror type='file' file='/ds2/g/a.qcow2' job='copy' ready='yes'/></disk>
  <disk type='file'><source file='/ds1/g/b.raw'/><target dev='vdb'/></disk>
  <disk type='file' device='cdrom'><target dev='hdc'/></disk>
</devices></domain>"""


def test_a_pool_is_a_dir_pool_on_its_directory():
    root = ET.fromstring(dir_pool_xml("ds1", "/srv/ds1"))
    assert (root.tag, root.get("type"), root.findtext("name"), root.findtext("target/path")) == ("pool", "dir", "ds1", "/srv/ds1")


def test_disks_are_the_disk_devices_with_their_files_and_mirrors():
    disks = domain_disks(DOMAIN)
    assert [(dev, src) for dev, src, _ in disks] == [("vda", "/ds1/g/a.qcow2"), ("vdb", "/ds1/g/b.raw")]
    assert disks[0][2].get("ready") == "yes" and disks[1][2] is None
    src, mirror, fmt = find_disk(DOMAIN, "vda")
    assert (src, mirror.get("file"), fmt) == ("/ds1/g/a.qcow2", "/ds2/g/a.qcow2", "qcow2")
    assert find_disk(DOMAIN, "vdb")[2] is None
    assert find_disk(DOMAIN, "hdc") == (None, None, None)  # any device kind, by target
    assert find_disk(DOMAIN, "vdz") is None


def disk(xml, dev):
    return next(d for d in ET.fromstring(xml).findall("devices/disk") if d.find("target").get("dev") == dev)


def test_a_moved_disk_is_redefined_on_its_new_file_and_format():
    vda = disk(point_disk_at(DOMAIN, "vda", "/ds2/g/a.raw", "raw", flatten=True), "vda")
    assert vda.find("source").get("file") == "/ds2/g/a.raw" and vda.find("driver").get("type") == "raw"
    assert vda.find("backingStore") is None
    assert disk(point_disk_at(DOMAIN, "vda", "/ds2/g/a.qcow2", "qcow2", flatten=False), "vda").find("backingStore") is not None
    vdb = disk(point_disk_at(DOMAIN, "vdb", "/ds2/g/b.raw", "raw", flatten=True), "vdb")
    assert vdb.find("driver").attrib == {"name": "qemu", "type": "raw"}
    assert point_disk_at(DOMAIN, "vda", "/ds1/g/a.qcow2", "qcow2", flatten=True) is None  # already there
    assert point_disk_at(DOMAIN, "vdb", "/ds1/g/b.raw", "qcow2", flatten=True) is None  # no format named: kept
    with pytest.raises(DriverError) as e:
        point_disk_at(DOMAIN, "vdz", "/x", "raw", flatten=True)
    assert e.value.code == "DISK_NOT_FOUND"


def test_a_block_copy_is_ready_only_when_the_mirror_says_so_and_every_byte_is_copied():
    assert block_progress({}, True) is None
    p = block_progress({"cur": 40, "end": 100}, True)
    assert (p.phase, p.data_processed, p.data_remaining, p.disk_total) == ("copying", 40, 60, 100)
    assert block_progress({"cur": 100, "end": 100}, True).phase == "ready"
    assert block_progress({"cur": 100, "end": 100}, False).phase == "copying"


def test_power_state_of_a_domain():
    assert power_state(True, False) == "poweredOn"
    assert power_state(True, True) == "poweredOn"  # a QEMU process wins over a stale save image
    assert power_state(False, True) == "suspended"
    assert power_state(False, False) == "poweredOff"


def test_the_heartbeat_socket_is_the_source_of_the_heartbeat_channel():
    def live(channels):
        return f"<domain><devices>{channels}</devices></domain>"

    other = "<channel type='unix'><source mode='bind' path='/run/a.sock'/><target type='virtio' name='org.qemu.guest_agent.0'/></channel>"
    ours = f"<channel type='unix'><source mode='bind' path='/run/hb.sock'/><target type='virtio' name='{HEARTBEAT_CHANNEL}'/></channel>"
    assert heartbeat_socket(live(other + ours)) == "/run/hb.sock"
    assert heartbeat_socket(live(other)) is None
    assert heartbeat_socket(live(f"<channel type='unix'><target type='virtio' name='{HEARTBEAT_CHANNEL}'/></channel>")) is None
