"""The libvirt host as the driver sees it: the connection, lifecycle events, error codes, and
the host's facts and counters (mixed into LibvirtDriver, vcenter.hypervisor.libvirt.driver).

What this module decides:
- Connection: one libvirt event loop thread per process (libvirt needs it for keepalive and
  events); keepalive 2 s x 3; opening never blocks longer than ``connect_timeout`` (a new
  connection to an unreachable host would hang forever otherwise).
- Error codes: libvirt errors become DriverError codes (VM_NOT_FOUND, ALREADY_POWERED_ON,
  VM_POWERED_ON, ...; LIBVIRT_ERROR otherwise). A failure on a dead connection is always
  ConnectionLost (HYPERVISOR_UNREACHABLE); the agent then calls connect() again.
- Lifecycle events are translated to LifecycleEvent (reason from StopReason) and handed to
  subscribers on a dispatcher thread of their own, so that a slow subscriber never stalls the
  event loop (which would also stall keepalive and drop the connection). Subscriptions live in
  the driver and are re-registered on every new connection.

Facts measured with libvirt 9.0 / QEMU 7.2 (see the integration tests):
- ``virsh destroy`` -> STOPPED/DESTROYED; QEMU killed by SIGKILL -> STOPPED/FAILED;
  managed save -> STOPPED/SAVED; a start from the managed save image -> STARTED/RESTORED.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from urllib.parse import parse_qs, urlparse

import libvirt

from vcenter.domain.states import PowerState, StopReason
from vcenter.hypervisor.base import ConnectionLost, DriverError, LifecycleCallback
from vcenter.hypervisor.libvirt.xml import parse_cpu_xml
from vcenter.messaging.contracts import DomainCounters, HostCounters, HostFacts, LifecycleEvent

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
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "suspended",  # libvirt "paused": QEMU still exists
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
                return attr[len(prefix) :].lower()
    return str(detail)


def translate_event(event: int, detail: int) -> tuple[str, str, str | None]:
    """(event name, reason, power state after) of a libvirt lifecycle event."""
    name = _EVENT_NAMES.get(event, str(event))
    if event == libvirt.VIR_DOMAIN_EVENT_STOPPED:
        reason = _STOPPED_REASONS.get(detail, StopReason.UNKNOWN)
        return name, reason.value, _SUSPENDED if reason == StopReason.SAVED else _OFF
    if event == libvirt.VIR_DOMAIN_EVENT_STARTED:
        return name, "started", _ON
    if event in (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED):
        return name, _detail_name(event, detail), _ON
    # defined/undefined/shutdown(requested)/crashed(guest panic): the event alone does not say.
    return name, _detail_name(event, detail), None


# --- error mapping -----------------------------------------------------------------------

_CONNECTION_ERRORS = {
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_INVALID_CONN,
    libvirt.VIR_ERR_RPC,
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


# --- the host mixin --------------------------------------------------------------------


class HostOps:
    """Mixin of LibvirtDriver: the connection, its events, and what the host reports. Uses the
    state LibvirtDriver.__init__ sets (``uri``, ``connect_timeout``, ``domain_type``,
    ``declared_cpu_xml``, ``_conn``, ``_conn_lock``, ``_callbacks``, ``_event_callback_id``,
    ``_events``, ``_dispatcher``) and ``host_cpu_xml`` / ``_cpu_features`` (cpu.py)."""

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
                socket.create_connection((parsed.hostname, parsed.port or 16509), timeout=self.connect_timeout).close()
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
                self._dispatcher = threading.Thread(target=self._dispatch, name="libvirt-events", daemon=True)
                self._dispatcher.start()
            if self._conn is not None:
                self._register_events()

    def _register_events(self) -> None:
        if not self._callbacks or self._event_callback_id is not None or self._conn is None:
            return
        try:
            self._event_callback_id = self._conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None)
        except libvirt.libvirtError as e:
            raise self._err(e) from None

    def _on_lifecycle(self, _conn, dom, event, detail, _opaque) -> None:
        # Runs on the libvirt event loop thread: translate and hand off, nothing more.
        try:
            name, reason, power = translate_event(event, detail)
            self._events.put(LifecycleEvent(uuid=dom.UUIDString(), name=dom.name(), event=name, reason=reason, power_state=power, at=datetime.now(timezone.utc)))
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
    _DOMAIN_STATS = (
        libvirt.VIR_DOMAIN_STATS_STATE
        | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
        | libvirt.VIR_DOMAIN_STATS_BALLOON
        | libvirt.VIR_DOMAIN_STATS_VCPU
        | libvirt.VIR_DOMAIN_STATS_BLOCK
        | libvirt.VIR_DOMAIN_STATS_INTERFACE
    )

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
