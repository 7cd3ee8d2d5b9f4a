"""The agent's console endpoint and the server's side of it, over real TLS sockets on
loopback with real keys: only a console.open request signed by the server's key, for this
host, unexpired and never used before opens a console; the server accepts only the host
certificate it pinned. The console behind it here is an in-memory echo (the real libvirt
console stream is exercised by the browser test on the lab, tests/e2e)."""

from __future__ import annotations

import asyncio
import json
import queue
import socket
import ssl
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from vcenter.core.clock import utcnow
from vcenter.dashboard.console import open_host_console
from vcenter.hypervisor.base import DriverError
from vcenter.messaging.contracts import Command
from vcenter.messaging.signing import CommandSigner, CommandVerifier
from vcenter.services.compute import console as console_service
from workers.agent.console import ConsoleEndpoint
from workers.agent.identity import load_or_create_certificate


HOST_ID = 7
UUID = "6f1c2a52-8a3e-4c35-9a8e-3f0f6c0c7a11"


class EchoConsole:
    """Answers every line with "echo: <line>" (what a guest's shell would roughly do)."""

    def __init__(self):
        self.out: queue.Queue[bytes | None] = queue.Queue()
        self.closed = False

    def read(self, timeout=None):
        try:
            return self.out.get(timeout=timeout)
        except queue.Empty:
            return b""

    def write(self, data: bytes) -> None:
        self.out.put(b"echo: " + data)

    def close(self) -> None:
        self.closed = True


class Driver:
    def __init__(self):
        self.opened: list[str] = []

    def open_console(self, uuid: str):
        if uuid != UUID:
            raise DriverError("VM_NOT_FOUND", f"no domain with UUID {uuid}")
        self.opened.append(uuid)
        return EchoConsole()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def endpoint(tmp_path: Path):
    key = Ed25519PrivateKey.generate()
    signer = CommandSigner(key, ttl=60)
    thumbprint = load_or_create_certificate(tmp_path, "host-under-test")
    port = _free_port()
    stop = threading.Event()
    driver = Driver()
    ConsoleEndpoint(driver, CommandVerifier(key.public_key(), HOST_ID), tmp_path, "127.0.0.1", port, 3600, stop).start()
    yield {"signer": signer, "port": port, "thumbprint": thumbprint, "driver": driver, "key": key}
    stop.set()


def _raw_request(port: int, line: bytes) -> dict:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, context.wrap_socket(raw) as conn:
        conn.sendall(line)
        return json.loads(conn.makefile("rb").readline())


def _grant(endpoint, **changes) -> dict:
    return {"host_id": HOST_ID, "uuid": UUID, "address": "127.0.0.1", "thumbprint": endpoint["thumbprint"], "vm_id": 1, **changes}


class _Runtime:
    def __init__(self, signer, port):
        from tests.conftest import make_settings

        self.signer = signer
        self.settings = make_settings(Path("/tmp"), agent_console_port=port, console_connect_timeout=5)


def test_a_signed_request_opens_the_console_and_bytes_flow_both_ways(endpoint):
    async def session():
        reader, writer = await open_host_console(_Runtime(endpoint["signer"], endpoint["port"]), _grant(endpoint))
        writer.write(b"uname\r")
        await writer.drain()
        answer = await asyncio.wait_for(reader.readexactly(len(b"echo: uname\r")), 5)
        writer.close()
        return answer

    assert asyncio.run(session()) == b"echo: uname\r"
    assert endpoint["driver"].opened == [UUID]


def test_the_endpoint_refuses_what_the_server_did_not_sign_for_this_host(endpoint):
    port, signer = endpoint["port"], endpoint["signer"]
    assert _raw_request(port, b"not json\n")["code"] == "MALFORMED"
    assert _raw_request(port, b'{"body": "{}", "sig": "AAAA", "v": 1}\n')["code"] == "BAD_SIGNATURE"
    # Signed by another key.
    other = CommandSigner(Ed25519PrivateKey.generate(), ttl=60)
    assert _raw_request(port, console_service.open_request(other, _grant(endpoint)))["code"] == "BAD_SIGNATURE"
    # Signed, but for another host.
    assert _raw_request(port, console_service.open_request(signer, _grant(endpoint, host_id=HOST_ID + 1)))["code"] == "WRONG_HOST"
    # Signed, but expired.
    old = Command(command_id="00000000-0000-4000-8000-000000000001", task_id=None, host_id=HOST_ID, name="console.open", args={"uuid": UUID}, issued_at=utcnow())
    stale = signer.seal(old, now=utcnow() - timedelta(hours=1))
    assert _raw_request(port, json.dumps(stale).encode() + b"\n")["code"] == "EXPIRED"
    # Signed, but another command.
    power = Command(command_id="00000000-0000-4000-8000-000000000002", task_id=None, host_id=HOST_ID, name="vm.stop", args={"uuid": UUID}, issued_at=utcnow())
    assert _raw_request(port, json.dumps(signer.seal(power)).encode() + b"\n")["code"] == "MALFORMED"
    # A genuine request works once; the same bytes again are a replay.
    line = console_service.open_request(signer, _grant(endpoint))
    assert _raw_request(port, line) == {"ok": True}
    assert _raw_request(port, line)["code"] == "REPLAYED"
    # A VM the host does not have.
    unknown = _raw_request(port, console_service.open_request(signer, _grant(endpoint, uuid="11111111-2222-4333-8444-555555555555")))
    assert unknown["code"] == "VM_NOT_FOUND"
    assert endpoint["driver"].opened == [UUID]


def test_the_server_accepts_only_the_pinned_host_certificate(endpoint):
    grant = _grant(endpoint, thumbprint="SHA256:" + ":".join(["AB"] * 32))
    with pytest.raises(ConnectionError, match="certificate other than the confirmed one"):
        asyncio.run(open_host_console(_Runtime(endpoint["signer"], endpoint["port"]), grant))
    assert endpoint["driver"].opened == []
