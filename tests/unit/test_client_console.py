"""Attaching a terminal to a console websocket (vcenter.client.console) without a server: a
websocket on loopback stands in for the console proxy (an echo of what it receives, the
bearer credential it was opened with, or a refusal with close code 4403), the terminal is a
pty in raw mode. (tests/lab/test_cli_operator.py attaches `vcenter vm console` to a real
guest's serial console through the server.)"""

from __future__ import annotations

import os
import pty
import termios
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from websockets.sync.server import ServerConnection, serve

from tests.apihelpers import wait_for
from vcenter.client.api import ClientError
from vcenter.client.console import ESCAPE, attach, before_escape, websocket_url

PORT = 18431  # this helper's range


def test_the_escape_key_ends_what_is_sent():
    assert before_escape(b"ls\r") == (b"ls\r", False)
    assert before_escape(b"ls\r" + ESCAPE + b"rm -rf /\r") == (b"ls\r", True)
    assert before_escape(ESCAPE) == (b"", True)


def test_the_websocket_url_is_the_server_s_own():
    assert websocket_url("http://vc.example:8080", "/ui/console/ws?ticket=a%2Bb") == "ws://vc.example:8080/ui/console/ws?ticket=a%2Bb"
    assert websocket_url("https://vc.example/base/", "/ui/console/ws?ticket=t") == "wss://vc.example/base/ui/console/ws?ticket=t"
    with pytest.raises(ClientError):
        websocket_url("ftp://vc.example", "/ui/console/ws")


@contextmanager
def console_proxy(refuse: bool = False) -> Iterator[list[str]]:
    """A websocket on loopback: greets with the credential it saw, then echoes every frame
    ("echo: " + bytes); or closes with 4403 at once. Yields what it received."""
    received: list[str] = []

    def handler(connection: ServerConnection) -> None:
        if refuse:
            connection.close(4403, "unknown, used or expired console ticket")
            return
        connection.send(f"banner {connection.request.headers.get('Authorization')}\r\n".encode())
        for message in connection:
            data = message if isinstance(message, bytes) else message.encode()
            received.append(data.decode())
            connection.send(b"echo: " + data)

    with serve(handler, "127.0.0.1", PORT) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield received
        finally:
            server.shutdown()
            thread.join(10)


def _read_until(fd: int, text: bytes, seen: bytearray) -> bool:
    import select

    if select.select([fd], [], [], 0.2)[0]:
        seen.extend(os.read(fd, 4096))
    return text in seen


def test_a_terminal_is_attached_in_raw_mode_until_the_escape_key():
    keyboard, terminal = pty.openpty()  # keyboard: what the user types; terminal: the command's stdin
    out_read, out_write = os.pipe()
    cooked = termios.tcgetattr(terminal)
    ended: list = []
    with console_proxy() as received:
        attached = threading.Thread(target=lambda: ended.append(attach(f"ws://127.0.0.1:{PORT}/ui/console/ws?ticket=t", "vct_secret", stdin=terminal, stdout=out_write)))
        attached.start()
        seen = bytearray()
        wait_for(lambda: _read_until(out_read, b"banner Bearer vct_secret", seen), 10, what="the proxy's banner")
        # Raw: no echo by the local terminal, Ctrl-C is a byte for the guest, not a signal.
        assert not termios.tcgetattr(terminal)[3] & termios.ECHO
        os.write(keyboard, b"uname\r\x03")
        wait_for(lambda: "".join(received) == "uname\r\x03", 10, what="the keys at the console")
        wait_for(lambda: _read_until(out_read, b"\x03", seen) and b"echo: uname" in seen, 10, what="the console's answer on the terminal")
        os.write(keyboard, b"after" + ESCAPE + b"never sent")
        attached.join(10)
        assert not attached.is_alive()
    assert ended[0].by_user and not ended[0].refused
    assert "".join(received).endswith("after") and "never" not in "".join(received)
    assert termios.tcgetattr(terminal) == cooked  # the terminal given back as it was
    for fd in (keyboard, terminal, out_read, out_write):
        os.close(fd)


def test_a_refused_console_ends_with_the_server_s_code_and_reason():
    keyboard, terminal = pty.openpty()
    with console_proxy(refuse=True):
        ended = attach(f"ws://127.0.0.1:{PORT}/ui/console/ws?ticket=used", None, stdin=terminal, stdout=os.open(os.devnull, os.O_WRONLY))
    assert ended.refused and (ended.code, ended.reason) == (4403, "unknown, used or expired console ticket")
    os.close(keyboard), os.close(terminal)


def test_no_console_is_a_client_error():
    with pytest.raises(ClientError, match="cannot open the console"):
        attach(f"ws://127.0.0.1:{PORT}/ui/console/ws?ticket=t", None, stdin=0, stdout=1, open_timeout=5)
