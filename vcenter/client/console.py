"""Attaching a terminal to a VM's serial console, as ``virsh console`` does.

The console is the dashboard's: a one-time ticket from ``POST /api/v1/vms/{id}/console/ticket``
opens the websocket it names (``ws://`` or ``wss://`` on the same server) with the same bearer
credential; binary frames carry the console's bytes both ways.

Decides: the terminal is put in raw mode (every key, Ctrl-C included, goes to the guest) and
restored however the session ends; the escape key (Ctrl-], byte 0x1d) ends the session and is
never sent; end of input ends it too; the session's end is told by the websocket's close code
and reason (1000: the console closed; 4xxx: refused, vcenter.dashboard.console).
"""

from __future__ import annotations

import os
import select
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from vcenter.client.errors import ClientError

ESCAPE = b"\x1d"  # Ctrl-], virsh console's and telnet's escape
NORMAL_CLOSE = 1000
POLL_SECONDS = 0.2  # how often the input loop looks whether the console ended


@dataclass(frozen=True)
class Ended:
    """How a session ended: by the escape key or end of input (``by_user``), else by the
    server, with the websocket's close code and reason."""

    by_user: bool
    code: int | None = None
    reason: str = ""

    @property
    def refused(self) -> bool:
        return not self.by_user and self.code not in (None, NORMAL_CLOSE)


def websocket_url(server: str, path: str) -> str:
    """The websocket URL of ``path`` on ``server`` (http -> ws, https -> wss)."""
    parts = urlsplit(server)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme)
    if scheme is None:
        raise ClientError(f"{server}: not an http(s) server URL")
    path_part, _, query = path.partition("?")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + path_part, query, ""))


def before_escape(data: bytes, escape: bytes = ESCAPE) -> tuple[bytes, bool]:
    """The bytes to send of what was typed, and whether the escape key was among them (what
    follows it is dropped)."""
    at = data.find(escape)
    return (data, False) if at < 0 else (data[:at], True)


@contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """``fd`` in raw mode while the block runs, when it is a terminal; restored after."""
    if not os.isatty(fd):
        yield
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def attach(url: str, token: str | None, *, ca_file: str | None = None, stdin: int = 0, stdout: int = 1, open_timeout: float = 30.0) -> Ended:
    """Copy ``stdin`` to the console and the console to ``stdout`` until the escape key, end
    of input, or the server closes the console."""
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
    from websockets.sync.client import connect

    context = (ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()) if url.startswith("wss:") else None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        socket = connect(url, additional_headers=headers, ssl=context, open_timeout=open_timeout, max_size=None, compression=None)
    except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
        raise ClientError(f"cannot open the console at {url.split('?')[0]}: {exc}") from None

    def console_to_terminal() -> None:
        try:
            for message in socket:
                os.write(stdout, message if isinstance(message, bytes) else message.encode())
        except ConnectionClosed:
            pass

    reader = threading.Thread(target=console_to_terminal, name="console-output", daemon=True)
    by_user = False
    with socket, raw_terminal(stdin):
        reader.start()
        while reader.is_alive():
            ready, _, _ = select.select([stdin], [], [], POLL_SECONDS)
            if not ready:
                continue
            data, escaped = before_escape(os.read(stdin, 4096))
            if data:
                try:
                    socket.send(data)
                except ConnectionClosed:
                    break
            if escaped or not data:
                by_user = True
                break
    reader.join(timeout=open_timeout)
    if by_user:
        return Ended(by_user=True)
    return Ended(by_user=False, code=socket.close_code, reason=socket.close_reason or "")
