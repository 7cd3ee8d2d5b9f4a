"""A lab host's BMC: IPMI-over-LAN on loopback that powers a lab host off and on.

What this module decides:
- :class:`LabBmc` is a ``pyghmi.ipmi.bmc.Bmc`` (IPMI 2.0 / RMCP+, cipher suite 3, one user)
  listening on ``127.0.0.1:<port>``. Real clients talk to it: Debian's
  ``ipmitool -I lanplus`` does (see vcenter.power.drivers.IpmiDriver).
- Chassis control acts on the lab host: power off / soft shutdown = ``LabHost.power_off()``
  (every process of the host killed, a power loss; DPM evacuates the host before), power on =
  ``LabHost.power_on()`` (a fresh libvirtd and the host's boot processes, e.g. its agent).
  Like a real BMC it answers the request at once and does the work afterwards: "chassis power
  status" keeps reporting the old state until the action finished, so a client that asks until
  it sees "on" knows libvirtd answers.
- The BMC uses its own :class:`~vcenter.lab.hosts.Lab` view of the workdir and changes the lab
  under the lab's lock, like vcenter.lab.faults; any process may run it.
- pyghmi keeps its sockets and sessions in module globals, served by one I/O thread; one pump
  thread per process (shared by every LabBmc of the process) runs its event loop.

Run it in a thread (``start()``/``stop()``, or as a context manager) or as a process:
``python -m vcenter.lab.bmc --workdir W --host host1 --port 16230 [--username admin]`` with the
password in ``VCENTER_LAB_BMC_PASSWORD`` (never on the command line).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from pathlib import Path

import pyghmi.ipmi.bmc as ipmibmc
import pyghmi.ipmi.private.session as ipmisession

from vcenter.lab.hosts import Lab

log = logging.getLogger(__name__)

# IPMI completion codes
_OK = 0x00
_BUSY = 0xC0  # node busy: another power action is running
_FAILED = 0xFF  # unspecified error


class _Pump:
    """pyghmi's event loop in one daemon thread per process, while any LabBmc runs."""

    _lock = threading.Lock()
    _users = 0
    _thread: threading.Thread | None = None
    _stop = threading.Event()

    @classmethod
    def acquire(cls) -> None:
        with cls._lock:
            cls._users += 1
            if cls._thread is None or not cls._thread.is_alive():
                cls._stop = threading.Event()
                cls._thread = threading.Thread(target=cls._run, args=(cls._stop,), name="lab-bmc-pump", daemon=True)
                cls._thread.start()

    @classmethod
    def release(cls) -> None:
        with cls._lock:
            cls._users -= 1
            if cls._users <= 0 and cls._thread is not None:
                cls._users = 0
                cls._stop.set()
                cls._thread.join(5)
                cls._thread = None

    @staticmethod
    def _run(stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                ipmisession.Session.wait_for_rsp(timeout=0.2)
            except Exception:  # a malformed packet must not end the BMC
                log.exception("lab BMC: error in the IPMI event loop")
                time.sleep(0.05)


def _ensure_io_socket() -> None:
    """Make pyghmi's I/O thread and its wake-up socket (iosockets[0]) exist before our server
    socket: pyghmi wakes its thread through iosockets[0], which must never be a socket we close."""
    if not ipmisession.iosockets:
        ipmisession.Session._assignsocket()


class LabBmc(ipmibmc.Bmc):
    """The BMC of lab host ``host_name``, on ``address:port`` (UDP), one user."""

    def __init__(self, lab: Lab | str | Path, host_name: str, port: int, username: str = "admin", password: str = "admin", address: str = "127.0.0.1"):
        workdir = lab.workdir if isinstance(lab, Lab) else Path(lab)
        # Our own view: its lock is a separate open file, so it excludes other users of the lab
        # even in this process.
        self.lab = Lab(workdir)
        self.host_name = host_name
        self.lab.host(host_name)  # KeyError now rather than at the first request
        self.address = address
        self._action_lock = threading.Lock()
        self._action: str | None = None  # "on" / "off" while one runs
        self._reported: str | None = None  # the state reported while an action runs
        self.last_error: str | None = None
        self.actions: list[tuple[str, float]] = []  # (action, seconds) done, for tests/benchmarks
        self._running = False
        _ensure_io_socket()
        super().__init__({username: password}, port=port, address=address)

    # --- life cycle -------------------------------------------------------------------------
    def start(self) -> "LabBmc":
        if not self._running:
            self._running = True
            _Pump.acquire()
            log.info("lab BMC of %s listening on %s:%s", self.host_name, self.address, self.port)
        return self

    def stop(self) -> None:
        """Stop answering and free the port (waits for a running power action)."""
        if self._running:
            self._running = False
            _Pump.release()
        sock = self.serversocket
        ipmisession.Session.bmc_handlers.pop(sock, None)
        for addr, handlers in list(ipmisession.Session.bmc_handlers.items()):
            for key, handler in list(handlers.items()):
                if handler is not self and getattr(handler, "socket", None) is sock:  # our sessions
                    handler.cleaningup = True
                    del handlers[key]
            if not handlers:
                del ipmisession.Session.bmc_handlers[addr]
        if sock in ipmisession.iosockets:
            ipmisession.iosockets.remove(sock)
            # Let the I/O thread leave a select() that still holds our socket before we close it.
            try:
                wake = ipmisession.iosockets[0]
                wake.sendto(b"\x01", (ipmisession.myself, wake.getsockname()[1]))
            except (OSError, IndexError):
                pass
            time.sleep(0.2)
        try:
            sock.close()
        except OSError:
            pass
        with self._action_lock:  # a power action in flight completes
            pass
        self.lab.host(self.host_name)._reap()

    def __enter__(self) -> "LabBmc":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what the BMC does --------------------------------------------------------------------
    def _powered(self) -> bool:
        # The state file is replaced atomically: read it afresh (another process may have
        # powered the host) without waiting for the lab's lock, which a long change may hold.
        self.lab.state = self.lab._load()
        return self.lab.host(self.host_name).powered

    def get_power_state(self) -> str:
        if self._action is not None and self._reported is not None:
            return self._reported
        return "on" if self._powered() else "off"

    def _start_action(self, want: str) -> int:
        if not self._action_lock.acquire(blocking=False):
            return _OK if self._action == want else _BUSY
        try:
            self._reported = "on" if self._powered() else "off"
            self._action = want
        except Exception as e:
            self._action_lock.release()
            self.last_error = str(e)
            log.exception("lab BMC of %s: cannot read the host's state", self.host_name)
            return _FAILED
        threading.Thread(target=self._do_action, args=(want,), name=f"lab-bmc-{self.host_name}-{want}", daemon=True).start()
        return _OK

    def _do_action(self, want: str) -> None:
        t0 = time.monotonic()
        try:
            with self.lab._locked():
                host = self.lab.host(self.host_name)
                if want == "on":
                    host.power_on()
                else:
                    host.power_off()
            self.last_error = None
            self.actions.append((want, time.monotonic() - t0))
            log.info("lab BMC: %s powered %s in %.2fs", self.host_name, want, time.monotonic() - t0)
        except Exception as e:
            self.last_error = f"power {want}: {e}"
            log.exception("lab BMC of %s: power %s failed", self.host_name, want)
        finally:
            self._action = None
            self._reported = None
            self._action_lock.release()

    def power_on(self) -> int:
        return self._start_action("on")

    def power_off(self) -> int:
        return self._start_action("off")

    def power_shutdown(self) -> int:
        # The lab host has no OS to shut down in order; its guests were evacuated before.
        return self._start_action("off")

    def power_cycle(self) -> int:
        raise NotImplementedError

    def power_reset(self) -> int:
        raise NotImplementedError

    def get_system_guid(self):  # noqa: ANN201 (pyghmi wants a uuid.UUID)
        import uuid

        return uuid.UUID(self.lab.host(self.host_name).host_uuid)

    def cold_reset(self) -> int:
        return _OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vcenter.lab.bmc", description="IPMI-over-LAN BMC of a lab host (password in VCENTER_LAB_BMC_PASSWORD)")
    parser.add_argument("--workdir", default="/run/virtcenter-lab")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=16230)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--username", default="admin")
    args = parser.parse_args(argv)
    password = os.environ.get("VCENTER_LAB_BMC_PASSWORD")
    if not password:
        parser.error("set VCENTER_LAB_BMC_PASSWORD")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    bmc = LabBmc(args.workdir, args.host, args.port, args.username, password, args.address).start()
    try:
        done.wait()
    finally:
        bmc.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
