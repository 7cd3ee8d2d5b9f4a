"""GuestChannel against a fake guest on a unix socket (the real one: tests/libvirtd/test_lab_guest.py)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import pytest

from vcenter.hypervisor.libvirt.guestchannel import ChannelClosed, GuestChannel


class FakeGuest:
    """Sends heartbeats every 50 ms and answers commands like the lab guest (plus noise)."""

    def __init__(self, path: str):
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(1)
        self.received: list[str] = []
        self.stop = threading.Event()
        threading.Thread(target=self.run, daemon=True).start()

    def run(self) -> None:
        conn, _ = self.srv.accept()
        lock = threading.Lock()

        def beat() -> None:
            seq = 0
            while not self.stop.is_set():
                seq += 1
                try:
                    with lock:
                        conn.sendall(json.dumps({"seq": seq, "hostname": "g"}).encode() + b"\n")
                except OSError:  # the host hung up
                    return
                time.sleep(0.05)

        threading.Thread(target=beat, daemon=True).start()
        buf = b""
        while True:
            chunk = conn.recv(1024)
            if not chunk:
                self.stop.set()
                return
            buf += chunk
            while b"\n" in buf:
                line, _, buf = buf.partition(b"\n")
                cmd = line.decode()
                self.received.append(cmd)
                if cmd == "die":
                    self.stop.set()
                    conn.close()
                    return
                with lock:
                    conn.sendall(b"vc-init: console noise\n")
                    if cmd != "silent":
                        word = cmd.split()[0]
                        # The reply is split over two writes, as a slow guest might.
                        msg = json.dumps({"reply": word, "ok": True, "arg": cmd[len(word) :].strip()}).encode()
                        conn.sendall(msg[:5])
                        time.sleep(0.01)
                        conn.sendall(msg[5:] + b"\n")


def test_heartbeats_and_replies(tmp_path):
    path = str(tmp_path / "hb.sock")
    guest = FakeGuest(path)
    with GuestChannel(path) as ch:
        a = ch.read_heartbeat(2)
        b = ch.read_heartbeat(2)
        assert b["seq"] > a["seq"]
        r = ch.send("burn 50", timeout=2)
        assert r == {"reply": "burn", "ok": True, "arg": "50"}
        assert ch.last_heartbeat is not None
        with pytest.raises(TimeoutError):
            ch.send("silent", timeout=0.3)
        with pytest.raises(ValueError):
            ch.send("a\nb")
        with pytest.raises(ChannelClosed):  # the guest goes away instead of answering
            ch.send("die", timeout=2)
    assert guest.received[:2] == ["burn 50", "silent"]


def test_long_socket_path_is_reached_through_proc(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = str(deep / "org.virtcenter.heartbeat")
    assert len(path) > 108
    with pytest.raises(OSError):
        socket.socket(socket.AF_UNIX).connect(path)
    # Bind through the same trick (bind has the same limit).
    dfd = os.open(deep, os.O_PATH | os.O_DIRECTORY)
    try:
        FakeGuest(f"/proc/self/fd/{dfd}/org.virtcenter.heartbeat")
    finally:
        os.close(dfd)
    with GuestChannel(path) as ch:
        assert ch.read_heartbeat(2)["seq"] >= 1


def test_connect_waits_for_the_socket_then_gives_up(tmp_path):
    path = str(tmp_path / "late.sock")
    threading.Timer(0.3, lambda: FakeGuest(path)).start()
    with GuestChannel(path, connect_timeout=3) as ch:
        assert ch.read_heartbeat(2)["seq"] >= 1
    t0 = time.monotonic()
    with pytest.raises(FileNotFoundError):
        GuestChannel(str(tmp_path / "never.sock"), connect_timeout=0.3)
    assert time.monotonic() - t0 < 2
