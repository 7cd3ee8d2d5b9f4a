"""Protocol versions between server and agents (vcenter.messaging.contracts): a command carries
the server's version (a body without one reads as 1), an agent answers a command name it does
not know with UNKNOWN_COMMAND as the task's error, and the server reads reports of the previous
version and refuses the versions it cannot read."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.conftest import make_settings
from vcenter.core.clock import utcnow
from vcenter.messaging.contracts import OLDEST_PROTOCOL_VERSION, PROTOCOL_HEADER, PROTOCOL_VERSION, Command, UnsupportedProtocol, known_command, report_protocol
from vcenter.messaging.signing import ENVELOPE_VERSION, CommandRefused, CommandSigner, CommandVerifier, canonical_json
from workers.agent import commands
from workers.agent.api_client import ApiClient
from workers.agent.network import SimulatedHostNetwork
from workers.agent.service import AgentService


def command(name: str = "vm.start", task_id: int | None = 7) -> Command:
    return Command(command_id=str(uuid.uuid4()), task_id=task_id, host_id=1, name=name, args={"uuid": "u1"}, issued_at=utcnow() - timedelta(seconds=1))


def test_the_server_stamps_its_protocol_version_and_a_body_without_one_reads_as_1():
    key = Ed25519PrivateKey.generate()
    envelope = CommandSigner(key, ttl=60).seal(command())
    verifier = CommandVerifier(key.public_key(), 1)
    assert json.loads(envelope["body"])["version"] == PROTOCOL_VERSION == verifier.open(envelope).version
    # A server from before versions: no version field in the signed body.
    body = command().model_dump(mode="json")
    del body["version"]
    body["expires_at"] = (utcnow() + timedelta(seconds=60)).isoformat()
    text = canonical_json(body)
    old = {"v": ENVELOPE_VERSION, "kid": "k", "body": text, "sig": base64.b64encode(key.sign(text.encode())).decode()}
    assert verifier.open(old).version == 1


def test_a_command_name_the_agent_does_not_know_is_admitted_not_refused_as_malformed():
    key = Ed25519PrivateKey.generate()
    opened = CommandVerifier(key.public_key(), 1).open(CommandSigner(key, ttl=60).seal(command("vm.teleport")))
    assert opened.name == "vm.teleport" and not known_command(opened.name) and known_command("vm.start")
    with pytest.raises(CommandRefused) as refused:  # still a name, not any text
        CommandVerifier(key.public_key(), 1).open(CommandSigner(key, ttl=60).seal(command("vm.teleport").model_copy(update={"name": "DROP TABLE"})))
    assert refused.value.code == "MALFORMED"


class Api:
    def __init__(self) -> None:
        self.posted: list[tuple[str, dict]] = []

    def post(self, path: str, body, retry_for=None):
        self.posted.append((path, body))
        return {"proceed": True} if path.endswith("/progress") else {}


def test_the_agent_answers_an_unknown_command_with_a_named_task_error(tmp_path):
    api = Api()
    agent = AgentService(make_settings(tmp_path, agent_state_dir=str(tmp_path / "agent")), 1, object(), api, SimulatedHostNetwork())
    assert commands._execute(agent, command("vm.teleport")) == {"ok": False}
    path, result = api.posted[-1]
    assert path == "/tasks/7/result" and result["ok"] is False and result["error_code"] == "UNKNOWN_COMMAND"
    assert "vm.teleport" in result["error_message"] and f"protocol {PROTOCOL_VERSION}" in result["error_message"]
    # Without a task there is nothing to fail: refused, and nothing sent.
    before = len(api.posted)
    assert commands._execute(agent, command("host.teleport", task_id=None)) == {"refused": "UNKNOWN_COMMAND"}
    assert len(api.posted) == before


def test_which_report_versions_the_server_reads():
    assert report_protocol(None) == 1 == report_protocol("")  # an agent from before versions
    assert report_protocol(str(OLDEST_PROTOCOL_VERSION)) == OLDEST_PROTOCOL_VERSION
    assert report_protocol(str(PROTOCOL_VERSION)) == PROTOCOL_VERSION
    assert OLDEST_PROTOCOL_VERSION == PROTOCOL_VERSION - 1  # the previous release's agents
    for unreadable in (str(PROTOCOL_VERSION + 1), "0", "two", "9" * 40):
        with pytest.raises(UnsupportedProtocol):
            report_protocol(unreadable)


def test_the_agent_declares_its_protocol_version_on_every_request():
    client = ApiClient("http://127.0.0.1:9", 1, "token")
    try:
        assert client._client.headers[PROTOCOL_HEADER] == str(PROTOCOL_VERSION)
    finally:
        client.close()
