"""Guests on a libvirt host: their states and their lifecycle, define to undefine (mixed into
LibvirtDriver, vcenter.hypervisor.libvirt.driver).

What this module decides:
- Power states: a domain with a QEMU process (running, paused, blocked, ...) is poweredOn; an
  inactive one with a managed save image is suspended; any other inactive one is poweredOff.
- Idempotency: define of a known UUID returns it; start of a running, stop of a stopped,
  suspend of a suspended domain and undefine of a missing one are no-ops. The agent re-sends
  commands, so "already done" is success, never an error.
- Suspend is a managed save (the memory goes to disk, the QEMU process ends); resume and start
  restore from it. Power off of a suspended guest discards the saved memory; a suspended guest
  is not reconfigured (the saved memory belongs to the old configuration).
"""

from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

import libvirt

from vcenter.domain.states import PowerState
from vcenter.hypervisor.base import DriverError
from vcenter.hypervisor.libvirt.xml import (
    HEARTBEAT_CHANNEL,
    build_domain_xml,
    check_bridges,
    validate_abs_path,
    validate_uuid,
)
from vcenter.messaging.contracts import DomainState, VmSpec

if TYPE_CHECKING:
    from vcenter.hypervisor.libvirt.console import ConsoleStream


def power_state(active: bool, saved: bool) -> str:
    """The power state of a domain: poweredOn while it has a QEMU process (``active``: running,
    paused, blocked, ...), suspended when inactive with a managed save image (``saved``),
    poweredOff otherwise."""
    if active:
        return PowerState.POWERED_ON.value
    return PowerState.SUSPENDED.value if saved else PowerState.POWERED_OFF.value


def heartbeat_socket(xml: str) -> str | None:
    """The unix socket path of the heartbeat channel in a live domain definition, or None
    when it has no such channel (or the channel names no source)."""
    for ch in ET.fromstring(xml).findall("devices/channel[@type='unix']"):
        target = ch.find("target")
        if target is not None and target.get("name") == HEARTBEAT_CHANNEL:
            src = ch.find("source")
            return src.get("path") if src is not None else None
    return None


