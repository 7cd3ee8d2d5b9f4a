"""Guest CPU definitions on a libvirt host: the CPU guests get here, baselines and comparisons
(mixed into LibvirtDriver, vcenter.hypervisor.libvirt.driver).

What this module decides:
- compare/baseline ask libvirt for this host's domain type (x86_64, machine ``pc``). A host
  built with ``declared_cpu_xml`` presents that CPU instead of the real one (lab hosts all
  share one real CPU): host_facts, host_cpu_xml and compare_cpu use it, and define/start refuse
  a guest model it cannot give (CPU_INCOMPATIBLE). Models are expanded to feature sets by
  libvirt's CPU map (baselineCPU with EXPAND_FEATURES), never by a table here.

Facts measured with libvirt 9.0 / QEMU 7.2 (see the integration tests):
- Under TCG (AMD EPYC machine): Westmere, Nehalem, Penryn, Conroe, kvm64, qemu64, Opteron_G2
  guests start; core2duo (vme), SandyBridge, Haswell-noTSX, Skylake-Client and EPYC are refused
  by libvirt (features QEMU does not emulate); any explicit <vendor>Intel</vendor> is refused on
  this AMD machine. libvirt's qemu64 includes svm, so it does not fit an Intel CPU definition.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable

import libvirt

from vcenter.hypervisor.base import ConnectionLost, DriverError
from vcenter.hypervisor.libvirt.xml import ParsedCpu, compare_feature_sets, host_style_cpu_xml, parse_cpu_xml


class CpuOps:
    """Mixin of LibvirtDriver: needs ``_c``, ``_err``, ``is_alive`` (host.py), ``declared_cpu_xml``
    and ``domain_type``."""

    # Guests run under ``self.domain_type`` on machine type ``pc`` of x86_64 (as build_domain_xml
    # defines them); the hypervisor-aware calls are asked for exactly that.
    _ARCH = "x86_64"
    _MACHINE = "pc"

    def _hypervisor_call(self, hyp: Callable[[], object], plain: Callable[[], object]) -> object:
        """``hyp()`` (a virConnect*HypervisorCPU call), or ``plain()`` where the driver lacks it."""
        try:
            return hyp()
        except libvirt.libvirtError as e:
            if e.get_error_code() not in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_CONFIG_UNSUPPORTED):
                raise
        return plain()

    def _cpu_features(self, cpu: ParsedCpu) -> set[str]:
        """Every feature of ``cpu``: its model expanded by libvirt's CPU map, plus the features
        it names, minus those it disables. A CPU without a model (host-model or passthrough
        guest) is the host's CPU plus/minus its features."""
        if cpu.model is None:
            host = parse_cpu_xml(self.host_cpu_xml())
            base = self._cpu_features(host) if host.model is not None else host.require - host.disable
            return (base | cpu.require) - cpu.disable
        xml = host_style_cpu_xml(ParsedCpu(model=cpu.model, arch=cpu.arch, require=cpu.require), arch=self._ARCH, with_vendor=False)
        try:
            out = self._c().baselineCPU([xml], libvirt.VIR_CONNECT_BASELINE_CPU_EXPAND_FEATURES)
        except libvirt.libvirtError as e:
            raise self._cpu_err(e) from None
        expanded = parse_cpu_xml(out)
        return (expanded.require | cpu.require) - cpu.disable

    def _cpu_err(self, e: libvirt.libvirtError) -> DriverError:
        err = self._err(e)
        msg = e.get_error_message() or str(e)
        if not isinstance(err, ConnectionLost) and "vendors do not match" in msg:
            return DriverError("CPU_INCOMPATIBLE", msg)
        if not isinstance(err, ConnectionLost) and ("Unknown CPU" in msg or "CPU architecture" in msg or e.get_error_code() == libvirt.VIR_ERR_XML_ERROR):
            return DriverError("INVALID_SPEC", msg)
        return err

    def _host_style(self, cpu_xml: str) -> str:
        """A host-CPU-style definition of any <cpu> XML (what the baseline APIs accept). A
        definition that disables features of its model is re-expressed as the largest of a few
        plain models all of whose features remain, plus the remaining features by name."""
        cpu = parse_cpu_xml(cpu_xml)
        if cpu.model is not None and not cpu.disable:
            return host_style_cpu_xml(cpu, arch=self._ARCH)
        if cpu.model is None and cpu.vendor is None:
            cpu.vendor = parse_cpu_xml(self.host_cpu_xml()).vendor
        features = self._cpu_features(cpu)
        for base in ("kvm64", "qemu64", "486"):
            if self._cpu_features(ParsedCpu(model=base)) <= features:
                return host_style_cpu_xml(ParsedCpu(model=base, vendor=cpu.vendor, arch=cpu.arch, require=features), arch=self._ARCH)
        raise DriverError("INVALID_SPEC", "CPU definition has too few features for any x86_64 model")

    def host_cpu_xml(self) -> str:
        """The CPU guests get here: the declared one; else the hypervisor's host-model CPU from
        domain capabilities (under TCG: what QEMU emulates, not the physical CPU); else the
        host CPU from capabilities."""
        if self.declared_cpu_xml is not None:
            return self.declared_cpu_xml
        conn = self._c()
        try:
            domcaps = ET.fromstring(conn.getDomainCapabilities(None, self._ARCH, self._MACHINE, self.domain_type, 0))
            mode = domcaps.find("cpu/mode[@name='host-model']")
            if mode is not None and mode.get("supported") == "yes" and mode.find("model") is not None:
                mode.tag = "cpu"
                mode.attrib = {"mode": "custom", "match": "exact"}
                return ET.tostring(mode, encoding="unicode")
        except libvirt.libvirtError as e:
            if not self.is_alive():
                raise self._err(e) from None
        try:
            cpu = ET.fromstring(conn.getCapabilities()).find("host/cpu")
        except libvirt.libvirtError as e:
            raise self._err(e) from None
        if cpu is None:
            raise DriverError("LIBVIRT_ERROR", "the hypervisor reports no host CPU")
        keep = {"arch", "model", "vendor", "feature"}
        for child in list(cpu):
            if child.tag not in keep:
                cpu.remove(child)
        return ET.tostring(cpu, encoding="unicode")

    def cpu_baseline(self, cpu_xmls: list[str], expand_features: bool = False) -> str:
        """The most capable guest CPU that runs on every one of ``cpu_xmls`` (host CPUs, e.g.
        the host_cpu_xml() of every host of a cluster): virConnectBaselineHypervisorCPU for this
        host's domain type, or the hypervisor-agnostic virConnectBaselineCPU where unsupported."""
        if not cpu_xmls:
            raise DriverError("INVALID_SPEC", "baseline of no CPUs")
        xmls = [self._host_style(x) for x in cpu_xmls]
        flags = libvirt.VIR_CONNECT_BASELINE_CPU_EXPAND_FEATURES if expand_features else 0
        conn = self._c()
        try:
            return str(self._hypervisor_call(lambda: conn.baselineHypervisorCPU(None, self._ARCH, self._MACHINE, self.domain_type, xmls, flags), lambda: conn.baselineCPU(xmls, flags)))
        except libvirt.libvirtError as e:
            raise self._cpu_err(e) from None

    def compare_cpu(self, cpu_xml: str) -> tuple[bool, str]:
        """Whether a guest CPU definition runs here: (compatible, "identical" | "superset" |
        "incompatible: <why>"). Against a declared CPU: a feature-set comparison (both sides
        expanded by libvirt's CPU map); else virConnectCompareHypervisorCPU."""
        guest = parse_cpu_xml(cpu_xml)
        if self.declared_cpu_xml is not None:
            host = parse_cpu_xml(self.declared_cpu_xml)
            return compare_feature_sets(self._cpu_features(guest), guest.vendor, self._cpu_features(host), host.vendor)
        conn = self._c()
        fail = libvirt.VIR_CONNECT_COMPARE_CPU_FAIL_INCOMPATIBLE
        try:
            result = self._hypervisor_call(lambda: conn.compareHypervisorCPU(None, self._ARCH, self._MACHINE, self.domain_type, cpu_xml, fail), lambda: conn.compareCPU(cpu_xml, fail))
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_CPU_INCOMPATIBLE:
                return False, f"incompatible: {e.get_error_message()}"
            raise self._cpu_err(e) from None
        if result == libvirt.VIR_CPU_COMPARE_IDENTICAL:
            return True, "identical"
        if result == libvirt.VIR_CPU_COMPARE_SUPERSET:
            return True, "superset"
        return False, "incompatible"

    def _check_declared_cpu(self, cpu: ET.Element | None) -> None:
        """On a host that declares its CPU, refuse a guest whose CPU definition the declared CPU
        cannot give (libvirt checks only the real CPU). A guest without a model is not checked."""
        if self.declared_cpu_xml is None or cpu is None or cpu.findtext("model") is None:
            return
        ok, detail = self.compare_cpu(ET.tostring(cpu, encoding="unicode"))
        if not ok:
            raise DriverError("CPU_INCOMPATIBLE", f"declared host CPU: {detail}")
