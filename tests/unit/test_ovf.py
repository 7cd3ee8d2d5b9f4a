"""OVF descriptors: hardware read from real-world shapes, our own written and read back, and
hostile XML refused (templates_store.ovf)."""

import pytest

from templates_store.ovf import OvfError, build_ovf, parse_ovf, units_shift

VMWARE_OVF = b"""<?xml version="1.0" encoding="UTF-8"?>
<Envelope vmw:buildId="build-1" xmlns="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common"
  xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
  xmlns:vmw="http://www.vmware.com/schema/ovf"
  xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData">
  <References>
    <File ovf:href="appliance-disk1.vmdk" ovf:id="file1" ovf:size="68608"/>
    <File ovf:href="appliance-disk2.vmdk" ovf:id="file2" ovf:size="1024"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="2" ovf:capacityAllocationUnits="byte * 2^30" ovf:diskId="vmdisk1" ovf:fileRef="file1"
          ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
    <Disk ovf:capacity="512" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk2" ovf:fileRef="file2"/>
  </DiskSection>
  <NetworkSection><Info>nets</Info><Network ovf:name="VM Network"><Description>n</Description></Network></NetworkSection>
  <VirtualSystem ovf:id="appliance">
    <Info>A virtual machine</Info>
    <Name>photon-appliance</Name>
    <OperatingSystemSection ovf:id="36" vmw:osType="other3xLinux64Guest"><Info>os</Info><Description>Other 3.x Linux (64-bit)</Description></OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <Item><rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits><rasd:ElementName>2 virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:ElementName>2048MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>2048</rasd:VirtualQuantity></Item>
      <Item><rasd:AddressOnParent>1</rasd:AddressOnParent><rasd:ElementName>Hard disk 2</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk2</rasd:HostResource><rasd:InstanceID>9</rasd:InstanceID><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>Hard disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>8</rasd:InstanceID><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:ElementName>Network adapter 1</rasd:ElementName><rasd:InstanceID>10</rasd:InstanceID><rasd:ResourceType>10</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""


def test_a_vmware_descriptor():
    app = parse_ovf(VMWARE_OVF)
    assert (app.name, app.vcpus, app.memory_mib, app.nics, app.guest_os, app.os_id) == ("photon-appliance", 2, 2048, 1, "linux", 36)
    # Disks in hardware order, with capacities in bytes from their allocation units.
    assert [(d.file_href, d.capacity_bytes, d.file_size) for d in app.disks] == [("appliance-disk2.vmdk", 512 << 20, 1024), ("appliance-disk1.vmdk", 2 << 30, 68608)]


def test_our_descriptor_reads_back():
    data = build_ovf(name="web1", vcpus=3, memory_mib=96, guest_os="debian", nics=2, disks=[{"file": "web1-disk1.vmdk", "size": 1234, "capacity_bytes": 8 << 20}])
    app = parse_ovf(data)
    assert (app.name, app.vcpus, app.memory_mib, app.nics, app.guest_os) == ("web1", 3, 96, 2, "debian")
    assert [(d.file_href, d.capacity_bytes, d.file_size) for d in app.disks] == [("web1-disk1.vmdk", 8 << 20, 1234)]


@pytest.mark.parametrize("units,shift", [("byte * 2^20", 20), ("byte*2^30", 30), ("MegaBytes", 20), ("byte", 0), (None, 0)])
def test_units(units, shift):
    assert units_shift(units) == shift


BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"><VirtualSystem><Name>&lol3;</Name></VirtualSystem></Envelope>"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"><VirtualSystem><Name>&xxe;</Name></VirtualSystem></Envelope>"""


@pytest.mark.parametrize(
    "data,code",
    [
        (BOMB, "OVF_INVALID"),
        (XXE, "OVF_INVALID"),
        (b"<not-closed", "OVF_INVALID"),
        (b"<Envelope xmlns='urn:other'/>", "OVF_INVALID"),
        (VMWARE_OVF.replace(b"ovf:/disk/vmdisk2", b"ovf:/disk/nope"), "OVF_INVALID"),
        (VMWARE_OVF.replace(b'ovf:capacity="2"', b'ovf:capacity="-2"'), "OVF_INVALID"),
        (VMWARE_OVF.replace(b"byte * 2^30", b"furlongs"), "OVF_UNSUPPORTED"),
        (VMWARE_OVF.replace(b"<rasd:VirtualQuantity>2</rasd:VirtualQuantity>", b"<rasd:VirtualQuantity>9999</rasd:VirtualQuantity>"), "OVF_UNSUPPORTED"),
    ],
)
def test_hostile_or_broken_descriptors_are_refused(data, code):
    with pytest.raises(OvfError) as exc:
        parse_ovf(data)
    assert exc.value.code == code


@pytest.mark.parametrize(
    "capacity,units,code",
    [
        ("1180591620717411303424", "byte", "OVF_INVALID"),  # 2^70: beyond xs:long and both databases
        ("9223372036854775808", "byte", "OVF_INVALID"),  # 2^63
        ("1", "byte * 2^99", "OVF_UNSUPPORTED"),  # fits the text, not a disk
        ("17", "byte * 2^40", "OVF_UNSUPPORTED"),  # 17 TiB: beyond the API's 16 TiB
        ("1_0", "byte * 2^30", "OVF_INVALID"),  # Python's int() takes these; OVF does not
        ("+2", "byte * 2^30", "OVF_INVALID"),
        ("\u0662", "byte * 2^30", "OVF_INVALID"),  # an Arabic-Indic 2
        ("2.0", "byte * 2^30", "OVF_INVALID"),
    ],
)
def test_disk_capacities_no_disk_can_have_are_refused(capacity, units, code):
    data = VMWARE_OVF.replace(b'ovf:capacity="2" ovf:capacityAllocationUnits="byte * 2^30"', f'ovf:capacity="{capacity}" ovf:capacityAllocationUnits="{units}"'.encode())
    with pytest.raises(OvfError) as exc:
        parse_ovf(data)
    assert exc.value.code == code


def test_the_largest_disk_we_deploy_is_read():
    data = VMWARE_OVF.replace(b'ovf:capacity="2" ovf:capacityAllocationUnits="byte * 2^30"', b'ovf:capacity="16" ovf:capacityAllocationUnits="byte * 2^40"')
    assert parse_ovf(data).disks[1].capacity_bytes == 16 << 40
