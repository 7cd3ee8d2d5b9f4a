"""Domain XML for a VmSpec, and the choice of the libvirt domain type.

What this module decides:
- Which domain type a host uses: ``kvm`` only when /dev/kvm exists and is a real hardware
  hypervisor; the paravirtual nested KVM (``/sys/module/kvm_pvm``) boots no Linux guest, so it
  counts as absent and guests run under TCG (``qemu``). Under TCG the translation cache is
  capped (one guest can otherwise grow past 1 GiB).
- Every user-supplied string is validated before it reaches the XML (names, UUIDs, file
  names, MACs, bridge names, kernel paths); a bad one raises DriverError("INVALID_SPEC").
  The XML itself is built with ElementTree, never by string formatting, so escaping is the
  library's job and no value can add elements.
- Device layout: disks are files (qcow2/raw) on virtio (vdX), sata (sdX) or ide (hdX);
  NICs are bridge interfaces (the port group's bridge on this host); one serial console on a
  pty; one virtio-serial channel ``org.virtcenter.heartbeat`` for guest heartbeats (libvirt
  picks the socket path under its channel dir). Memory is in MiB.

Vocabulary: spec = the VmSpec the server sent; domain type = libvirt's ``<domain type=...>``.
"""

from __future__ import annotations

import os
import re
import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field

from vcenter.hypervisor.base import DriverError
from vcenter.messaging.contracts import CpuSpec, VmSpec

HEARTBEAT_CHANNEL = "org.virtcenter.heartbeat"
TCG_TB_CACHE_MIB = 32

_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
# Linux interface names: at most 15 bytes, no '/', no whitespace; we allow a safe subset.
_BRIDGE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# CPU model, vendor and feature names of libvirt's CPU map ("Skylake-Client-IBRS", "sse4.2").
_CPU_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

_TARGET_PREFIX = {"virtio": "vd", "sata": "sd", "ide": "hd"}


# --- domain type -------------------------------------------------------------------------


def choose_domain_type(kvm_present: bool, kvm_pvm_present: bool) -> str:
    """``kvm`` only on a real hardware hypervisor; the PVM nested one boots no Linux kernel."""
    return "kvm" if kvm_present and not kvm_pvm_present else "qemu"


def detect_domain_type() -> str:
    """The domain type for guests on this machine."""
    return choose_domain_type(os.path.exists("/dev/kvm"), os.path.exists("/sys/module/kvm_pvm"))


def bridge_exists(bridge: str) -> bool:
    return os.path.isdir(f"/sys/class/net/{bridge}")


# --- validation --------------------------------------------------------------------------


def _invalid(message: str) -> DriverError:
    return DriverError("INVALID_SPEC", message)


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise _invalid(f"VM name {name!r} must be 1..64 characters of A-Z a-z 0-9 . _ -")
    return name


