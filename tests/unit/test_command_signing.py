"""Signed commands: the agent runs only what the server signed for its host, before expiry,
and never again once the result was reported; a redelivery before the report runs again."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.conftest import make_settings
from vcenter.core.clock import utcnow
from vcenter.hypervisor.simulated import SimulatedDriver
from vcenter.messaging.contracts import Command, VmSpec
from vcenter.messaging.signing import (
    CommandRefused,
    CommandSigner,
    CommandVerifier,
    load_or_create_signing_key,
    load_public_key,
)
from workers.agent import commands
from workers.agent.trust import CommandGate, ReplayCache, make_gate

HOST_A, HOST_B = 1, 2


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def signer(key) -> CommandSigner:
    return CommandSigner(key, ttl=60)


def command(host_id: int = HOST_A, name: str = "vm.start", **args) -> Command:
    return Command(command_id=str(uuid.uuid4()), task_id=7, host_id=host_id, name=name, args=args, issued_at=utcnow())


def verifier(key, host_id: int = HOST_A) -> CommandVerifier:
    return CommandVerifier(key.public_key(), host_id, clock_skew=5)


def refused(code: str, fn, *args, **kwargs) -> None:
    with pytest.raises(CommandRefused) as e:
        fn(*args, **kwargs)
    assert e.value.code == code, e.value


# --- the envelope ------------------------------------------------------------------------------
def test_round_trip(signer, key):
    cmd = command(uuid="u1")
    envelope = signer.seal(cmd.model_dump(mode="json"))
    assert set(envelope) == {"v", "kid", "body", "sig"} and envelope["kid"] == signer.key_id
    body = json.loads(envelope["body"])
    assert body["host_id"] == HOST_A and body["command_id"] == cmd.command_id and body["expires_at"] and body["issued_at"]
    opened = verifier(key).open(envelope)
    assert opened.command_id == cmd.command_id and opened.args == {"uuid": "u1"} and opened.expires_at > utcnow()
    # The envelope survives the JSON round trip of the broker.
    assert verifier(key).open(json.loads(json.dumps(envelope))).command_id == cmd.command_id


def test_tampered_body_is_refused(signer, key):
    envelope = signer.seal(command(uuid="u1"))
    body = json.loads(envelope["body"])
    body["args"]["uuid"] = "someone-elses-vm"
    refused("BAD_SIGNATURE", verifier(key).open, {**envelope, "body": json.dumps(body)})
    # A signature moved onto another body, a mangled signature, none at all.
    other = signer.seal(command(uuid="u2"))
    refused("BAD_SIGNATURE", verifier(key).open, {**envelope, "sig": other["sig"]})
    refused("BAD_SIGNATURE", verifier(key).open, {**envelope, "sig": "not base64!"})
    refused("UNSIGNED", verifier(key).open, command().model_dump(mode="json"))
    refused("MALFORMED", verifier(key).open, {**envelope, "v": 99})


def test_forged_with_another_key_is_refused(key):
    forger = CommandSigner(Ed25519PrivateKey.generate(), ttl=60)
    refused("BAD_SIGNATURE", verifier(key).open, forger.seal(command()))


def test_command_for_another_host_is_refused(signer, key):
    envelope = signer.seal(command(host_id=HOST_A))
    refused("WRONG_HOST", verifier(key, HOST_B).open, envelope)
    # Rewriting the host id breaks the signature.
    body = json.loads(envelope["body"])
    body["host_id"] = HOST_B
    refused("BAD_SIGNATURE", verifier(key, HOST_B).open, {**envelope, "body": json.dumps(body, sort_keys=True, separators=(",", ":"))})


def test_expired_command_is_refused(signer, key):
    envelope = signer.seal(command(), now=utcnow() - timedelta(seconds=120))  # expired 60 s ago
    refused("EXPIRED", verifier(key).open, envelope)
    # Within the tolerated clock skew it is still accepted.
    fresh = signer.seal(command(), now=utcnow() - timedelta(seconds=62))
    assert verifier(key).open(fresh)
    # An unsigned expiry cannot be extended.
    body = json.loads(envelope["body"])
    body["expires_at"] = (utcnow() + timedelta(hours=1)).isoformat()
    refused("BAD_SIGNATURE", verifier(key).open, {**envelope, "body": json.dumps(body)})


def test_signing_key_file_is_created_once_private_and_reused(tmp_path):
    path = tmp_path / "keys" / "command-signing.pem"
    first = load_or_create_signing_key(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    again = load_or_create_signing_key(path)
    sig = first.sign(b"x")
    again.public_key().verify(sig, b"x")
    signer = CommandSigner.from_settings(make_settings(tmp_path, command_signing_key=str(path), task_queue_timeout=42))
    assert signer.ttl == 42
    assert load_public_key(signer.public_key_pem).public_bytes_raw() == first.public_key().public_bytes_raw()
    pem_file = tmp_path / "pub.pem"
    pem_file.write_text(signer.public_key_pem)
    assert load_public_key(str(pem_file)).public_bytes_raw() == first.public_key().public_bytes_raw()


# --- the gate: replay and redelivery -----------------------------------------------------------
def gate(key, state_dir: Path, host_id: int = HOST_A) -> CommandGate:
    from cryptography.hazmat.primitives import serialization

    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return make_gate(pem, host_id, state_dir, clock_skew=5, retention=3600, max_entries=1000)


def test_replay_after_the_result_was_reported_is_refused(signer, key, tmp_path):
    g = gate(key, tmp_path)
    envelope = signer.seal(command())
    cmd = g.admit(envelope)
    g.reported(cmd)
    refused("REPLAY", g.admit, envelope)
    # A re-signed copy (same command id) is a replay too, and so after an agent restart.
    refused("REPLAY", g.admit, signer.seal(cmd))
    refused("REPLAY", gate(key, tmp_path).admit, envelope)


def test_redelivery_before_the_report_runs_again(signer, key, tmp_path):
    g = gate(key, tmp_path)
    envelope = signer.seal(command())
    g.admit(envelope)
    # While it runs here, a second delivery is refused: the first one will report.
    refused("IN_PROGRESS", g.admit, envelope)
    # The agent died before reporting: the restarted agent runs the redelivered command.
    restarted = gate(key, tmp_path)
    cmd = restarted.admit(envelope)
    # A run that failed to report (release) may run again in the same process as well.
    restarted.release(cmd)
    assert restarted.admit(envelope).command_id == cmd.command_id


def test_replay_cache_is_bounded_and_survives_a_torn_line(tmp_path):
    now = [1000.0]
    cache = ReplayCache(tmp_path / "replay", retention=10, max_entries=3, clock=lambda: now[0])
    for i in range(5):
        cache.remember(f"c{i}", None)
    assert len(cache) == 3 and not cache.reported("c0") and cache.reported("c4")
    with open(tmp_path / "replay", "a") as f:
        f.write("c9 12")  # torn write: no newline, a bogus deadline
    now[0] += 5
    reloaded = ReplayCache(tmp_path / "replay", retention=10, max_entries=3, clock=lambda: now[0])
    assert reloaded.reported("c4") and reloaded.reported("c2")
    now[0] += 6  # past the retention: forgotten (the signature's expiry refuses them by now)
    assert not reloaded.reported("c4")
    assert len(ReplayCache(tmp_path / "replay", retention=10, max_entries=3, clock=lambda: now[0])) == 0


# --- execute(): what the agent does with a message ---------------------------------------------
class FakeApi:
    def __init__(self):
        self.posts: list[tuple[str, dict]] = []
        self.fail_results = False

    def post(self, path, body, retry_for=None):
        self.posts.append((path, body))
        if path.endswith("/result") and self.fail_results:
            raise ConnectionError("server unreachable")
        return {"proceed": True} if path.endswith("/progress") else {"applied": True}


class FakeAgent:
    def __init__(self, tmp_path: Path, key, host_id: int = HOST_A):
        self.settings = make_settings(tmp_path)
        self.host_id = host_id
        self.driver = SimulatedDriver()
        self.driver.connect()
        self.api = FakeApi()
        self.driver_lock = threading.RLock()
        self.command_gate = gate(key, tmp_path / f"state-{host_id}", host_id)
        self.reports = 0

    def request_report(self):
        self.reports += 1


def _vm(agent: FakeAgent) -> str:
    spec = VmSpec(name="v", uuid=str(uuid.uuid4()), vcpus=1, memory_mib=32)
    agent.driver.define(spec)
    return spec.uuid


def test_execute_runs_a_genuine_command_once_and_refuses_forgeries_moves_and_replays(signer, key, tmp_path):
    a, b = FakeAgent(tmp_path, key, HOST_A), FakeAgent(tmp_path, key, HOST_B)
    vm = _vm(a)
    forged = CommandSigner(Ed25519PrivateKey.generate(), ttl=60).seal(command(uuid=vm))
    assert commands.execute(a, forged) == {"refused": "BAD_SIGNATURE"}
    assert commands.execute(a, command(uuid=vm).model_dump(mode="json")) == {"refused": "UNSIGNED"}
    assert a.driver.domain_state(vm).power_state == "poweredOff" and a.api.posts == []

    genuine = signer.seal(command(HOST_A, uuid=vm))
    b_vm = _vm(b)
    assert commands.execute(b, signer.seal(command(HOST_A, uuid=b_vm))) == {"refused": "WRONG_HOST"}
    assert b.driver.domain_state(b_vm).power_state == "poweredOff" and b.api.posts == []

    assert commands.execute(a, genuine) == {"ok": True}
    assert a.driver.domain_state(vm).power_state == "poweredOn"
    a.driver.stop(vm)
    posts = len(a.api.posts)
    assert commands.execute(a, genuine) == {"refused": "REPLAY"}
    assert a.driver.domain_state(vm).power_state == "poweredOff" and len(a.api.posts) == posts


def test_execute_redelivered_command_whose_result_was_not_reported_runs_again(signer, key, tmp_path):
    a = FakeAgent(tmp_path, key)
    vm = _vm(a)
    envelope = signer.seal(command(uuid=vm))
    a.api.fail_results = True
    with pytest.raises(ConnectionError):
        commands.execute(a, envelope)
    assert a.driver.domain_state(vm).power_state == "poweredOn"
    a.api.fail_results = False
    assert commands.execute(a, envelope) == {"ok": True}  # idempotent: still on, now reported
    assert [p for p, _ in a.api.posts].count("/tasks/7/result") == 2
    assert commands.execute(a, envelope) == {"refused": "REPLAY"}


def test_execute_without_a_key_refuses_everything(signer, key, tmp_path):
    a = FakeAgent(tmp_path, key)
    a.command_gate = None
    assert commands.execute(a, signer.seal(command(name="host.refresh"))) == {"refused": "NO_COMMAND_KEY"}
    assert a.reports == 0


def test_the_signature_covers_the_exact_bytes(signer, key):
    envelope = signer.seal(command())
    sig = base64.b64decode(envelope["sig"])
    key.public_key().verify(sig, envelope["body"].encode())


def test_lab_agents_keep_the_redis_password_when_the_host_changes():
    from vcenter.lab.stack import with_host

    assert with_host("redis://:s3cret@127.0.0.1:6390/0", "10.213.0.1") == "redis://:s3cret@10.213.0.1:6390/0"
    assert with_host("redis://127.0.0.1:6390/0", "10.213.0.1") == "redis://10.213.0.1:6390/0"


def test_no_secret_travels_in_a_command():
    from pydantic import ValidationError

    for args in ({"password": "x"}, {"spec": {"cloud_init": {"user_data": "#cloud-config"}}}, {"moves": [{"api_token": "t"}]}, {"ssh_private_key": "k"}):
        with pytest.raises(ValidationError, match="secret"):
            command(**args)
    # What commands carry today passes: specs, disk lists, guest command lines, CPU definitions.
    command(spec={"name": "v", "uuid": "u", "disks": [{"file": "v.qcow2", "capacity_mib": 8}]}, disks=["/ds/v.qcow2"], line="uptime", cpu_xmls=["<cpu/>"])
