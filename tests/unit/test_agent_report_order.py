"""The agent never lets a command's result overtake a state report listed before that command
defined its domain (the lab once saw a freshly deployed VM judged "inaccessible": the server
applied the deploy's result, then a report whose domain list predated the define)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from vcenter.core.clock import utcnow
from vcenter.messaging.contracts import Command, DomainState, HostFacts
from vcenter.messaging.results import CreateResult
from workers.agent import commands
from workers.agent.network import SimulatedHostNetwork
from workers.agent.service import AgentService
from tests.conftest import make_settings


class Driver:
    def __init__(self, slow_listing: threading.Event | None = None) -> None:
        self.listed = threading.Event()
        self.domains: list[DomainState] = []
        self.slow_listing = slow_listing  # the first listing returns only once this is set

    def list_domains(self) -> list[DomainState]:
        snapshot = list(self.domains)
        self.listed.set()
        if self.slow_listing is not None:
            self.slow_listing.wait(5)
            self.slow_listing = None
        return snapshot

    def host_facts(self) -> HostFacts:
        return HostFacts(hostname="h1", cpu_cores=2, cpu_mhz=2000, memory_mib=4096, cpu_model="X")


class Api:
    """Records what reached the server, in order; a state report travels slowly."""

    def __init__(self, slow_state: bool) -> None:
        self.received: list[tuple[str, list[str]]] = []
        self.slow_state = slow_state
        self.result_in = threading.Event()

    def post(self, path: str, body, retry_for=None):
        if path == "/state":
            if self.slow_state:
                time.sleep(0.3)  # the report is on its way while the command finishes
            self.received.append((path, [d["uuid"] for d in body["domains"]]))
            return {"accepted": True, "datastores": [], "bridges": []}
        if path.endswith("/progress"):
            return {"proceed": True}
        self.received.append((path, []))
        self.result_in.set()
        return {}


@pytest.mark.parametrize("race", ["result while the report is posted", "result between listing and posting"])
def test_a_result_never_overtakes_a_report_listed_before_its_define(tmp_path, monkeypatch, race):
    api = Api(slow_state=race == "result while the report is posted")
    driver = Driver(slow_listing=api.result_in if race == "result between listing and posting" else None)
    agent = AgentService(make_settings(tmp_path, agent_state_dir=str(tmp_path / "agent")), 1, driver, api, SimulatedHostNetwork())
    monkeypatch.setattr(agent, "_provide_expected", lambda: None)
    vm1 = DomainState(uuid="11111111-1111-1111-1111-111111111111", name="vm1", power_state="poweredOff")

    def deploy(_agent, _args):
        driver.domains.append(vm1)  # defined after the report listed the host's domains
        return vm1, CreateResult(disks=[])  # a handler answers with its result model

    monkeypatch.setitem(commands.HANDLERS, "vm.create", deploy)
    reporter = threading.Thread(target=agent.report_state)
    reporter.start()
    assert driver.listed.wait(5)
    command = Command(
        command_id="c1", task_id=7, host_id=1, name="vm.create", args={"spec": {"uuid": vm1.uuid, "name": "vm1", "vcpus": 1, "memory_mib": 64}}, issued_at=utcnow() - timedelta(seconds=1)
    )
    assert commands._execute(agent, command) == {"ok": True}
    reporter.join(10)
    assert not reporter.is_alive()
    # Once the result that makes vm1 ready is in, no report without vm1 follows it.
    result_at = api.received.index(("/tasks/7/result", []))
    assert [r for r in api.received[result_at:] if r[0] == "/state" and vm1.uuid not in r[1]] == []
    assert [r[0] for r in api.received].count("/state") == 1
    if race == "result between listing and posting":
        assert api.received == [("/tasks/7/result", []), ("/state", [vm1.uuid])]  # listed again
    else:
        assert api.received == [("/state", []), ("/tasks/7/result", [])]  # the result waited
