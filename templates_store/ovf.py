"""OVF descriptors (DMTF OVF 1.x / 2.x): read the hardware of an appliance, write our own.

Reading uses defusedxml, which refuses entity expansion, external entities and DTDs (an
appliance is untrusted input: a billion-laughs descriptor must not take the server down).
What is read: the virtual system's name, vCPUs (ResourceType 3), memory (ResourceType 4,
with its allocation units), disks in hardware order (ResourceType 17 naming ``ovf:/disk/<id>``
in DiskSection, whose ``fileRef`` names a File in References), network adapters (ResourceType
10) and the guest OS (OperatingSystemSection: its id and description).

Errors: OvfError with a stable code (OVF_INVALID, OVF_UNSUPPORTED).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

OVF_NS = "http://schemas.dmtf.org/ovf/envelope/1"
OVF2_NS = "http://schemas.dmtf.org/ovf/envelope/2"
RASD_NS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
VSSD_NS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
VMW_NS = "http://www.vmware.com/schema/ovf"
STREAM_OPTIMIZED = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
MAX_DESCRIPTOR_BYTES = 4 << 20

# OVF's CIM operating system ids for the guest OS names we use (a few; "other" otherwise).
OS_IDS = {"other": 1, "linux": 36, "other-linux": 36, "debian": 96, "ubuntu": 94, "windows": 105}


class OvfError(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class OvfDisk:
    disk_id: str
    file_href: str | None
    capacity_bytes: int
    file_size: int | None = None
    format: str | None = None


@dataclass
class OvfAppliance:
    name: str
    vcpus: int = 1
    memory_mib: int = 64
    guest_os: str = "other"
    os_id: int | None = None
    disks: list[OvfDisk] = field(default_factory=list)
    nics: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "vcpus": self.vcpus,
            "memory_mib": self.memory_mib,
            "guest_os": self.guest_os,
            "os_id": self.os_id,
            "nics": self.nics,
            "disks": [{"disk_id": d.disk_id, "file": d.file_href, "capacity_bytes": d.capacity_bytes, "file_size": d.file_size, "format": d.format} for d in self.disks],
        }


_UNIT_WORDS = {"byte": 0, "bytes": 0, "kilobytes": 10, "kb": 10, "megabytes": 20, "mb": 20, "gigabytes": 30, "gb": 30, "terabytes": 40, "tb": 40}


def units_shift(units: str | None) -> int:
    """The power of two of OVF allocation units: 'byte * 2^20' -> 20, 'MegaBytes' -> 20."""
    if not units:
        return 0
    text = units.strip().lower()
    m = re.fullmatch(r"byte\s*\*\s*2\s*\^\s*(\d{1,2})", text)
    if m:
        return int(m.group(1))
    if text in _UNIT_WORDS:
        return _UNIT_WORDS[text]
    raise OvfError("OVF_UNSUPPORTED", f"allocation units {units!r} are not understood")


# OVF's numbers are xs:long / xs:unsignedLong: ASCII digits, at most 2^63 - 1 here (what both
# databases hold), so neither a huge nor an odd one (Python's int() also takes "1_0", "+1",
# Unicode digits) reaches the inventory.
MAX_NUMBER = 2**63 - 1
_NUMBER_RE = re.compile(r"[0-9]{1,19}")
# A disk no VM of ours can have (the API's own bound on capacity_mib: 16 TiB).
MAX_DISK_BYTES = 16 << 40


def _int(text: str | None, what: str) -> int:
    digits = (text or "").strip()
    if not _NUMBER_RE.fullmatch(digits):
        raise OvfError("OVF_INVALID", f"{what}: {text!r} is not a non-negative integer"[:200])
    value = int(digits)
    if value > MAX_NUMBER:
        raise OvfError("OVF_INVALID", f"{what}: {value} is out of range")
    return value


def parse_ovf(data: bytes) -> OvfAppliance:
    """The appliance an OVF descriptor describes (its first VirtualSystem)."""
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring

    if len(data) > MAX_DESCRIPTOR_BYTES:
        raise OvfError("OVF_INVALID", "the OVF descriptor is larger than 4 MiB")
    try:
        root = fromstring(data, forbid_dtd=True)
    except (ET.ParseError, DefusedXmlException, ValueError) as exc:
        raise OvfError("OVF_INVALID", f"the OVF descriptor is not safe, well-formed XML: {exc}") from None
    ns = root.tag[1:].split("}")[0] if root.tag.startswith("{") else ""
    if ns not in (OVF_NS, OVF2_NS) or root.tag.split("}")[-1] != "Envelope":
        raise OvfError("OVF_INVALID", "not an OVF envelope")

    def q(tag: str) -> str:
        return f"{{{ns}}}{tag}"

    def attr(el: ET.Element, name: str) -> str | None:
        return el.get(q(name), el.get(name))

    files = {attr(f, "id"): f for f in root.findall(f"{q('References')}/{q('File')}")}
    disks: dict[str, OvfDisk] = {}
    for d in root.findall(f"{q('DiskSection')}/{q('Disk')}"):
        disk_id = attr(d, "diskId")
        if not disk_id:
            raise OvfError("OVF_INVALID", "a Disk has no diskId")
        capacity = _int(attr(d, "capacity"), f"disk {disk_id} capacity") << units_shift(attr(d, "capacityAllocationUnits"))
        if capacity > MAX_DISK_BYTES:
            raise OvfError("OVF_UNSUPPORTED", f"disk {disk_id}: a capacity of {capacity} bytes is beyond what we deploy (16 TiB)"[:200])
        ref = attr(d, "fileRef")
        file_el = files.get(ref) if ref else None
        if ref and file_el is None:
            raise OvfError("OVF_INVALID", f"disk {disk_id} names file {ref!r}, which References does not list")
        disks[disk_id] = OvfDisk(
            disk_id=disk_id,
            file_href=attr(file_el, "href") if file_el is not None else None,
            capacity_bytes=capacity,
            file_size=_int(attr(file_el, "size"), "file size") if file_el is not None and attr(file_el, "size") else None,
            format=attr(d, "format"),
        )
    system = root.find(q("VirtualSystem"))
    if system is None:
        collection = root.find(q("VirtualSystemCollection"))
        system = collection.find(q("VirtualSystem")) if collection is not None else None
    if system is None:
        raise OvfError("OVF_INVALID", "the descriptor has no VirtualSystem")
    app = OvfAppliance(name=(system.findtext(q("Name")) or attr(system, "id") or "appliance").strip())
    os_section = system.find(q("OperatingSystemSection"))
    if os_section is not None:
        os_id = attr(os_section, "id")
        app.os_id = _int(os_id, "operating system id") if os_id else None
        described = (os_section.findtext(q("Description")) or "").strip().lower()
        vmw = (os_section.get(f"{{{VMW_NS}}}osType") or "").lower()
        text = f"{described} {vmw}"
        app.guest_os = next((name for name in ("debian", "ubuntu", "windows") if name in text), "linux" if "linux" in text else "other")
    hardware = system.find(q("VirtualHardwareSection"))
    if hardware is None:
        raise OvfError("OVF_INVALID", "the VirtualSystem has no VirtualHardwareSection")
    ordered: list[OvfDisk] = []
    for item in list(hardware.findall(q("Item"))) + list(hardware.findall(q("StorageItem"))) + list(hardware.findall(q("EthernetPortItem"))):

        def r(tag: str) -> str | None:
            for rns in (
                RASD_NS,
                "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_StorageAllocationSettingData",
                "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_EthernetPortAllocationSettingData",
            ):
                found = item.findtext(f"{{{rns}}}{tag}")
                if found is not None:
                    return found.strip()
            return None

        kind = r("ResourceType")
        if kind == "3":
            app.vcpus = max(1, _int(r("VirtualQuantity"), "vCPU count"))
        elif kind == "4":
            shift = units_shift(r("AllocationUnits") or "byte * 2^20")
            app.memory_mib = max(1, (_int(r("VirtualQuantity"), "memory") << shift) >> 20)
        elif kind == "17":
            host_resource = r("HostResource") or ""
            m = re.fullmatch(r"(?:ovf:)?/disk/(.+)", host_resource)
            if not m or m.group(1) not in disks:
                raise OvfError("OVF_INVALID", f"disk item names {host_resource!r}, which DiskSection does not list")
            ordered.append(disks[m.group(1)])
        elif kind == "10":
            app.nics += 1
    app.disks = ordered or list(disks.values())
    if app.vcpus > 256 or app.memory_mib > 4 << 20:
        raise OvfError("OVF_UNSUPPORTED", f"{app.vcpus} vCPUs / {app.memory_mib} MiB is beyond what we deploy")
    return app


def build_ovf(*, name: str, vcpus: int, memory_mib: int, guest_os: str, disks: list[dict[str, Any]], nics: int = 0) -> bytes:
    """An OVF 1.0 descriptor for a VM whose disks are stream-optimised VMDKs.
    ``disks``: [{"file": name in the OVA, "size": bytes of that file, "capacity_bytes": ...}]."""
    ET.register_namespace("ovf", OVF_NS)
    ET.register_namespace("rasd", RASD_NS)
    ET.register_namespace("vssd", VSSD_NS)
    o = lambda tag: f"{{{OVF_NS}}}{tag}"  # noqa: E731
    rasd = lambda tag: f"{{{RASD_NS}}}{tag}"  # noqa: E731
    env = ET.Element(o("Envelope"), {o("version"): "1.0"})
    refs = ET.SubElement(env, o("References"))
    disk_section = ET.SubElement(env, o("DiskSection"))
    ET.SubElement(disk_section, o("Info")).text = "Virtual disks"
    for i, d in enumerate(disks, start=1):
        ET.SubElement(refs, o("File"), {o("id"): f"file{i}", o("href"): d["file"], o("size"): str(d["size"])})
        ET.SubElement(
            disk_section, o("Disk"), {o("diskId"): f"vmdisk{i}", o("fileRef"): f"file{i}", o("capacity"): str(d["capacity_bytes"]), o("capacityAllocationUnits"): "byte", o("format"): STREAM_OPTIMIZED}
        )
    if nics:
        net = ET.SubElement(env, o("NetworkSection"))
        ET.SubElement(net, o("Info")).text = "Networks"
        ET.SubElement(ET.SubElement(net, o("Network"), {o("name"): "VM Network"}), o("Description")).text = "VM Network"
    system = ET.SubElement(env, o("VirtualSystem"), {o("id"): name})
    ET.SubElement(system, o("Info")).text = "A virtual machine exported by virtcenter"
    ET.SubElement(system, o("Name")).text = name
    os_section = ET.SubElement(system, o("OperatingSystemSection"), {o("id"): str(OS_IDS.get(guest_os, 1))})
    ET.SubElement(os_section, o("Info")).text = "Guest operating system"
    ET.SubElement(os_section, o("Description")).text = guest_os
    hw = ET.SubElement(system, o("VirtualHardwareSection"))
    ET.SubElement(hw, o("Info")).text = "Virtual hardware"
    sysel = ET.SubElement(hw, o("System"))
    ET.SubElement(sysel, f"{{{VSSD_NS}}}ElementName").text = "Virtual Hardware Family"
    ET.SubElement(sysel, f"{{{VSSD_NS}}}InstanceID").text = "0"
    ET.SubElement(sysel, f"{{{VSSD_NS}}}VirtualSystemType").text = "virtcenter-kvm"
    instance = 0

    def item(kind: int, element: str, **fields: str) -> None:
        nonlocal instance
        instance += 1
        it = ET.SubElement(hw, o("Item"))
        values = {"ElementName": element, "InstanceID": str(instance), "ResourceType": str(kind), **fields}
        for key in sorted(values):  # CIM classes list their properties in alphabetical order
            ET.SubElement(it, rasd(key)).text = values[key]

    item(3, f"{vcpus} virtual CPU(s)", VirtualQuantity=str(vcpus))
    item(4, f"{memory_mib} MB of memory", AllocationUnits="byte * 2^20", VirtualQuantity=str(memory_mib))
    item(20, "VirtIO controller", ResourceSubType="virtio")
    controller = str(instance)
    for i, _ in enumerate(disks, start=1):
        item(17, f"disk{i}", AddressOnParent=str(i - 1), HostResource=f"ovf:/disk/vmdisk{i}", Parent=controller)
    for i in range(nics):
        item(10, f"ethernet{i}", AutomaticAllocation="true", Connection="VM Network", ResourceSubType="virtio")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(env, encoding="utf-8", xml_declaration=False)