def validate_uuid(value: str) -> str:
    try:
        return str(uuidlib.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise _invalid(f"{value!r} is not a UUID") from None


def validate_file_name(file: str) -> str:
    if not file or "/" in file or ".." in file or _CONTROL_RE.search(file):
        raise _invalid(f"disk file name {file!r} must be a plain file name")
    return file


def validate_abs_path(path: str, what: str) -> str:
    if not path or not path.startswith("/") or _CONTROL_RE.search(path) or ".." in path.split("/"):
        raise _invalid(f"{what} {path!r} must be an absolute path without '..'")
    return path


def validate_mac(mac: str) -> str:
    if not _MAC_RE.match(mac or ""):
        raise _invalid(f"MAC address {mac!r} is malformed")
    if int(mac[:2], 16) & 1:
        raise _invalid(f"MAC address {mac} is a multicast address")
    return mac.lower()


def validate_bridge(bridge: str) -> str:
    if not _BRIDGE_RE.match(bridge or ""):
        raise _invalid(f"bridge name {bridge!r} is malformed")
    return bridge


def disk_path(datastore_path: str, file: str) -> str:
    """The host path of a disk, after validating both parts."""
    validate_abs_path(datastore_path, "datastore path")
    validate_file_name(file)
    return os.path.join(datastore_path, file)


def disk_target(bus: str, index: int) -> str:
    if not 0 <= index < 26:
        raise _invalid(f"disk index {index} out of range 0..25")
    return _TARGET_PREFIX[bus] + chr(ord("a") + index)


def validate_spec(spec: VmSpec) -> None:
    validate_name(spec.name)
    validate_uuid(spec.uuid)
    if not 1 <= spec.vcpus <= 256:
        raise _invalid(f"vcpus {spec.vcpus} out of range 1..256")
    if not 16 <= spec.memory_mib <= 1024 * 1024:
        raise _invalid(f"memory {spec.memory_mib} MiB out of range 16..1048576")
    targets: set[str] = set()
    for d in spec.disks:
        disk_path(d.datastore_path, d.file)
        t = disk_target(d.bus, d.index)
        if t in targets:
            raise _invalid(f"two disks on {t}")
        targets.add(t)
        if d.capacity_mib <= 0:
            raise _invalid(f"disk {d.file} capacity must be positive")
    macs: set[str] = set()
    for n in spec.nics:
        validate_bridge(n.bridge)
        mac = validate_mac(n.mac)
        if mac in macs:
            raise _invalid(f"MAC {mac} used twice")
        macs.add(mac)
    if spec.kernel is not None:
        validate_abs_path(spec.kernel, "kernel")
    if spec.initrd is not None:
        validate_abs_path(spec.initrd, "initrd")
        if spec.kernel is None:
            raise _invalid("initrd given without kernel")
    if spec.cmdline is not None and _CONTROL_RE.search(spec.cmdline):
        raise _invalid("kernel command line contains control characters")
    if spec.cpu is not None:
        validate_cpu(spec.cpu)


def validate_cpu_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _CPU_NAME_RE.match(name):
        raise _invalid(f"CPU {what} {name!r} must be 1..64 characters of A-Z a-z 0-9 _ . -")
    return name


def validate_cpu(cpu: CpuSpec) -> None:
    """Names are checked here; whether libvirt knows them is libvirt's answer (INVALID_SPEC
    at define, or an unknown-model error from compare/baseline)."""
    if cpu.mode == "custom":
        if cpu.model is None:
            raise _invalid("a custom CPU needs a model")
    elif cpu.model is not None or cpu.vendor is not None:
        raise _invalid(f"CPU mode {cpu.mode} takes no model or vendor")
    if cpu.model is not None:
        validate_cpu_name(cpu.model, "model")
    if cpu.vendor is not None:
        validate_cpu_name(cpu.vendor, "vendor")
    for f in [*cpu.features_require, *cpu.features_disable]:
        validate_cpu_name(f, "feature")
    both = set(cpu.features_require) & set(cpu.features_disable)
    if both:
        raise _invalid(f"CPU features both required and disabled: {', '.join(sorted(both))}")


def check_bridges(spec: VmSpec, exists: Callable[[str], bool] = bridge_exists) -> None:
    """Refuse a spec whose port group has no bridge on this host (instead of a start failure)."""
    for n in spec.nics:
        if not exists(validate_bridge(n.bridge)):
            raise DriverError("PORTGROUP_ABSENT", f"port group {n.portgroup!r}: bridge {n.bridge!r} does not exist on this host")


# --- building ----------------------------------------------------------------------------


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def build_domain_xml(spec: VmSpec, domain_type: str, balloon_stats_period: int = 5) -> str:
    """The persistent domain definition of ``spec`` for a host using ``domain_type``; the
    guest's balloon driver reports its memory use every ``balloon_stats_period`` seconds
    (0: never)."""
    if domain_type not in ("kvm", "qemu", "test"):
        raise _invalid(f"domain type {domain_type!r} unsupported")
    validate_spec(spec)

    dom = ET.Element("domain", {"type": domain_type})
    _sub(dom, "name", spec.name)
    _sub(dom, "uuid", validate_uuid(spec.uuid))
    _sub(dom, "memory", str(spec.memory_mib), unit="MiB")
    _sub(dom, "currentMemory", str(spec.memory_mib), unit="MiB")
    _sub(dom, "vcpu", str(spec.vcpus), placement="static")
    if spec.resources is not None:
        _resource_elements(dom, spec.resources)

    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="pc")
    if spec.kernel:
        _sub(os_el, "kernel", spec.kernel)
        if spec.initrd:
            _sub(os_el, "initrd", spec.initrd)
        if spec.cmdline:
            _sub(os_el, "cmdline", spec.cmdline)
    else:
        _sub(os_el, "boot", dev="hd")

    features = _sub(dom, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    if domain_type == "qemu":
        # libvirt >= 8.0; QEMU's default TCG cache is sized from guest RAM and can exceed 1 GiB.
        tcg = _sub(features, "tcg")
        _sub(tcg, "tb-cache", str(TCG_TB_CACHE_MIB), unit="MiB")

    if spec.cpu is not None:
        if spec.cpu.mode == "host-passthrough" and domain_type == "qemu":
            raise _invalid("CPU mode host-passthrough needs KVM; this host runs guests under TCG")
        dom.append(cpu_element(spec.cpu))
    elif domain_type == "kvm":
        _sub(dom, "cpu", mode="host-passthrough")

    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")

    devices = _sub(dom, "devices")
    for d in sorted(spec.disks, key=lambda d: d.index):
        disk = _sub(devices, "disk", type="file", device="disk")
        _sub(disk, "driver", name="qemu", type=d.format)
        _sub(disk, "source", file=disk_path(d.datastore_path, d.file))
        _sub(disk, "target", dev=disk_target(d.bus, d.index), bus=d.bus)
    for n in sorted(spec.nics, key=lambda n: n.index):
        iface = _sub(devices, "interface", type="bridge")
        _sub(iface, "source", bridge=n.bridge)
        _sub(iface, "mac", address=validate_mac(n.mac))
        _sub(iface, "model", type=n.model)
    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    channel = _sub(devices, "channel", type="unix")
    # No path: libvirt generates one under its per-domain channel directory.
    _sub(channel, "source", mode="bind")
    _sub(channel, "target", type="virtio", name=HEARTBEAT_CHANNEL)
    # A virtio balloon, never inflated by us: its statistics (memory the guest uses) are the
    # VM's memory demand for DRS and its mem.usage counter. QEMU's resident memory cannot
    # stand in: it holds every page the guest ever touched, plus QEMU's own.
    balloon = _sub(devices, "memballoon", model="virtio")
    if balloon_stats_period > 0:
        _sub(balloon, "stats", period=str(int(balloon_stats_period)))

    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode")


# --- CPU definitions ---------------------------------------------------------------------


def cpu_element(cpu: CpuSpec) -> ET.Element:
    """The guest ``<cpu>`` of a CpuSpec. A custom model is exact with no fallback (a host that
    cannot give the model refuses the guest instead of giving it a different CPU);
    check='partial' has libvirt verify the requested features before QEMU starts."""
    validate_cpu(cpu)
    if cpu.mode == "host-passthrough":
        el = ET.Element("cpu", {"mode": "host-passthrough", "check": "none"})
    elif cpu.mode == "host-model":
        el = ET.Element("cpu", {"mode": "host-model", "check": "partial"})
    else:
        el = ET.Element("cpu", {"mode": "custom", "match": "exact", "check": "partial"})
        _sub(el, "model", cpu.model, fallback="forbid")
        if cpu.vendor:
            _sub(el, "vendor", cpu.vendor)
    for f in cpu.features_require:
        _sub(el, "feature", policy="require", name=f)
    for f in cpu.features_disable:
        _sub(el, "feature", policy="disable", name=f)
    return el


def build_cpu_xml(cpu: CpuSpec) -> str:
    """A guest CPU definition as XML (for compare_cpu / cpu_baseline)."""
    el = cpu_element(cpu)
    ET.indent(el)
    return ET.tostring(el, encoding="unicode")


@dataclass
class ParsedCpu:
    """A ``<cpu>`` of any kind (host CPU from capabilities, guest CPU, domain capabilities'
    host-model), reduced to what a comparison needs. ``require`` are the named features a
    host has or a guest needs; ``disable`` those a guest definition switches off."""

    mode: str | None = None
    model: str | None = None
    vendor: str | None = None
    arch: str | None = None
    require: set[str] = field(default_factory=set)
    disable: set[str] = field(default_factory=set)


_REQUIRE_POLICIES = {None, "require", "force"}
_DISABLE_POLICIES = {"disable", "forbid"}


def parse_cpu_xml(xml: str) -> ParsedCpu:
    try:
        el = ET.fromstring(xml)
    except ET.ParseError as e:
        raise _invalid(f"CPU XML is malformed: {e}") from None
    if el.tag == "mode":  # domain capabilities' <mode name='host-model'>
        mode = el.get("name")
    elif el.tag == "cpu":
        mode = el.get("mode")
    else:
        raise _invalid(f"CPU XML has root <{el.tag}>, expected <cpu>")
    cpu = ParsedCpu(mode=mode, model=(el.findtext("model") or "").strip() or None, vendor=(el.findtext("vendor") or "").strip() or None, arch=(el.findtext("arch") or "").strip() or None)
    for name, what in ((cpu.model, "model"), (cpu.vendor, "vendor")):
        if name is not None:
            validate_cpu_name(name, what)
    for f in el.findall("feature"):
        name = validate_cpu_name(f.get("name") or "", "feature")
        policy = f.get("policy")
        if policy in _REQUIRE_POLICIES:
            cpu.require.add(name)
        elif policy in _DISABLE_POLICIES:
            cpu.disable.add(name)
        # "optional": neither needed nor refused
    return cpu


def host_style_cpu_xml(cpu: ParsedCpu, arch: str = "x86_64", with_vendor: bool = True) -> str:
    """A host-CPU-style ``<cpu>`` (no mode, no policies) of ``cpu``'s model and required
    features: the form libvirt's baseline API accepts, e.g. to expand a model to its features."""
    el = ET.Element("cpu")
    _sub(el, "arch", cpu.arch or arch)
    if cpu.model:
        _sub(el, "model", cpu.model)
    if with_vendor and cpu.vendor:
        _sub(el, "vendor", cpu.vendor)
    for f in sorted(cpu.require):
        _sub(el, "feature", name=f)
    return ET.tostring(el, encoding="unicode")


def compare_feature_sets(guest: set[str], guest_vendor: str | None, host: set[str], host_vendor: str | None) -> tuple[bool, str]:
    """Whether a guest needing ``guest`` features (model expanded) runs on a host having
    ``host``: (compatible, "identical" | "superset" | "incompatible: ...")."""
    if guest_vendor and host_vendor and guest_vendor != host_vendor:
        return False, f"incompatible: host CPU vendor {host_vendor} is not {guest_vendor}"
    missing = guest - host
    if missing:
        return False, f"incompatible: host CPU lacks {', '.join(sorted(missing))}"
    return True, "identical" if guest == host else "superset"


CPU_PERIOD_US = 100_000


def _resource_elements(dom: ET.Element, res) -> None:
    """<cputune> (shares, a cap for the whole VM) and <memtune> (soft limit) from a ResourceSpec."""
    if res.cpu_shares is not None or res.cpu_quota_us is not None:
        tune = _sub(dom, "cputune")
        if res.cpu_shares is not None:
            _sub(tune, "shares", str(int(res.cpu_shares)))
        if res.cpu_quota_us is not None:
            _sub(tune, "global_period", str(CPU_PERIOD_US))
            _sub(tune, "global_quota", str(int(res.cpu_quota_us)))
    if res.memory_soft_limit_mib is not None:
        mem = _sub(dom, "memtune")
        _sub(mem, "soft_limit", str(int(res.memory_soft_limit_mib)), unit="MiB")
