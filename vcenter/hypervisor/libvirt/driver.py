"""The libvirt implementation of HypervisorDriver: the only code that talks to libvirtd.

What this module decides:
- Power states: a domain with a QEMU process (running, paused, blocked, ...) is poweredOn; an
  inactive one with a managed save image is suspended; any other inactive one is poweredOff.
- Idempotency: define of a known UUID returns it; start of a running, stop of a stopped,
  suspend of a suspended domain and undefine of a missing one are no-ops. The agent re-sends
  commands, so "already done" is success, never an error.
- Error codes: libvirt errors become DriverError codes (VM_NOT_FOUND, ALREADY_POWERED_ON,
  VM_POWERED_ON, ...; LIBVIRT_ERROR otherwise). A failure on a dead connection is always
  ConnectionLost (HYPERVISOR_UNREACHABLE); the agent then calls connect() again.
- Connection: one libvirt event loop thread per process (libvirt needs it for keepalive and
  events); keepalive 2 s x 3; opening never blocks longer than ``connect_timeout`` (a new
  connection to an unreachable host would hang forever otherwise).
- Lifecycle events are translated to LifecycleEvent (reason from StopReason) and handed to
  subscribers on a dispatcher thread of their own, so that a slow subscriber never stalls the
  event loop (which would also stall keepalive and drop the connection). Subscriptions live in
  the driver and are re-registered on every new connection.

- CPU definitions: compare/baseline ask libvirt for this host's domain type (x86_64, machine
  ``pc``). A host built with ``declared_cpu_xml`` presents that CPU instead of the real one
  (lab hosts all share one real CPU): host_facts, host_cpu_xml and compare_cpu use it, and
  define/start refuse a guest model it cannot give (CPU_INCOMPATIBLE). Models are expanded to
  feature sets by libvirt's CPU map (baselineCPU with EXPAND_FEATURES), never by a table here.
- Datastores are ``dir`` storage pools (ensure_pool / pool_usage / remove_pool); disks are still
  made by qemu-img, then the pool covering the directory is refreshed so that they
  show up as volumes. No pool operation ever deletes a file.

Facts measured with libvirt 9.0 / QEMU 7.2 (see the integration tests):
- ``virsh destroy`` -> STOPPED/DESTROYED; QEMU killed by SIGKILL -> STOPPED/FAILED;
  managed save -> STOPPED/SAVED; a start from the managed save image -> STARTED/RESTORED.
- Under TCG (AMD EPYC machine): Westmere, Nehalem, Penryn, Conroe, kvm64, qemu64, Opteron_G2
  guests start; core2duo (vme), SandyBridge, Haswell-noTSX, Skylake-Client and EPYC are refused
  by libvirt (features QEMU does not emulate); any explicit <vendor>Intel</vendor> is refused on
  this AMD machine. libvirt's qemu64 includes svm, so it does not fit an Intel CPU definition.
"""
from __future__ import annotations

import logging
import os
import queue
import socket
import subprocess
import threading
import time
import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import datetime, timezone
from urllib.parse import parse_qs, urlparse

import libvirt

from vcenter.domain.states import PowerState, StopReason
from vcenter.hypervisor.base import ConnectionLost, DriverError, LifecycleCallback
from vcenter.hypervisor.libvirt.vmdata import VmDataOps  # snapshots, clones, backups
from vcenter.hypervisor.libvirt.storagemove import SUFFIX as MOVE_SUFFIX, StorageMoveOps  # Storage VMotion, fast path
from vcenter.hypervisor.libvirt.xml import (
    HEARTBEAT_CHANNEL, ParsedCpu, build_domain_xml, check_bridges, compare_feature_sets, detect_domain_type,
    disk_path, host_style_cpu_xml, parse_cpu_xml, validate_abs_path, validate_name, validate_uuid,
)
from vcenter.messaging.contracts import (
    DomainCounters, DomainState, HostCounters, HostFacts, LifecycleEvent, MigrationOptions, MigrationProgress, VmSpec,
)

log = logging.getLogger(__name__)

_ON = PowerState.POWERED_ON.value
_OFF = PowerState.POWERED_OFF.value
_SUSPENDED = PowerState.SUSPENDED.value

# --- the process-wide libvirt event loop -------------------------------------------------

_event_loop_lock = threading.Lock()
_event_loop_started = False


def _ignore_libvirt_error(_ctx, _err) -> None:
    # libvirt prints every error to stderr by default; we raise them as DriverError instead.
    pass


def ensure_event_loop() -> None:
    """Register libvirt's default event implementation and run it on a daemon thread, once.

    Must happen before the first connection is opened, or that connection has no keepalive
    and delivers no events.
    """
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.registerErrorHandler(_ignore_libvirt_error, None)
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                try:
                    libvirt.virEventRunDefaultImpl()
                except Exception:  # never let the loop die: every connection depends on it
                    log.exception("libvirt event loop iteration failed")
                    time.sleep(0.1)

        threading.Thread(target=run, name="libvirt-event-loop", daemon=True).start()
        _event_loop_started = True


# --- event translation -------------------------------------------------------------------

_EVENT_NAMES = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined",
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "started",
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "suspended",   # libvirt "paused": QEMU still exists
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "resumed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "pmsuspended",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
}

_STOPPED_REASONS = {
    libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED: StopReason.DESTROYED,
    libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: StopReason.SHUTDOWN,
    libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED: StopReason.CRASHED,
    # QEMU died under libvirt (SIGKILL, OOM killer, abort): reported as FAILED, not CRASHED.
    libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED: StopReason.CRASHED,
    libvirt.VIR_DOMAIN_EVENT_STOPPED_SAVED: StopReason.SAVED,
    libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED: StopReason.MIGRATED,
}


def _detail_name(event: int, detail: int) -> str:
    """libvirt's own name of an event detail, e.g. (STARTED, 2) -> 'restored'."""
    prefix = {
        libvirt.VIR_DOMAIN_EVENT_DEFINED: "VIR_DOMAIN_EVENT_DEFINED_",
        libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "VIR_DOMAIN_EVENT_UNDEFINED_",
        libvirt.VIR_DOMAIN_EVENT_STARTED: "VIR_DOMAIN_EVENT_STARTED_",
        libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "VIR_DOMAIN_EVENT_SUSPENDED_",
        libvirt.VIR_DOMAIN_EVENT_RESUMED: "VIR_DOMAIN_EVENT_RESUMED_",
        libvirt.VIR_DOMAIN_EVENT_STOPPED: "VIR_DOMAIN_EVENT_STOPPED_",
        libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "VIR_DOMAIN_EVENT_SHUTDOWN_",
        libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "VIR_DOMAIN_EVENT_PMSUSPENDED_",
        libvirt.VIR_DOMAIN_EVENT_CRASHED: "VIR_DOMAIN_EVENT_CRASHED_",
    }.get(event)
    if prefix:
        for attr in dir(libvirt):
            if attr.startswith(prefix) and getattr(libvirt, attr) == detail and not attr.endswith("_LAST"):
                return attr[len(prefix):].lower()
    return str(detail)


def translate_event(event: int, detail: int) -> tuple[str, str, str | None]:
    """(event name, reason, power state after) of a libvirt lifecycle event."""
    name = _EVENT_NAMES.get(event, str(event))
    if event == libvirt.VIR_DOMAIN_EVENT_STOPPED:
        reason = _STOPPED_REASONS.get(detail, StopReason.UNKNOWN)
        return name, reason.value, _SUSPENDED if reason == StopReason.SAVED else _OFF
    if event == libvirt.VIR_DOMAIN_EVENT_STARTED:
        return name, "started", _ON
    if event in (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_RESUMED,
                 libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED):
        return name, _detail_name(event, detail), _ON
    # defined/undefined/shutdown(requested)/crashed(guest panic): the event alone does not say.
    return name, _detail_name(event, detail), None


# --- error mapping -----------------------------------------------------------------------

_CONNECTION_ERRORS = {
    libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN, libvirt.VIR_ERR_RPC,
    getattr(libvirt, "VIR_ERR_AUTH_UNAVAILABLE", -1),
}


