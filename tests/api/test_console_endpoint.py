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
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from vcenter.core.clock import utcnow
from vcenter.core.host_pki import host_sans, issued_for, key_pem, new_key
from vcenter.dashboard.console import open_host_console
from vcenter.hypervisor.base import DriverError
from vcenter.messaging.contracts import Command
from vcenter.messaging.signing import CommandSigner, CommandVerifier
from vcenter.services.certificates import authority
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
    def __init__(self, signer, port, base: Path = Path("/tmp")):
        from tests.conftest import make_settings

        self.signer = signer
        self.settings = make_settings(base, agent_console_port=port, console_connect_timeout=5)


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


@pytest.fixture
def ca_endpoint(tmp_path: Path):
    """An endpoint whose host has its certificate from the cluster CA (the server's, in the
    runtime's key_dir), at the files the agent's host TLS writes; and a second certificate of
    that host, issued before it (superseded)."""
    runtime_dir = tmp_path / "server"
    runtime_dir.mkdir()
    ca = authority.load_or_create(runtime_dir / "keys", utcnow(), timedelta(days=365))
    state, pki = tmp_path / "agent", tmp_path / "pki"
    state.mkdir()
    pki.mkdir()
    load_or_create_certificate(state, "host-under-test")
    serials = []
    for _ in range(2):
        key = new_key()
        cert = ca.sign_host(key.public_key(), "esx7", host_sans("esx7", ["127.0.0.1"]), utcnow(), timedelta(days=30))
        serials.append(format(cert.serial_number, "x"))
    (pki / "servercert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (pki / "serverkey.pem").write_bytes(key_pem(key))
    signer_key = Ed25519PrivateKey.generate()
    port = _free_port()
    stop = threading.Event()
    driver = Driver()
    endpoint = ConsoleEndpoint(driver, CommandVerifier(signer_key.public_key(), HOST_ID), state, "127.0.0.1", port, 3600, stop, cluster_cert=(pki / "servercert.pem", pki / "serverkey.pem"))
    endpoint.start()
    yield {"runtime": _Runtime(CommandSigner(signer_key, ttl=60), port, runtime_dir), "serials": serials, "driver": driver, "cert": pki / "servercert.pem", "ca_pem": ca.cert_pem.encode()}
    stop.set()


def test_the_console_endpoint_serves_the_cluster_ca_certificate_the_server_accepts(ca_endpoint):
    """Issue 17 item 3: the console endpoint uses the host's certificate from the cluster CA;
    the server accepts it for the host's standing serial, not the pinned thumbprint."""
    newest = ca_endpoint["serials"][-1]
    grant = {"host_id": HOST_ID, "uuid": UUID, "address": "127.0.0.1", "thumbprint": "SHA256:" + ":".join(["AB"] * 32), "vm_id": 1, "certificate_serials": [newest]}

    async def session():
        reader, writer = await open_host_console(ca_endpoint["runtime"], grant)
        served = x509.load_der_x509_certificate(writer.get_extra_info("ssl_object").getpeercert(binary_form=True))
        writer.close()
        return format(served.serial_number, "x")

    assert asyncio.run(session()) == newest
    assert ca_endpoint["driver"].opened == [UUID]


def test_a_superseded_or_revoked_cluster_certificate_is_refused(ca_endpoint):
    # the grant names only the predecessor: the certificate served is not a standing one
    grant = {"host_id": HOST_ID, "uuid": UUID, "address": "127.0.0.1", "thumbprint": "SHA256:" + ":".join(["AB"] * 32), "vm_id": 1, "certificate_serials": ca_endpoint["serials"][:1]}
    with pytest.raises(ConnectionError, match="certificate other than the confirmed one"):
        asyncio.run(open_host_console(ca_endpoint["runtime"], grant))
    assert ca_endpoint["driver"].opened == []
    # nor is a standing certificate of the CA that names another address than the one dialled
    der = x509.load_pem_x509_certificate(ca_endpoint["cert"].read_bytes()).public_bytes(serialization.Encoding.DER)
    ca_pem = ca_endpoint["ca_pem"]
    assert issued_for(der, ca_pem, ca_endpoint["serials"], "127.0.0.1", utcnow())
    assert not issued_for(der, ca_pem, ca_endpoint["serials"], "127.0.0.2", utcnow())
    assert not issued_for(der, authority.load_or_create(ca_endpoint["cert"].parent / "other-ca", utcnow(), timedelta(days=1)).cert_pem.encode(), ca_endpoint["serials"], "127.0.0.1", utcnow())
