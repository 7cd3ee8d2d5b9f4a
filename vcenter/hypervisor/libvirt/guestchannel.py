"""The host end of a guest's heartbeat channel (virtio-serial ``org.virtcenter.heartbeat``).

What this module decides:
- QEMU listens on a unix socket per domain (libvirt picks the path; LibvirtDriver
  .guest_channel_path(uuid) reads it from the live domain XML). One client at a time: a
  second connection is refused or starves, so one GuestChannel per guest.
- The protocol is JSON lines both ways (see vcenter.lab.guest): the guest sends heartbeats
  ({"seq": ...}) every second and one {"reply": <command>, ...} per command line it reads.
  ``send`` skips heartbeats while it waits for its reply and keeps the newest in
  ``last_heartbeat``; lines that are not JSON are skipped (a guest console may leak there).
- Paths longer than a unix socket address allows (108 bytes) are reached through
  /proc/self/fd/<dir fd>/<name>, so deep lab work directories still work.
- Every wait has a timeout; a closed connection raises ChannelClosed, a timeout
  TimeoutError.
"""

from __future__ import annotations

import json
import os
import socket
import time

_MAX_SUN_PATH = 100


class ChannelClosed(ConnectionError):
    pass


class GuestChannel:
    def __init__(self, socket_path: str | os.PathLike[str], connect_timeout: float = 5.0):
        self.socket_path = os.fspath(socket_path)
        self.last_heartbeat: dict | None = None
        self._buf = b""
        self._sock = self._connect(connect_timeout)

    def _connect(self, timeout: float) -> socket.socket:
        deadline = time.monotonic() + timeout
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                self._connect_path(s)
                return s
            except (FileNotFoundError, ConnectionRefusedError):
                s.close()
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)  # QEMU may not have created the socket yet
            except BaseException:
                s.close()
                raise

    def _connect_path(self, s: socket.socket) -> None:
        path = self.socket_path
        if len(path.encode()) <= _MAX_SUN_PATH:
            s.connect(path)
            return
        dfd = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY)
        try:
            s.connect(f"/proc/self/fd/{dfd}/{os.path.basename(path)}")
        finally:
            os.close(dfd)

    # --- lines ------------------------------------------------------------------------------
    def _read_line(self, deadline: float) -> bytes:
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no line from the guest on {self.socket_path}")
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(65536)
            except socket.timeout:
                raise TimeoutError(f"no line from the guest on {self.socket_path}") from None
            if not chunk:
                raise ChannelClosed(f"guest channel {self.socket_path} closed")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def _read_message(self, deadline: float) -> dict:
        while True:
            line = self._read_line(deadline).strip()
            if not line:
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if isinstance(msg, dict):
                if "seq" in msg and "reply" not in msg:
                    self.last_heartbeat = msg
                return msg

    # --- API --------------------------------------------------------------------------------
    def read_heartbeat(self, timeout: float = 5.0) -> dict:
        """The next heartbeat line (replies read meanwhile are dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read_message(deadline)
            if "seq" in msg and "reply" not in msg:
                return msg

    def send(self, cmd: str, timeout: float = 10.0) -> dict:
        """Send one command line and return the guest's reply to it."""
        if "\n" in cmd or "\r" in cmd:
            raise ValueError("a command is one line")
        word = cmd.split(" ", 1)[0]
        deadline = time.monotonic() + timeout
        self._sock.settimeout(max(0.1, timeout))
        try:
            self._sock.sendall(cmd.encode() + b"\n")
        except OSError as e:
            raise ChannelClosed(f"guest channel {self.socket_path}: {e}") from None
        while True:
            msg = self._read_message(deadline)
            if msg.get("reply") == word:
                return msg

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self) -> "GuestChannel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