def _map_error(e: libvirt.libvirtError) -> DriverError:
    code = e.get_error_code()
    msg = e.get_error_message() or str(e)
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return DriverError("VM_NOT_FOUND", msg)
    if code == libvirt.VIR_ERR_OPERATION_INVALID:
        low = msg.lower()
        if "already running" in low or "is already active" in low:
            return DriverError("ALREADY_POWERED_ON", msg)
        if "not running" in low:
            return DriverError("VM_POWERED_OFF", msg)
    if code == libvirt.VIR_ERR_DOM_EXIST or (code == libvirt.VIR_ERR_OPERATION_FAILED and "already exists" in msg):
        return DriverError("VM_NAME_CONFLICT", msg)
    if code == libvirt.VIR_ERR_XML_ERROR or code == libvirt.VIR_ERR_CONFIG_UNSUPPORTED:
        return DriverError("INVALID_SPEC", msg)
    if code == libvirt.VIR_ERR_OPERATION_TIMEOUT:
        return DriverError("HYPERVISOR_TIMEOUT", msg)
    if code == libvirt.VIR_ERR_CPU_INCOMPATIBLE:
        return DriverError("CPU_INCOMPATIBLE", msg)
    return DriverError("LIBVIRT_ERROR", msg)


# --- the driver ------------------------------------------------------------------------

