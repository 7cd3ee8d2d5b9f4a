"""A running domain's serial console as a byte stream: libvirt's ``virDomainOpenConsole`` on a
non-blocking ``virStream``, read by the libvirt event loop (see host.ensure_event_loop).

Vocabulary: the console is the guest's first serial port (a pty on the host, ``<console
type='pty'>`` in the domain XML); ``ConsoleStream.read`` gives what the guest wrote (None at
the end), ``write`` sends keystrokes. One reader at a time: opening with FORCE takes the
console from whoever held it, as ``virsh console --force`` does.
"""

from __future__ import annotations

import queue
import threading
import time

import libvirt

from vcenter.hypervisor.base import DriverError

_EVENTS = libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP


class ConsoleStream:
    def __init__(self, conn: libvirt.virConnect, dom: libvirt.virDomain):
        self._stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        self._incoming: queue.Queue[bytes | None] = queue.Queue()
        self._lock = threading.Lock()
        self.closed = False
        try:
            dom.openConsole(None, self._stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
            self._stream.eventAddCallback(_EVENTS, self._on_event, None)
        except libvirt.libvirtError as e:
            raise DriverError("CONSOLE_UNAVAILABLE", f"cannot open the console: {e.get_error_message()}") from None

    def _on_event(self, stream: libvirt.virStream, events: int, _opaque: object) -> None:
        # Runs on the libvirt event loop thread: drain what is there, never block.
        if events & libvirt.VIR_STREAM_EVENT_READABLE:
            while True:
                try:
                    data = stream.recv(65536)
                except libvirt.libvirtError:
                    self._end()
                    return
                if data == -2:  # nothing more for now
                    break
                if not data:  # the guest side closed
                    self._end()
                    return
                self._incoming.put(bytes(data))
        if events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP):
            self._end()

    def _end(self) -> None:
        if not self.closed:
            self.closed = True
            self._incoming.put(None)

    def read(self, timeout: float | None = None) -> bytes | None:
        """Bytes the guest wrote; b"" when nothing came within ``timeout``; None at the end."""
        try:
            return self._incoming.get(timeout=timeout)
        except queue.Empty:
            return b""

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + 5
        while view:
            if self.closed:
                raise DriverError("CONSOLE_CLOSED", "the console stream ended")
            with self._lock:
                try:
                    sent = self._stream.send(bytes(view[:65536]))
                except libvirt.libvirtError as e:
                    self._end()
                    raise DriverError("CONSOLE_CLOSED", f"console write failed: {e.get_error_message()}") from None
            if sent == -2:  # the stream's buffer is full: the guest reads slowly
                if time.monotonic() > deadline:
                    raise DriverError("CONSOLE_STALLED", "the guest does not read its console")
                time.sleep(0.01)
                continue
            view = view[sent:]

    def close(self) -> None:
        self._end()
        try:
            self._stream.eventRemoveCallback()
        except libvirt.libvirtError:
            pass
        try:
            self._stream.abort()
        except libvirt.libvirtError:
            pass
