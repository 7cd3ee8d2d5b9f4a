"""Guest heartbeats on this host: one reader per running guest on its heartbeat channel
(virtio-serial). The newest heartbeat of each guest goes into the state reports; commands to
a guest go through the same connection (a channel takes one client at a time).

Vocabulary: age = seconds since the heartbeat was read, on this agent's monotonic clock.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from vcenter.hypervisor.base import DriverError, HypervisorDriver
from workers.agent.bounded import BoundedCalls

log = logging.getLogger(__name__)


class _Guest:
    def __init__(self, uuid: str, channel: Any):
        self.uuid = uuid
        self.channel = channel
        self.lock = threading.Lock()
        self.heartbeat: dict[str, Any] | None = None
        self.read_at = 0.0
        self.closed = False


class GuestWatcher:
    def __init__(self, driver: HypervisorDriver, stop: threading.Event, period: float = 1.0):
        self.driver = driver
        self.stop = stop
        self.period = period
        self._guests: dict[str, _Guest] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        threading.Thread(target=self._loop, name="guest-watcher", daemon=True).start()

    def heartbeat_of(self, uuid: str) -> dict[str, Any] | None:
        guest = self._guests.get(uuid)
        if guest is None or guest.heartbeat is None:
            return None
        keep = ("seq", "uptime", "hostname", "machine_id", "instance_id", "ssh_host_key", "ip", "burn")
        return {**{k: guest.heartbeat.get(k) for k in keep}, "age_s": round(time.monotonic() - guest.read_at, 1)}

    def command(self, uuid: str, line: str, timeout: float) -> dict[str, Any]:
        guest = self._guests.get(uuid) or self._attach(uuid)
        if guest is None:
            raise DriverError("GUEST_CHANNEL_UNAVAILABLE", "the guest has no heartbeat channel, or it is not connected yet")
        with guest.lock:
            try:
                return guest.channel.send(line, timeout=timeout)
            except TimeoutError as exc:
                raise DriverError("GUEST_NOT_ANSWERING", f"no reply to {line.split()[0]!r} within {timeout:.0f} s") from exc
            except ConnectionError as exc:
                self._detach(uuid)
                raise DriverError("GUEST_CHANNEL_CLOSED", str(exc)) from exc

    # --- internals -----------------------------------------------------------------------
    def _loop(self) -> None:
        # A list call into a hung libvirtd may never return: it is abandoned, and the loop goes
        # on (guests started later still get their heartbeat read).
        calls = BoundedCalls("guest-watcher-list")
        while not self.stop.wait(self.period):
            ok, running = calls.call(lambda: {d.uuid for d in self.driver.list_domains() if d.power_state == "poweredOn"}, max(2.0, 2 * self.period))
            if not ok:
                continue
            for uuid in list(self._guests):
                if uuid not in running:
                    self._detach(uuid)
            for uuid in running - set(self._guests):
                self._attach(uuid)

    def _attach(self, uuid: str) -> _Guest | None:
        from vcenter.hypervisor.libvirt.guestchannel import GuestChannel

        path_of = getattr(self.driver, "guest_channel_path", None)
        if path_of is None:
            return None
        try:
            path = path_of(uuid)
            if not path:
                return None
            guest = _Guest(uuid, GuestChannel(path, connect_timeout=1.0))
        except (OSError, DriverError) as exc:
            log.debug("guest %s: channel not available yet (%s)", uuid, exc)
            return None
        with self._lock:
            self._guests[uuid] = guest
        threading.Thread(target=self._read, args=(guest,), name=f"guest-{uuid[:8]}", daemon=True).start()
        log.info("guest %s: heartbeat channel connected", uuid)
        return guest

    def _read(self, guest: _Guest) -> None:
        while not self.stop.is_set() and not guest.closed:
            with guest.lock:
                try:
                    heartbeat: dict[str, Any] | None = guest.channel.read_heartbeat(timeout=0.5)
                except TimeoutError:
                    heartbeat = None
                except (ConnectionError, OSError):
                    break
            if heartbeat is not None:
                guest.heartbeat = heartbeat
                guest.read_at = time.monotonic()
            time.sleep(0.05)  # let a command take the lock
        self._detach(guest.uuid)

    def _detach(self, uuid: str) -> None:
        with self._lock:
            guest = self._guests.pop(uuid, None)
        if guest is not None:
            guest.closed = True
            try:
                guest.channel.close()
            except OSError:
                pass