class GuestOps:
    """Mixin of LibvirtDriver: needs ``_c``, ``_err``, ``is_alive`` (host.py),
    ``_check_declared_cpu`` (cpu.py), ``domain_type`` and ``balloon_stats_period``."""

    # --- states -------------------------------------------------------------------------
    def _state_of(self, dom: libvirt.virDomain) -> DomainState:
        try:
            info = dom.info()  # [state, maxMem KiB, mem KiB, vcpus, cpuTime ns]
            active = bool(dom.isActive())
            power = power_state(active, not active and bool(dom.hasManagedSaveImage(0)))
            return DomainState(uuid=dom.UUIDString(), name=dom.name(), power_state=power, vcpus=info[3], memory_mib=info[1] // 1024, cpu_time_ns=info[4])
        except libvirt.libvirtError as e:
            raise self._err(e) from None

    def list_domains(self) -> list[DomainState]:
        try:
            doms = self._c().listAllDomains(0)
        except libvirt.libvirtError as e:
            raise self._err(e) from None
        out = []
        for dom in doms:
            try:
                out.append(self._state_of(dom))
            except DriverError as e:
                if e.code != "VM_NOT_FOUND":  # undefined between list and query
                    raise
        return out

    def _lookup(self, uuid: str) -> libvirt.virDomain | None:
        try:
            return self._c().lookupByUUIDString(validate_uuid(uuid))
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise self._err(e) from None

    def _get(self, uuid: str) -> libvirt.virDomain:
        dom = self._lookup(uuid)
        if dom is None:
            raise DriverError("VM_NOT_FOUND", f"no domain with UUID {uuid}")
        return dom

    def domain_state(self, uuid: str) -> DomainState | None:
        dom = self._lookup(uuid)
        return None if dom is None else self._state_of(dom)

    def open_console(self, uuid: str) -> "ConsoleStream":
        """The running domain's serial console as a byte stream (vcenter.hypervisor.libvirt.console)."""
        from vcenter.hypervisor.libvirt.console import ConsoleStream

        dom = self._get(uuid)
        try:
            if not dom.isActive():
                raise DriverError("VM_NOT_RUNNING", f"domain {uuid} is not running: it has no console")
        except libvirt.libvirtError as e:
            raise self._err(e) from None
        return ConsoleStream(self._c(), dom)

    def guest_channel_path(self, uuid: str) -> str | None:
        """The unix socket of the running domain's heartbeat channel, as libvirtd sees it
        (a private lab daemon sees it through its own mounts: map it with PrivateLibvirtd.path).
        None when the domain is not running or has no such channel."""
        dom = self._get(uuid)
        try:
            if not dom.isActive():
                return None
            live = dom.XMLDesc(0)
        except libvirt.libvirtError as e:
            raise self._err(e) from None
        return heartbeat_socket(live)

    # --- lifecycle ----------------------------------------------------------------------
    def define(self, spec: VmSpec) -> DomainState:
        dom = self._lookup(spec.uuid)
        if dom is not None:
            state = self._state_of(dom)
            if state.name != spec.name:
                raise DriverError("VM_UUID_CONFLICT", f"UUID {spec.uuid} is already defined as {state.name!r}")
            return state
        xml = build_domain_xml(spec, self.domain_type, self.balloon_stats_period)
        check_bridges(spec)
        self._check_declared_cpu(ET.fromstring(xml).find("cpu"))
        try:
            dom = self._c().defineXML(xml)
        except libvirt.libvirtError as e:
            raise self._err(e) from None
        return self._state_of(dom)

    def start(self, uuid: str) -> DomainState:
        dom = self._get(uuid)
        if self.declared_cpu_xml is not None:
            try:
                cpu = None if dom.isActive() else ET.fromstring(dom.XMLDesc(0)).find("cpu")
            except libvirt.libvirtError as e:
                raise self._err(e) from None
            # A guest defined without a CPU gets the hypervisor's default model (qemu64 under
            # TCG) with check='none': that is libvirt's choice, not a requirement to enforce.
            if cpu is not None and cpu.get("check") == "none":
                cpu = None
            self._check_declared_cpu(cpu)
        try:
            if not dom.isActive():
                dom.create()  # restores from the managed save image when there is one
            elif dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
                dom.resume()
        except libvirt.libvirtError as e:
            err = self._err(e)
            if err.code != "ALREADY_POWERED_ON":  # lost a race with another start: done
                raise err from None
        return self._state_of(dom)

    def stop(self, uuid: str) -> DomainState:
        dom = self._get(uuid)
        try:
            if dom.isActive():
                dom.destroy()
            elif dom.hasManagedSaveImage(0):
                # Power off of a suspended VM: its saved memory is discarded.
                dom.managedSaveRemove(0)
        except libvirt.libvirtError as e:
            err = self._err(e)
            if err.code != "VM_POWERED_OFF":
                raise err from None
        return self._state_of(dom)

    def shutdown(self, uuid: str, timeout: float) -> DomainState:
        dom = self._get(uuid)
        try:
            if not dom.isActive():
                return self._state_of(dom)
            try:
                dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
            except libvirt.libvirtError:
                if not self.is_alive():
                    raise
                dom.shutdownFlags(0)  # let libvirt choose (guest agent, ...)
        except libvirt.libvirtError as e:
            err = self._err(e)
            if err.code == "VM_POWERED_OFF":
                return self._state_of(dom)
            raise err from None
        deadline = time.monotonic() + timeout
        while True:
            try:
                if not dom.isActive():
                    return self._state_of(dom)
            except libvirt.libvirtError as e:
                raise self._err(e) from None
            if time.monotonic() >= deadline:
                raise DriverError("GUEST_SHUTDOWN_TIMEOUT", f"guest of {uuid} still running after {timeout:g}s")
            time.sleep(0.2)

    def reset(self, uuid: str) -> DomainState:
        dom = self._get(uuid)
        try:
            if not dom.isActive():
                raise DriverError("VM_POWERED_OFF", f"domain {uuid} is not running")
            dom.reset(0)
        except libvirt.libvirtError as e:
            raise self._err(e) from None
        return self._state_of(dom)

    def suspend(self, uuid: str) -> DomainState:
        dom = self._get(uuid)
        try:
            if not dom.isActive():
                if dom.hasManagedSaveImage(0):
                    return self._state_of(dom)
                raise DriverError("VM_POWERED_OFF", f"domain {uuid} is not running")
            dom.managedSave(0)
        except libvirt.libvirtError as e:
            raise self._err(e) from None
        return self._state_of(dom)

    def resume(self, uuid: str) -> DomainState:
        dom = self._get(uuid)
        try:
            if dom.isActive():
                if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
                    dom.resume()
                return self._state_of(dom)
            if not dom.hasManagedSaveImage(0):
                raise DriverError("VM_POWERED_OFF", f"domain {uuid} has no saved state to resume")
            dom.create()
        except libvirt.libvirtError as e:
            err = self._err(e)
            if err.code != "ALREADY_POWERED_ON":
                raise err from None
        return self._state_of(dom)

    def reconfigure(self, uuid: str, vcpus: int | None, memory_mib: int | None) -> DomainState:
        dom = self._get(uuid)
        cfg = libvirt.VIR_DOMAIN_AFFECT_CONFIG
        try:
            if dom.isActive():
                raise DriverError("VM_POWERED_ON", f"domain {uuid} is running")
            if dom.hasManagedSaveImage(0):
                # The saved memory image belongs to the old configuration.
                raise DriverError("VM_SUSPENDED", f"domain {uuid} is suspended")
            if vcpus is not None:
                if not 1 <= vcpus <= 256:
                    raise DriverError("INVALID_SPEC", f"vcpus {vcpus} out of range 1..256")
                # The current count may never exceed the maximum: raise the maximum first when
                # growing, lower the current count first when shrinking.
                if vcpus >= dom.vcpusFlags(cfg | libvirt.VIR_DOMAIN_VCPU_MAXIMUM):
                    dom.setVcpusFlags(vcpus, cfg | libvirt.VIR_DOMAIN_VCPU_MAXIMUM)
                    dom.setVcpusFlags(vcpus, cfg)
                else:
                    dom.setVcpusFlags(vcpus, cfg)
                    dom.setVcpusFlags(vcpus, cfg | libvirt.VIR_DOMAIN_VCPU_MAXIMUM)
            if memory_mib is not None:
                if not 16 <= memory_mib <= 1024 * 1024:
                    raise DriverError("INVALID_SPEC", f"memory {memory_mib} MiB out of range")
                kib = memory_mib * 1024
                if kib >= dom.maxMemory():
                    dom.setMemoryFlags(kib, cfg | libvirt.VIR_DOMAIN_MEM_MAXIMUM)
                    dom.setMemoryFlags(kib, cfg)
                else:
                    dom.setMemoryFlags(kib, cfg)
                    dom.setMemoryFlags(kib, cfg | libvirt.VIR_DOMAIN_MEM_MAXIMUM)
        except libvirt.libvirtError as e:
            raise self._err(e) from None
        return self._state_of(dom)

    def undefine(self, uuid: str, delete_disks: list[str]) -> None:
        paths = [validate_abs_path(p, "disk path") for p in delete_disks]
        dom = self._lookup(uuid)
        if dom is not None:
            try:
                if dom.isActive():
                    dom.destroy()
                flags = libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
                try:
                    dom.undefineFlags(flags)
                except libvirt.libvirtError as e:
                    # Drivers without checkpoints/NVRAM support reject those flags.
                    if e.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT and e.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
                        raise
                    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
            except libvirt.libvirtError as e:
                err = self._err(e)
                if err.code != "VM_NOT_FOUND":
                    raise err from None
        for p in paths:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
            except OSError as e:
                raise DriverError("DISK_DELETE_FAILED", f"{p}: {e}") from None