class LibvirtDriver(VmDataOps, StorageMoveOps):
    def __init__(self, uri: str, connect_timeout: float = 10, domain_type: str | None = None,
                 declared_cpu_xml: str | None = None, balloon_stats_period: int = 5):
        self.uri = uri
        self.balloon_stats_period = balloon_stats_period
        # A lab host's CPU (host-style <cpu> XML) that stands in for the real one in host_facts,
        # host_cpu_xml and compare_cpu: every lab host has the same real CPU.
        if declared_cpu_xml is not None:
            declared = parse_cpu_xml(declared_cpu_xml)
            if not declared.model:
                raise DriverError("INVALID_SPEC", "a declared host CPU needs a model")
        self.declared_cpu_xml = declared_cpu_xml
        self.connect_timeout = connect_timeout
        if domain_type is None:
            domain_type = "test" if uri.startswith("test:") else detect_domain_type()
        self.domain_type = domain_type
        self._conn: libvirt.virConnect | None = None
        self._conn_lock = threading.RLock()
        self._callbacks: list[LifecycleCallback] = []
        self._event_callback_id: int | None = None
        self._events: queue.Queue[LifecycleEvent | None] = queue.Queue()
        self._dispatcher: threading.Thread | None = None

    # --- connection ---------------------------------------------------------------------
    def connect(self) -> None:
        with self._conn_lock:
            if self._conn is not None and self._alive(self._conn):
                return
            self._drop_connection()
            ensure_event_loop()
            self._precheck_socket()
            conn = self._open_with_timeout()
            try:
                conn.setKeepAlive(2, 3)
            except libvirt.libvirtError:
                pass  # local drivers (test://) have no keepalive
            try:
                conn.registerCloseCallback(self._on_close, None)
            except libvirt.libvirtError:
                pass
            self._conn = conn
            self._event_callback_id = None
            self._register_events()
            log.info("connected to %s", self.uri)

    def _precheck_socket(self) -> None:
        # A cheap, bounded probe first: a dead daemon fails here in milliseconds with a clear
        # message instead of inside libvirt.
        parsed = urlparse(self.uri)
        if "+unix" in parsed.scheme:
            sock = parse_qs(parsed.query).get("socket", [None])[0]
            if sock and not os.path.exists(sock):
                raise ConnectionLost(f"{self.uri}: socket {sock} does not exist")
        elif "+tcp" in parsed.scheme and parsed.hostname:
            try:
                socket.create_connection((parsed.hostname, parsed.port or 16509),
                                         timeout=self.connect_timeout).close()
            except OSError as e:
                raise ConnectionLost(f"{self.uri}: {e}") from None

    def _open_with_timeout(self) -> libvirt.virConnect:
        # virConnectOpen has no timeout of its own and hangs on an unreachable host; open it on
        # a helper thread and give up after connect_timeout. A late success is closed.
        result: dict[str, object] = {}
        done = threading.Event()
        abandoned = threading.Event()

        def opener() -> None:
            try:
                c = libvirt.open(self.uri)
                if abandoned.is_set():
                    try:
                        c.close()
                    except libvirt.libvirtError:
                        pass
                    return
                result["conn"] = c
            except libvirt.libvirtError as e:
                result["error"] = e
            finally:
                done.set()

        threading.Thread(target=opener, name="libvirt-open", daemon=True).start()
        if not done.wait(self.connect_timeout):
            abandoned.set()
            raise ConnectionLost(f"{self.uri}: no answer within {self.connect_timeout}s")
        if "error" in result:
            err = result["error"]
            raise ConnectionLost(f"{self.uri}: {err}")  # type: ignore[str-bytes-safe]
        return result["conn"]  # type: ignore[return-value]

    def _on_close(self, conn, reason, _opaque) -> None:
        log.warning("libvirt connection to %s closed (reason %s)", self.uri, reason)

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if self._event_callback_id is not None:
                conn.domainEventDeregisterAny(self._event_callback_id)
        except libvirt.libvirtError:
            pass
        try:
            conn.unregisterCloseCallback()
        except libvirt.libvirtError:
            pass
        try:
            conn.close()
        except libvirt.libvirtError:
            pass
        self._event_callback_id = None

    def close(self) -> None:
        with self._conn_lock:
            self._drop_connection()

    @staticmethod
    def _alive(conn: libvirt.virConnect) -> bool:
        try:
            return conn.isAlive() == 1
        except libvirt.libvirtError:
            return False

    def is_alive(self) -> bool:
        conn = self._conn
        return conn is not None and self._alive(conn)

    def _c(self) -> libvirt.virConnect:
        conn = self._conn
        if conn is None:
            raise ConnectionLost(f"not connected to {self.uri}")
        return conn

    def _err(self, e: libvirt.libvirtError) -> DriverError:
        """Map ``e``; on a dead connection always ConnectionLost, whatever libvirt's code."""
        conn = self._conn
        if conn is None or not self._alive(conn) or e.get_error_code() in _CONNECTION_ERRORS:
            return ConnectionLost(f"{self.uri}: {e.get_error_message() or e}")
        return _map_error(e)

    # --- events -------------------------------------------------------------------------
    def subscribe_lifecycle(self, callback: LifecycleCallback) -> None:
        with self._conn_lock:
            self._callbacks.append(callback)
            if self._dispatcher is None:
                self._dispatcher = threading.Thread(target=self._dispatch, name="libvirt-events",
                                                    daemon=True)
                self._dispatcher.start()
            if self._conn is not None:
                self._register_events()

    def _register_events(self) -> None:
        if not self._callbacks or self._event_callback_id is not None or self._conn is None:
            return
        try:
            self._event_callback_id = self._conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None)
        except libvirt.libvirtError as e:
            raise self._err(e) from None

    def _on_lifecycle(self, _conn, dom, event, detail, _opaque) -> None:
        # Runs on the libvirt event loop thread: translate and hand off, nothing more.
        try:
            name, reason, power = translate_event(event, detail)
            self._events.put(LifecycleEvent(uuid=dom.UUIDString(), name=dom.name(), event=name,
                                            reason=reason, power_state=power,
                                            at=datetime.now(timezone.utc)))
        except Exception:
            log.exception("cannot translate lifecycle event %s/%s", event, detail)

    def _dispatch(self) -> None:
        while True:
            ev = self._events.get()
            if ev is None:
                return
            for cb in list(self._callbacks):
                try:
                    cb(ev)
                except Exception:
                    log.exception("lifecycle subscriber failed on %s", ev)

    # --- queries ------------------------------------------------------------------------
    def host_facts(self) -> HostFacts:
        conn = self._c()
        try:
            info = conn.getInfo()
            caps = ET.fromstring(conn.getCapabilities())
            hostname = conn.getHostname()
            ver = conn.getLibVersion()
        except libvirt.libvirtError as e:
            raise self._err(e) from None
        host_cpu = parse_cpu_xml(self.host_cpu_xml())
        cpu_model = host_cpu.model if self.declared_cpu_xml else caps.findtext("host/cpu/model")
        try:
            cpu_features = sorted(self._cpu_features(host_cpu))
        except DriverError as e:
            if isinstance(e, ConnectionLost):
                raise
            cpu_features = sorted(host_cpu.require)  # a driver without a CPU map (test://)
        try:
            cpu_xml = self.host_cpu_xml()
        except DriverError:
            cpu_xml = None
        return HostFacts(
            hostname=hostname,
            host_uuid=caps.findtext("host/uuid"),
            cpu_model=cpu_model,
            cpu_features=cpu_features,
            cpu_xml=cpu_xml,
            cpu_cores=info[2],
            cpu_mhz=info[3],
            memory_mib=info[1],
            hypervisor=self.domain_type,
            libvirt_version=f"{ver // 1_000_000}.{ver // 1000 % 1000}.{ver % 1000}",
        )

    # --- performance counters -------------------------------------------------------------
    _DOMAIN_STATS = (libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL | libvirt.VIR_DOMAIN_STATS_BALLOON
                     | libvirt.VIR_DOMAIN_STATS_VCPU | libvirt.VIR_DOMAIN_STATS_BLOCK | libvirt.VIR_DOMAIN_STATS_INTERFACE)

    def host_counters(self) -> HostCounters:
        """One reading of the node's CPU time and memory and of every running domain's
        counters (libvirt's bulk domain statistics: one call for all domains). A part the
        driver cannot read (no node memory stats on test://) is left out."""
        conn = self._c()
        try:
            info = conn.getInfo()
            records = conn.getAllDomainStats(self._DOMAIN_STATS, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE)
        except libvirt.libvirtError as e:
            raise self._err(e) from None
        reading = HostCounters(cpus=info[2], cpu_mhz=info[3])
        try:
            cpu = conn.getCPUStats(libvirt.VIR_NODE_CPU_STATS_ALL_CPUS, 0)
            busy = sum(int(cpu.get(k, 0)) for k in ("kernel", "user"))
            reading.cpu_busy_ns = busy
            reading.cpu_total_ns = busy + int(cpu.get("idle", 0)) + int(cpu.get("iowait", 0))
        except libvirt.libvirtError as e:
            log.debug("node CPU stats unavailable: %s", e.get_error_message())
        try:
            mem = conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS, 0)
            reading.memory_total_kib = int(mem["total"])
            reading.memory_available_kib = sum(int(mem.get(k, 0)) for k in ("free", "buffers", "cached"))
        except (libvirt.libvirtError, KeyError) as e:
            log.debug("node memory stats unavailable: %s", e)
        for dom, stats in records:
            try:
                reading.domains.append(self._domain_counters(dom, stats))
            except libvirt.libvirtError as e:  # gone between the listing and now
                log.debug("domain stats of %s skipped: %s", dom.name(), e.get_error_message())
        return reading

    @staticmethod
    def _domain_counters(dom: libvirt.virDomain, stats: dict) -> DomainCounters:
        cpu_time = stats.get("cpu.time")
        if cpu_time is None:  # no cpuacct cgroup for this domain: QEMU's own count
            cpu_time = dom.info()[4]

        def total(prefix: str, count_key: str, field: str) -> int:
            return sum(int(stats.get(f"{prefix}.{i}.{field}", 0)) for i in range(int(stats.get(count_key, 0))))

        memory_kib = stats.get("balloon.current") or stats.get("balloon.maximum") or dom.info()[2]
        return DomainCounters(
            uuid=dom.UUIDString(),
            vcpus=int(stats.get("vcpu.current") or dom.info()[3] or 1),
            memory_mib=int(memory_kib) // 1024,
            cpu_time_ns=int(cpu_time),
            rss_kib=int(stats["balloon.rss"]) if "balloon.rss" in stats else None,
            guest_available_kib=int(stats["balloon.available"]) if "balloon.available" in stats else None,
            guest_unused_kib=int(stats["balloon.unused"]) if "balloon.unused" in stats else None,
            disk_read_bytes=total("block", "block.count", "rd.bytes"),
            disk_write_bytes=total("block", "block.count", "wr.bytes"),
            net_rx_bytes=total("net", "net.count", "rx.bytes"),
            net_tx_bytes=total("net", "net.count", "tx.bytes"),
        )

    # --- CPU definitions ----------------------------------------------------------------
    # Guests run under ``self.domain_type`` on machine type ``pc`` of x86_64 (as build_domain_xml
    # defines them); the hypervisor-aware calls are asked for exactly that.
    _ARCH = "x86_64"
    _MACHINE = "pc"

    def _hypervisor_call(self, hyp: Callable[[], object], plain: Callable[[], object]) -> object:
        """``hyp()`` (a virConnect*HypervisorCPU call), or ``plain()`` where the driver lacks it."""
        try:
            return hyp()
        except libvirt.libvirtError as e:
            if e.get_error_code() not in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG,
                                          libvirt.VIR_ERR_CONFIG_UNSUPPORTED):
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
        xml = host_style_cpu_xml(ParsedCpu(model=cpu.model, arch=cpu.arch, require=cpu.require),
                                 arch=self._ARCH, with_vendor=False)
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
        if not isinstance(err, ConnectionLost) and ("Unknown CPU" in msg or "CPU architecture" in msg
                                                   or e.get_error_code() == libvirt.VIR_ERR_XML_ERROR):
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
                return host_style_cpu_xml(ParsedCpu(model=base, vendor=cpu.vendor, arch=cpu.arch,
                                                    require=features), arch=self._ARCH)
        raise DriverError("INVALID_SPEC", "CPU definition has too few features for any x86_64 model")

    def host_cpu_xml(self) -> str:
        """The CPU guests get here: the declared one; else the hypervisor's host-model CPU from
        domain capabilities (under TCG: what QEMU emulates, not the physical CPU); else the
        host CPU from capabilities."""
        if self.declared_cpu_xml is not None:
            return self.declared_cpu_xml
        conn = self._c()
        try:
            domcaps = ET.fromstring(conn.getDomainCapabilities(None, self._ARCH, self._MACHINE,
                                                               self.domain_type, 0))
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
            return str(self._hypervisor_call(
                lambda: conn.baselineHypervisorCPU(None, self._ARCH, self._MACHINE, self.domain_type,
                                                   xmls, flags),
                lambda: conn.baselineCPU(xmls, flags)))
        except libvirt.libvirtError as e:
            raise self._cpu_err(e) from None

    def compare_cpu(self, cpu_xml: str) -> tuple[bool, str]:
        """Whether a guest CPU definition runs here: (compatible, "identical" | "superset" |
        "incompatible: <why>"). Against a declared CPU: a feature-set comparison (both sides
        expanded by libvirt's CPU map); else virConnectCompareHypervisorCPU."""
        guest = parse_cpu_xml(cpu_xml)
        if self.declared_cpu_xml is not None:
            host = parse_cpu_xml(self.declared_cpu_xml)
            return compare_feature_sets(self._cpu_features(guest), guest.vendor,
                                        self._cpu_features(host), host.vendor)
        conn = self._c()
        fail = libvirt.VIR_CONNECT_COMPARE_CPU_FAIL_INCOMPATIBLE
        try:
            result = self._hypervisor_call(
                lambda: conn.compareHypervisorCPU(None, self._ARCH, self._MACHINE, self.domain_type,
                                                  cpu_xml, fail),
                lambda: conn.compareCPU(cpu_xml, fail))
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

    # --- storage pools (datastores) -------------------------------------------------------
    def _pool(self, name: str) -> libvirt.virStoragePool | None:
        try:
            return self._c().storagePoolLookupByName(validate_name(name))
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
                return None
            raise self._err(e) from None

    @staticmethod
    def _pool_target(pool: libvirt.virStoragePool) -> str | None:
        return ET.fromstring(pool.XMLDesc(0)).findtext("target/path")

    def ensure_pool(self, name: str, path: str) -> None:
        """Define (if absent), build, start and autostart a ``dir`` pool on ``path``; idempotent.
        A pool of that name on another directory is POOL_CONFLICT."""
        validate_name(name)
        validate_abs_path(path, "pool path")
        path = os.path.normpath(path)
        pool = self._pool(name)
        try:
            if pool is None:
                root = ET.Element("pool", {"type": "dir"})
                ET.SubElement(root, "name").text = name
                target = ET.SubElement(root, "target")
                ET.SubElement(target, "path").text = path
                try:
                    pool = self._c().storagePoolDefineXML(ET.tostring(root, encoding="unicode"), 0)
                except libvirt.libvirtError as e:
                    if self.is_alive() and e.get_error_code() == libvirt.VIR_ERR_OPERATION_FAILED:
                        # libvirt: "Storage source conflict with pool: 'other'" (same path)
                        raise DriverError("POOL_CONFLICT", e.get_error_message() or str(e)) from None
                    raise
            else:
                existing = self._pool_target(pool)
                if existing is None or os.path.normpath(existing) != path:
                    raise DriverError("POOL_CONFLICT", f"pool {name!r} is defined on {existing}, not {path}")
            if not pool.isActive():
                if not os.path.isdir(path):
                    pool.build(0)  # a dir pool's build is mkdir; never formats anything
                try:
                    pool.create(0)
                except libvirt.libvirtError as e:
                    if e.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:  # raced: active
                        raise
            if not pool.autostart():
                pool.setAutostart(1)
        except libvirt.libvirtError as e:
            raise self._err(e) from None

    def pool_usage(self, name: str) -> tuple[int, int]:
        """(capacity, available) bytes of a pool, after a refresh."""
        pool = self._pool(name)
        if pool is None:
            raise DriverError("DATASTORE_ABSENT", f"no storage pool {name!r}")
        try:
            if not pool.isActive():
                raise DriverError("DATASTORE_INACCESSIBLE", f"storage pool {name!r} is not active")
            pool.refresh(0)
            _state, capacity, _allocation, available = pool.info()
        except libvirt.libvirtError as e:
            raise self._err(e) from None
        return capacity, available

    def remove_pool(self, name: str) -> None:
        """Stop and undefine a pool; its directory and files stay. Idempotent."""
        pool = self._pool(name)
        if pool is None:
            return
        try:
            if pool.isActive():
                pool.destroy()  # a dir pool's destroy deactivates; it deletes nothing
            pool.undefine()
        except libvirt.libvirtError as e:
            err = self._err(e)
            if e.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
                raise err from None

    def _refresh_pools_covering(self, directories: set[str]) -> None:
        """Refresh every active pool whose target is one of ``directories`` so that new files
        appear as volumes. Best effort: the files exist whatever the pool says."""
        if not directories or self._conn is None:
            return
        wanted = {os.path.realpath(d) for d in directories}
        try:
            pools = self._c().listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
            for pool in pools:
                target = self._pool_target(pool)
                if target and os.path.realpath(target) in wanted:
                    pool.refresh(0)
        except libvirt.libvirtError as e:
            log.warning("cannot refresh storage pools on %s: %s", self.uri, e.get_error_message())

    def _state_of(self, dom: libvirt.virDomain) -> DomainState:
        try:
            info = dom.info()  # [state, maxMem KiB, mem KiB, vcpus, cpuTime ns]
            if dom.isActive():
                power = _ON
            elif dom.hasManagedSaveImage(0):
                power = _SUSPENDED
            else:
                power = _OFF
            return DomainState(uuid=dom.UUIDString(), name=dom.name(), power_state=power,
                               vcpus=info[3], memory_mib=info[1] // 1024, cpu_time_ns=info[4])
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
            live = ET.fromstring(dom.XMLDesc(0))
        except libvirt.libvirtError as e:
            raise self._err(e) from None
        for ch in live.findall("devices/channel[@type='unix']"):
            target = ch.find("target")
            if target is not None and target.get("name") == HEARTBEAT_CHANNEL:
                src = ch.find("source")
                return src.get("path") if src is not None else None
        return None

    # --- disks --------------------------------------------------------------------------
    def create_disks(self, spec: VmSpec) -> list[str]:
        paths = []
        created: set[str] = set()
        for d in spec.disks:
            path = disk_path(d.datastore_path, d.file)
            paths.append(path)
            if os.path.exists(path):
                continue
            if not os.path.isdir(d.datastore_path):
                raise DriverError("DATASTORE_ABSENT", f"datastore directory {d.datastore_path} does not exist")
            # Create under a temporary name and rename: a crash mid-way must not leave a
            # half-made file that the next (redelivered) create would skip.
            tmp = f"{path}.creating-{os.getpid()}-{threading.get_ident()}"
            r = subprocess.run(["qemu-img", "create", "-q", "-f", d.format, tmp, f"{d.capacity_mib}M"],
                               capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
                raise DriverError("DISK_CREATE_FAILED", f"{path}: {r.stderr.strip()}")
            os.rename(tmp, path)
            created.add(d.datastore_path)
        self._refresh_pools_covering(created)
        return paths

    # --- lifecycle ----------------------------------------------------------------------
    def define(self, spec: VmSpec) -> DomainState:
        dom = self._lookup(spec.uuid)
        if dom is not None:
            state = self._state_of(dom)
            if state.name != spec.name:
                raise DriverError("VM_UUID_CONFLICT",
                                  f"UUID {spec.uuid} is already defined as {state.name!r}")
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
                raise DriverError("GUEST_SHUTDOWN_TIMEOUT",
                                  f"guest of {uuid} still running after {timeout:g}s")
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
                flags = (libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                         | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                         | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
                         | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
                try:
                    dom.undefineFlags(flags)
                except libvirt.libvirtError as e:
                    # Drivers without checkpoints/NVRAM support reject those flags.
                    if e.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT and \
                            e.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
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

    # --- live migration (VMotion) -----------------------------------------------------------
    # Facts measured with libvirt 9.0 / QEMU 7.2 on the lab: see tests/integration/
    # test_libvirt_migration.py and the notes at the top of the migration helpers below.
    _POLL = 0.3

    def _open_peer(self, uri: str) -> "LibvirtDriver":
        """A connection of our own to another host (the migration target), bounded in time."""
        peer = LibvirtDriver(uri, connect_timeout=self.connect_timeout, domain_type=self.domain_type)
        try:
            peer.connect()
        except ConnectionLost as e:
            raise DriverError("HOST_UNREACHABLE", f"migration target {uri}: {e.message}") from None
        return peer

    def domain_state_on(self, uri: str, uuid: str) -> DomainState | None:
        """The domain's state on another host (None when not defined there); HOST_UNREACHABLE
        when that host does not answer."""
        peer = self._open_peer(uri)
        try:
            return peer.domain_state(uuid)
        finally:
            peer.close()

    def migrate(self, uuid: str, options: MigrationOptions,
                on_progress: Callable[[MigrationProgress], None] | None = None,
                cancel: threading.Event | None = None) -> MigrationProgress:
        """Live-migrate a running domain to ``options.dest_uri``, peer to peer, persistent there
        and undefined here; returns the completed job's stats (downtime, total time).

        Blocks until done, calling ``on_progress`` about every 0.3 s with libvirt's job stats.
        ``cancel`` set: the job is aborted, the domain is made sure to run here, and
        DriverError('MIGRATION_CANCELLED') is raised (a cancel that comes after libvirt finished
        is too late: the result is then success). Idempotent for a redelivered command: a
        domain absent here and running on the target is success with ``already_done``; a
        definition left here while the target runs it is undefined (what UNDEFINE_SOURCE
        would have done); a migration of this domain already in progress (started by an
        earlier delivery; libvirtd drives peer-to-peer migrations itself) is followed, not
        started again.

        Codes: VM_NOT_FOUND, VM_NOT_RUNNING, HOST_UNREACHABLE (the target, from here or from
        the source daemon), MIGRATION_CANCELLED, MIGRATION_FAILED (libvirt's message),
        HYPERVISOR_UNREACHABLE (this host)."""
        uuid = validate_uuid(uuid)
        cancel = cancel or threading.Event()
        peer = self._open_peer(options.dest_uri)
        try:
            followed = False
            while True:
                done = self._migration_already_done(uuid, peer)
                if done is not None:
                    if on_progress:
                        self._safe_progress(on_progress, done)
                    return done
                dom = self._get(uuid)
                if not followed and self._active_job_operation(dom) == libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT:
                    followed = True
                    log.info("migration of %s already in progress: following it", uuid)
                    self._follow_job(dom, on_progress, cancel)
                    continue  # re-evaluate where the domain is now
                return self._migrate_once(dom, uuid, options, peer, on_progress, cancel)
        finally:
            peer.close()

    def _migration_already_done(self, uuid: str, peer: "LibvirtDriver") -> MigrationProgress | None:
        """Success without migrating when the target already runs the domain; raises
        VM_NOT_FOUND / VM_NOT_RUNNING when there is nothing to migrate; None: go ahead."""
        dom = self._lookup(uuid)
        remote = peer._lookup(uuid)
        try:
            remote_running = False
            if remote is not None and remote.isActive():
                # An incoming migration's domain is paused (migration) until it completes.
                st, reason = remote.state()
                remote_running = not (st == libvirt.VIR_DOMAIN_PAUSED
                                      and reason == libvirt.VIR_DOMAIN_PAUSED_MIGRATION)
            local_active = dom is not None and dom.isActive()
        except libvirt.libvirtError as e:
            raise self._err(e) from None
        if local_active:
            return None
        if remote_running:
            if dom is not None:
                # Migrated, but the source definition outlived UNDEFINE_SOURCE (an interrupted
                # confirm phase): finish its job. Disks are never touched.
                log.warning("domain %s runs on %s and is still defined here: undefining it", uuid, peer.uri)
                self.undefine(uuid, [])
            progress = self._completed_from(remote) or MigrationProgress(phase="completed")
            return progress.model_copy(update={"already_done": True})
        if dom is None:
            raise DriverError("VM_NOT_FOUND", f"no domain with UUID {uuid} here or on {peer.uri}")
        raise DriverError("VM_NOT_RUNNING", f"domain {uuid} is not running: live migration needs a running VM")

    @staticmethod
    def _active_job_operation(dom: libvirt.virDomain) -> int | None:
        try:
            stats = dom.jobStats(0)
        except libvirt.libvirtError:
            return None
        if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) in (libvirt.VIR_DOMAIN_JOB_BOUNDED,
                                                             libvirt.VIR_DOMAIN_JOB_UNBOUNDED):
            return stats.get("operation", libvirt.VIR_DOMAIN_JOB_OPERATION_UNKNOWN)
        return None

    @staticmethod
    def _safe_progress(cb: Callable[[MigrationProgress], None], p: MigrationProgress) -> None:
        try:
            cb(p)
        except Exception:  # a subscriber's bug never breaks the job
            log.exception("progress callback failed")

    def _follow_job(self, dom: libvirt.virDomain, on_progress, cancel: threading.Event) -> None:
        aborted = False
        while self._active_job_operation(dom) is not None:
            if cancel.is_set() and not aborted:
                aborted = True
                try:
                    dom.abortJob()
                except libvirt.libvirtError as e:
                    log.warning("abortJob of followed job: %s", e.get_error_message())
            p = self.job_progress(dom.UUIDString())
            if p is not None and on_progress:
                self._safe_progress(on_progress, p)
            time.sleep(self._POLL)
        if aborted:
            self._ensure_running_here(dom)
            raise DriverError("MIGRATION_CANCELLED", "migration cancelled; the VM runs on the source")

    def _migrate_once(self, dom: libvirt.virDomain, uuid: str, options: MigrationOptions,
                      peer: "LibvirtDriver", on_progress, cancel: threading.Event) -> MigrationProgress:
        flags = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST
                 | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE | libvirt.VIR_MIGRATE_ABORT_ON_ERROR)
        if options.unsafe:
            flags |= libvirt.VIR_MIGRATE_UNSAFE
        if options.copy_storage:
            flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
        if options.tls:
            flags |= libvirt.VIR_MIGRATE_TLS
        if options.auto_converge:
            flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
        if options.postcopy:
            flags |= libvirt.VIR_MIGRATE_POSTCOPY
        params: dict[str, object] = {}
        if options.dest_address:
            addr = options.dest_address
            params[libvirt.VIR_MIGRATE_PARAM_URI] = addr if "://" in addr else f"tcp://{addr}"
        if options.bandwidth_mibps:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(options.bandwidth_mibps)
        if options.copy_storage and options.copy_disks is not None:
            params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = list(options.copy_disks)
        if options.copy_storage and options.dest_disk_paths:
            params[libvirt.VIR_MIGRATE_PARAM_DEST_XML], params[libvirt.VIR_MIGRATE_PARAM_PERSIST_XML] = \
                self._relocated_xmls(dom, options.dest_disk_paths)
        downtime_pending = False
        if options.max_downtime_ms:
            try:
                dom.migrateSetMaxDowntime(int(options.max_downtime_ms), 0)
            except libvirt.libvirtError as e:
                if not self.is_alive():
                    raise self._err(e) from None
                downtime_pending = True  # older daemons: only while the job runs
        temp_pools = self._precreate_pools(dom, peer, options) if options.copy_storage else []

        completed: dict[str, object] = {}
        completed_evt = threading.Event()

        def on_job_completed(_conn, _dom, stats, _opaque) -> None:
            completed.update(stats)
            completed_evt.set()

        event_id = None
        try:
            event_id = self._c().domainEventRegisterAny(dom, libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED,
                                                        on_job_completed, None)
        except libvirt.libvirtError as e:
            log.warning("no job-completed events on %s: %s", self.uri, e.get_error_message())

        outcome: dict[str, object] = {}

        def run() -> None:
            try:
                dom.migrateToURI3(options.dest_uri, params, flags)
            except libvirt.libvirtError as e:
                outcome["error"] = e
            except Exception as e:  # noqa: BLE001 - reported below
                outcome["error"] = e

        worker = threading.Thread(target=run, name=f"migrate-{uuid[:8]}", daemon=True)
        t0 = time.monotonic()
        worker.start()
        aborted = False
        postcopy_started = False
        try:
            while worker.is_alive():
                worker.join(self._POLL)
                if not worker.is_alive():
                    break
                if cancel.is_set() and not aborted:
                    aborted = True
                    try:
                        dom.abortJob()
                    except libvirt.libvirtError as e:
                        # Too late (finished meanwhile) or post-copy (cannot be aborted).
                        log.warning("abortJob of %s: %s", uuid, e.get_error_message())
                    continue
                try:
                    stats = dom.jobStats(0)
                except libvirt.libvirtError:
                    continue  # the domain vanished at the very end, or a transient error
                if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) not in (libvirt.VIR_DOMAIN_JOB_BOUNDED,
                                                                         libvirt.VIR_DOMAIN_JOB_UNBOUNDED):
                    continue  # not started yet, or ended (an aborted job reads all zeros)
                if downtime_pending:
                    try:
                        dom.migrateSetMaxDowntime(int(options.max_downtime_ms or 0), 0)
                        downtime_pending = False
                    except libvirt.libvirtError:
                        pass
                if (options.postcopy and not postcopy_started and not aborted
                        and stats.get("memory_iteration", 0) >= options.postcopy_after_iterations):
                    try:
                        dom.migrateStartPostCopy(0)
                        postcopy_started = True
                        log.info("migration of %s switched to post-copy", uuid)
                    except libvirt.libvirtError as e:
                        log.warning("post-copy switch of %s refused: %s", uuid, e.get_error_message())
                        postcopy_started = True  # do not retry every poll
                if on_progress:
                    self._safe_progress(on_progress, _progress_from_stats(stats, postcopy_started))
        finally:
            if event_id is not None:
                try:
                    # Give the event a moment: it is sent before the API call returns, but
                    # delivered by the event loop thread.
                    if "error" not in outcome and not worker.is_alive():
                        completed_evt.wait(0.25)
                    self._c().domainEventDeregisterAny(event_id)
                except (libvirt.libvirtError, ConnectionLost):
                    pass
            for pool in temp_pools:
                try:
                    pool.destroy()
                except libvirt.libvirtError:
                    pass
        elapsed_ms = int((time.monotonic() - t0) * 1000)

        err = outcome.get("error")
        if err is not None:
            return self._migration_failed(dom, uuid, peer, err, aborted or cancel.is_set())
        result = None
        log.debug("migration of %s: job-completed event %s; libvirt call %.2fs", uuid,
                  "received" if completed else "missing", time.monotonic() - t0)
        if completed:
            result = _progress_from_stats(completed, postcopy_started, completed=True)
        if result is None or result.downtime_ms is None:
            remote = peer._lookup(uuid)
            result = (self._completed_from(remote) if remote is not None else None) or result
        if result is None:
            result = MigrationProgress(phase="completed", elapsed_ms=elapsed_ms)
        if on_progress:
            self._safe_progress(on_progress, result)
        return result

    def _relocated_xmls(self, dom: libvirt.virDomain, paths: dict[str, str]) -> tuple[str, str]:
        """The destination (live) and persistent XML of a copy-storage migration whose copied
        disks land on other paths on the target: the domain's own definitions with the source
        of each disk in ``paths`` (target dev -> new file) replaced."""
        def rewrite(xml: str) -> str:
            root = ET.fromstring(xml)
            found = set()
            for disk in root.findall("devices/disk"):
                target, src = disk.find("target"), disk.find("source")
                dev = target.get("dev") if target is not None else None
                if dev in paths:
                    if src is None or disk.get("type") != "file":
                        raise DriverError("MIGRATION_FAILED", f"disk {dev} is not a file: it cannot be relocated")
                    src.set("file", paths[dev])
                    found.add(dev)
            missing = set(paths) - found
            if missing:
                raise DriverError("DISK_NOT_FOUND", f"the domain has no disk {', '.join(sorted(missing))}")
            return ET.tostring(root, encoding="unicode")
        try:
            live = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_MIGRATABLE)
            persistent = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_MIGRATABLE
                                     | libvirt.VIR_DOMAIN_XML_INACTIVE)
        except libvirt.libvirtError as e:
            raise self._err(e) from None
        return rewrite(live), rewrite(persistent)

    def _precreate_pools(self, dom: libvirt.virDomain, peer: "LibvirtDriver",
                         options: MigrationOptions) -> list[libvirt.virStoragePool]:
        """Copy-storage migration: libvirt on the target creates a missing disk image only when
        an active storage pool covers its directory. For each copied disk's directory without
        one, start a transient dir pool there (destroyed after the migration; files stay)."""
        try:
            live = ET.fromstring(dom.XMLDesc(0))
        except libvirt.libvirtError as e:
            raise self._err(e) from None
        dirs = set()
        for disk in live.findall("devices/disk[@device='disk']"):
            target = disk.find("target")
            src = disk.find("source")
            if target is None or src is None or src.get("file") is None:
                continue
            if options.copy_disks is not None and target.get("dev") not in options.copy_disks:
                continue
            dest = (options.dest_disk_paths or {}).get(target.get("dev")) or src.get("file")
            dirs.add(os.path.dirname(dest))
        created = []
        try:
            pools = peer._c().listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
            covered = {os.path.normpath(self._pool_target(p) or "") for p in pools}
            for d in sorted(dirs - covered):
                root = ET.Element("pool", {"type": "dir"})
                ET.SubElement(root, "name").text = f"vc-migrate-{uuidlib.uuid4().hex[:12]}"
                ET.SubElement(ET.SubElement(root, "target"), "path").text = d
                try:
                    created.append(peer._c().storagePoolCreateXML(ET.tostring(root, encoding="unicode"), 0))
                except libvirt.libvirtError as e:
                    # No such directory there: the migration will say so with libvirt's words.
                    log.warning("no transient pool on %s for %s: %s", peer.uri, d, e.get_error_message())
        except libvirt.libvirtError as e:
            raise peer._err(e) from None
        return created

    def _ensure_running_here(self, dom: libvirt.virDomain, timeout: float = 15) -> None:
        """After an aborted or failed migration: the domain must run here (libvirt resumes a
        source it paused; we resume it if it stays paused by the migration)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if not dom.isActive():
                    return  # gone: the caller decides what that means
                state, reason = dom.state()
                if state == libvirt.VIR_DOMAIN_RUNNING:
                    return
                if state == libvirt.VIR_DOMAIN_PAUSED and self._active_job_operation(dom) is None \
                        and reason in (libvirt.VIR_DOMAIN_PAUSED_MIGRATION, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED):
                    dom.resume()
            except libvirt.libvirtError as e:
                if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return
                if time.monotonic() > deadline:
                    raise self._err(e) from None
            if time.monotonic() > deadline:
                raise DriverError("MIGRATION_FAILED", "the VM did not resume on the source after the migration ended")
            time.sleep(0.1)

    _UNREACHABLE_HINTS = ("unable to connect to server", "connection refused", "no route to host",
                          "cannot recv data", "connection reset", "end of file while reading data",
                          "network is unreachable", "timed out")

    def _migration_failed(self, dom: libvirt.virDomain, uuid: str, peer: "LibvirtDriver",
                          err: object, cancelled: bool) -> MigrationProgress:
        if isinstance(err, libvirt.libvirtError) and not self.is_alive():
            raise self._err(err)
        msg = err.get_error_message() if isinstance(err, libvirt.libvirtError) else str(err)
        msg = msg or str(err)
        # Where is the VM now? Exactly one host must run it.
        local = self._lookup(uuid)
        try:
            remote = peer._lookup(uuid)
            remote_running = remote is not None and remote.isActive() and \
                remote.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        except (libvirt.libvirtError, DriverError):
            remote, remote_running = None, False
        local_active = False
        try:
            local_active = local is not None and local.isActive()
        except libvirt.libvirtError:
            pass
        if not local_active and remote_running:
            # libvirt finished the move and failed afterwards (e.g. the confirm phase): the VM
            # is on the target, which is what was asked.
            log.warning("migration of %s reported %r but the VM runs on the target", uuid, msg)
            if local is not None:
                self.undefine(uuid, [])
            return (self._completed_from(remote) or MigrationProgress(phase="completed"))
        if local is not None and local_active:
            self._ensure_running_here(local)
        if cancelled:
            raise DriverError("MIGRATION_CANCELLED", f"migration cancelled; the VM runs on the source ({msg})")
        low = msg.lower()
        if any(h in low for h in self._UNREACHABLE_HINTS) and "migration" not in low.split(":")[0]:
            raise DriverError("HOST_UNREACHABLE", f"migration target {peer.uri}: {msg}")
        code = err.get_error_code() if isinstance(err, libvirt.libvirtError) else None
        if code == libvirt.VIR_ERR_OPERATION_INVALID and "not running" in low:
            raise DriverError("VM_NOT_RUNNING", msg)
        raise DriverError("MIGRATION_FAILED", msg)

    def _completed_from(self, dom: libvirt.virDomain | None) -> MigrationProgress | None:
        """Completed-job stats kept by libvirt for ``dom`` (a migrated domain on the target
        keeps them), or None."""
        if dom is None:
            return None
        try:
            stats = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        except libvirt.libvirtError:
            return None
        if stats.get("type") != libvirt.VIR_DOMAIN_JOB_COMPLETED:
            return None
        return _progress_from_stats(stats, False, completed=True)

    def job_progress(self, uuid: str) -> MigrationProgress | None:
        """The domain's running job (migration, ...) or, failing that, the first running block
        copy of its disks; None when nothing runs."""
        dom = self._get(uuid)
        try:
            stats = dom.jobStats(0)
        except libvirt.libvirtError as e:
            raise self._err(e) from None
        if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) not in (libvirt.VIR_DOMAIN_JOB_NONE,
                                                                 libvirt.VIR_DOMAIN_JOB_COMPLETED):
            postcopy = False
            try:
                postcopy = dom.state()[1] == libvirt.VIR_DOMAIN_RUNNING_POSTCOPY
            except libvirt.libvirtError:
                pass
            return _progress_from_stats(stats, postcopy)
        for target, _src, mirror in self._disks_of(dom):
            if mirror is not None:
                p = self._block_progress(dom, target, mirror.get("ready") == "yes")
                if p is not None:
                    return p
        return None

    def abort_job(self, uuid: str) -> bool:
        """Abort the domain's running job (a migration goes on running here), else every block
        copy of its disks without pivot (the disks stay where they were). True when something
        was aborted; idempotent."""
        dom = self._get(uuid)
        if self._active_job_operation(dom) is not None:
            try:
                dom.abortJob()
                return True
            except libvirt.libvirtError as e:
                if e.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:  # no job (finished)
                    raise self._err(e) from None
        aborted = False
        for target, _src, mirror in self._disks_of(dom):
            if mirror is None:
                continue
            try:
                dom.blockJobAbort(target, 0)
                aborted = True
            except libvirt.libvirtError as e:
                if e.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
                    raise self._err(e) from None
        return aborted

    # --- Storage VMotion -----------------------------------------------------------------
    def _disks_of(self, dom: libvirt.virDomain, flags: int = 0) -> list[tuple[str, str | None, ET.Element | None]]:
        """(target dev, source file, <mirror> element or None) of every file disk."""
        try:
            root = ET.fromstring(dom.XMLDesc(flags))
        except libvirt.libvirtError as e:
            raise self._err(e) from None
        out = []
        for disk in root.findall("devices/disk"):
            target = disk.find("target")
            if target is None or disk.get("device", "disk") != "disk":
                continue
            src = disk.find("source")
            out.append((target.get("dev"), src.get("file") if src is not None else None, disk.find("mirror")))
        return out

    def _disk_of(self, dom: libvirt.virDomain, disk_target: str, flags: int = 0) -> tuple[str | None, ET.Element | None, str | None]:
        """(source file, <mirror>, driver format) of one disk; DISK_NOT_FOUND otherwise."""
        try:
            root = ET.fromstring(dom.XMLDesc(flags))
        except libvirt.libvirtError as e:
            raise self._err(e) from None
        for disk in root.findall("devices/disk"):
            target = disk.find("target")
            if target is not None and target.get("dev") == disk_target:
                src = disk.find("source")
                drv = disk.find("driver")
                return (src.get("file") if src is not None else None, disk.find("mirror"),
                        drv.get("type") if drv is not None else None)
        raise DriverError("DISK_NOT_FOUND", f"domain {dom.UUIDString()} has no disk {disk_target}")

    def _block_progress(self, dom: libvirt.virDomain, disk_target: str, ready: bool) -> MigrationProgress | None:
        try:
            info = dom.blockJobInfo(disk_target, 0)
        except libvirt.libvirtError as e:
            raise self._err(e) from None
        if not info:
            return None
        cur, end = int(info.get("cur", 0)), int(info.get("end", 0))
        return MigrationProgress(phase="ready" if ready and cur == end else "copying",
                                 data_total=end, data_processed=cur, data_remaining=max(0, end - cur),
                                 disk_total=end, disk_processed=cur, disk_remaining=max(0, end - cur))

    def _persist_disk_path(self, dom: libvirt.virDomain, disk_target: str, dest_path: str,
                           dest_format: str, flatten: bool) -> None:
        """Make the persistent definition's disk point at ``dest_path`` (redefined with its own
        UUID: libvirt refuses a redefinition of a known name without it)."""
        try:
            if not dom.isPersistent():
                return
            root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE))
        except libvirt.libvirtError as e:
            raise self._err(e) from None
        for disk in root.findall("devices/disk"):
            target = disk.find("target")
            if target is None or target.get("dev") != disk_target:
                continue
            src = disk.find("source")
            drv = disk.find("driver")
            if src is None:
                src = ET.SubElement(disk, "source")
            if src.get("file") == dest_path and (drv is None or drv.get("type") == dest_format):
                return
            src.set("file", dest_path)
            if drv is None:
                drv = ET.SubElement(disk, "driver", {"name": "qemu"})
            drv.set("type", dest_format)
            if flatten:
                for bs in disk.findall("backingStore"):
                    disk.remove(bs)
            break
        else:
            raise DriverError("DISK_NOT_FOUND", f"the persistent definition has no disk {disk_target}")
        try:
            self._c().defineXML(ET.tostring(root, encoding="unicode"))
        except libvirt.libvirtError as e:
            raise self._err(e) from None

    def move_disk(self, uuid: str, disk_target: str, dest_path: str, dest_format: str,
                  on_progress: Callable[[MigrationProgress], None] | None = None,
                  cancel: threading.Event | None = None, *, shallow: bool = False,
                  bandwidth_mibps: int | None = None, reuse_existing: bool | None = None) -> None:
        """Storage VMotion of one disk of a running domain on this host: block copy to
        ``dest_path`` while the guest runs, pivot, then the persistent definition points there.
        The old file is never deleted (the caller removes it after success).
        Unless the move is shallow, capped (``bandwidth_mibps``), the disk has a checkpoint or
        the destination exists, the copy goes through a frozen base at ``qemu-img convert``
        speed instead of a mirror (storagemove.py); guarantees, progress and cancel are the same.

        The destination image is created by libvirt (full size, ``dest_format``) unless it
        exists (``reuse_existing`` None: decided by whether the path exists as this process
        sees it), then it is reused as is (VIR_DOMAIN_BLOCK_COPY_REUSE_EXT; same virtual size).
        ``shallow`` keeps the backing chain (linked clones) instead of flattening it.
        ``cancel`` set: the copy is aborted without pivot (the guest stays on the old disk) and
        DriverError('MIGRATION_CANCELLED') is raised; a partial destination file may remain.
        Idempotent: a disk already on ``dest_path`` only gets its definition fixed; a copy to
        ``dest_path`` already running (an earlier delivery) is followed.
        Codes: VM_NOT_FOUND, VM_NOT_RUNNING, DISK_NOT_FOUND, DISK_BUSY (another block job),
        INVALID_SPEC, DISK_MOVE_FAILED, MIGRATION_CANCELLED."""
        validate_abs_path(dest_path, "destination path")
        if dest_format not in ("qcow2", "raw"):
            raise DriverError("INVALID_SPEC", f"disk format {dest_format!r} must be qcow2 or raw")
        cancel = cancel or threading.Event()
        dom = self._get(uuid)
        try:
            if not dom.isActive():
                raise DriverError("VM_NOT_RUNNING", f"domain {uuid} is not running: use move_disk_offline")
        except libvirt.libvirtError as e:
            raise self._err(e) from None
        src, mirror, _fmt = self._disk_of(dom, disk_target)
        if src == dest_path and mirror is None:
            self._persist_disk_path(dom, disk_target, dest_path, dest_format, flatten=not shallow)
            return
        # At qemu-img speed through a frozen base (storagemove.py) when it applies; the block
        # copy below otherwise (shallow moves, checkpoints, an existing destination).
        if (mirror is None or (src or "").endswith(MOVE_SUFFIX)) and reuse_existing is not True \
                and self._frozen_move_possible(uuid, src, dest_path, shallow, bandwidth_mibps):
            self._move_disk_frozen(uuid, disk_target, dest_path, dest_format, on_progress, cancel)
            return
        if mirror is not None:
            msrc = mirror.find("source")
            mfile = mirror.get("file") or (msrc.get("file") if msrc is not None else None)
            if mfile != dest_path:
                raise DriverError("DISK_BUSY", f"disk {disk_target} is being copied to {mfile}")
            log.info("block copy of %s %s to %s already running: following it", uuid, disk_target, dest_path)
        else:
            try:
                if dom.blockJobInfo(disk_target, 0):
                    raise DriverError("DISK_BUSY", f"disk {disk_target} has a block job running")
            except libvirt.libvirtError as e:
                raise self._err(e) from None
            reuse = os.path.exists(dest_path) if reuse_existing is None else reuse_existing
            disk = ET.Element("disk", {"type": "file", "device": "disk"})
            ET.SubElement(disk, "driver", {"name": "qemu", "type": dest_format})
            ET.SubElement(disk, "source", {"file": dest_path})
            flags = libvirt.VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB
            if reuse:
                flags |= libvirt.VIR_DOMAIN_BLOCK_COPY_REUSE_EXT
            if shallow:
                flags |= libvirt.VIR_DOMAIN_BLOCK_COPY_SHALLOW
            params = {}
            if bandwidth_mibps:
                params[libvirt.VIR_DOMAIN_BLOCK_COPY_BANDWIDTH] = int(bandwidth_mibps) << 20
            try:
                dom.blockCopy(disk_target, ET.tostring(disk, encoding="unicode"), params, flags)
            except libvirt.libvirtError as e:
                err = self._err(e)
                if isinstance(err, ConnectionLost):
                    raise err from None
                raise DriverError("DISK_MOVE_FAILED", f"block copy of {disk_target} to {dest_path}: "
                                                      f"{e.get_error_message()}") from None
        # Copy, wait until the mirror is ready (in sync), then pivot.
        while True:
            if cancel.is_set():
                self._cancel_block_copy(dom, disk_target, src)
                raise DriverError("MIGRATION_CANCELLED", f"disk move of {disk_target} cancelled; "
                                                         f"the VM stays on {src}")
            cur_src, mirror, _ = self._disk_of(dom, disk_target)
            ready = mirror is not None and mirror.get("ready") == "yes"
            p = self._block_progress(dom, disk_target, ready)
            if p is None:
                if cur_src == dest_path:  # pivoted by someone else: done
                    break
                raise DriverError("DISK_MOVE_FAILED", f"the block copy of {disk_target} to {dest_path} "
                                                      f"ended without pivot; the VM stays on {cur_src}")
            if on_progress:
                self._safe_progress(on_progress, p)
            if p.phase == "ready":
                try:
                    dom.blockJobAbort(disk_target, libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)
                    break
                except libvirt.libvirtError as e:
                    if not self.is_alive():
                        raise self._err(e) from None
                    # "not ready for pivot yet": the guest wrote meanwhile; try again.
                    log.info("pivot of %s %s deferred: %s", uuid, disk_target, e.get_error_message())
            time.sleep(self._POLL)
        cur_src, _, _ = self._disk_of(dom, disk_target)
        if cur_src != dest_path:
            raise DriverError("DISK_MOVE_FAILED", f"pivot of {disk_target} left the VM on {cur_src}")
        self._persist_disk_path(dom, disk_target, dest_path, dest_format, flatten=not shallow)
        if on_progress:
            end = p.data_total if p is not None else None
            self._safe_progress(on_progress, MigrationProgress(phase="completed", data_total=end,
                                                               data_processed=end, data_remaining=0))

    def _cancel_block_copy(self, dom: libvirt.virDomain, disk_target: str, src: str | None) -> None:
        try:
            dom.blockJobAbort(disk_target, 0)
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:  # no job any more
                raise self._err(e) from None
        deadline = time.monotonic() + 30
        while True:
            try:
                if not dom.blockJobInfo(disk_target, 0):
                    break
            except libvirt.libvirtError as e:
                raise self._err(e) from None
            if time.monotonic() > deadline:
                raise DriverError("DISK_MOVE_FAILED", f"the block copy of {disk_target} does not end")
            time.sleep(0.1)
        cur, _, _ = self._disk_of(dom, disk_target)
        if cur != src:
            raise DriverError("DISK_MOVE_FAILED", f"after cancel the VM is on {cur}, not {src}")

    def move_disk_offline(self, uuid: str, disk_target: str, dest_path: str, dest_format: str) -> None:
        """Move one disk of a powered-off domain: ``qemu-img convert`` (flattening a backing
        chain) to a temporary name, rename, redefine. Runs in this process, so the agent must
        see the datastores as libvirtd does (it runs inside its host). The old file stays.
        Idempotent: a definition already on ``dest_path`` is a no-op; an existing destination
        identical to the source (``qemu-img compare``) is taken as an earlier copy.
        Codes: VM_NOT_FOUND, VM_POWERED_ON, VM_SUSPENDED, DISK_NOT_FOUND, DISK_EXISTS,
        DISK_MOVE_FAILED."""
        validate_abs_path(dest_path, "destination path")
        if dest_format not in ("qcow2", "raw"):
            raise DriverError("INVALID_SPEC", f"disk format {dest_format!r} must be qcow2 or raw")
        dom = self._get(uuid)
        try:
            if dom.isActive():
                raise DriverError("VM_POWERED_ON", f"domain {uuid} is running: use move_disk")
            if dom.hasManagedSaveImage(0):
                raise DriverError("VM_SUSPENDED", f"domain {uuid} is suspended (its saved state names the old disk)")
        except libvirt.libvirtError as e:
            raise self._err(e) from None
        src, _mirror, src_fmt = self._disk_of(dom, disk_target, libvirt.VIR_DOMAIN_XML_INACTIVE)
        if src == dest_path:
            return
        if src is None or not os.path.exists(src):
            raise DriverError("DISK_NOT_FOUND", f"disk {disk_target} source {src} does not exist here")
        src_fmt = src_fmt or "raw"
        if os.path.exists(dest_path):
            r = subprocess.run(["qemu-img", "compare", "-q", "-f", src_fmt, "-F", dest_format, src, dest_path],
                               capture_output=True, text=True, timeout=3600)
            if r.returncode != 0:
                raise DriverError("DISK_EXISTS", f"{dest_path} exists and differs from {src}")
        else:
            if not os.path.isdir(os.path.dirname(dest_path)):
                raise DriverError("DATASTORE_ABSENT", f"directory {os.path.dirname(dest_path)} does not exist")
            tmp = f"{dest_path}.moving-{os.getpid()}-{threading.get_ident()}"
            r = subprocess.run(["qemu-img", "convert", "-f", src_fmt, "-O", dest_format, src, tmp],
                               capture_output=True, text=True, timeout=24 * 3600)
            if r.returncode != 0:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
                raise DriverError("DISK_MOVE_FAILED", f"qemu-img convert {src} -> {dest_path}: {r.stderr.strip()}")
            os.rename(tmp, dest_path)
        self._persist_disk_path(dom, disk_target, dest_path, dest_format, flatten=True)
        self._refresh_pools_covering({os.path.dirname(dest_path)})


def _ms(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


def _progress_from_stats(stats: dict, postcopy: bool, completed: bool = False) -> MigrationProgress:
    """A MigrationProgress of libvirt's job stats (virDomainGetJobStats typed parameters)."""
    kind = stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE)
    if completed or kind == libvirt.VIR_DOMAIN_JOB_COMPLETED:
        phase = "completed"
    elif kind == libvirt.VIR_DOMAIN_JOB_FAILED:
        phase = "failed"
    elif kind == libvirt.VIR_DOMAIN_JOB_CANCELLED:
        phase = "cancelled"
    elif postcopy:
        phase = "postcopy"
    elif stats.get("memory_iteration", 0) or stats.get("data_processed", 0):
        phase = "precopy"
    else:
        phase = "setup"
    page = stats.get("memory_page_size", 4096)
    constant = stats.get("memory_constant")
    return MigrationProgress(
        phase=phase,
        data_total=stats.get("data_total"), data_processed=stats.get("data_processed"),
        data_remaining=stats.get("data_remaining"),
        memory_total=stats.get("memory_total"), memory_processed=stats.get("memory_processed"),
        memory_remaining=stats.get("memory_remaining"),
        memory_zero_bytes=None if constant is None else constant * page,
        memory_bps=stats.get("memory_bps"),
        disk_total=stats.get("disk_total"), disk_processed=stats.get("disk_processed"),
        disk_remaining=stats.get("disk_remaining"),
        dirty_rate=stats.get("memory_dirty_rate"), iteration=stats.get("memory_iteration"),
        elapsed_ms=_ms(stats.get("time_elapsed")), downtime_ms=_ms(stats.get("downtime")),
        setup_time_ms=_ms(stats.get("setup_time")),
    )
