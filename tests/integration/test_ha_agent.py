"""The agent's HA part on real files, real TCP probes and real Redis: datastore heartbeat files
read by a peer and published for the monitor; Redis unreachable while an isolation address
answers never isolates (a Redis restart); Redis and every address silent for the isolation
delay isolates, applies the response (power-off stops the VMs and lists them as released on
the datastore; leave-powered-on stops nothing). The hypervisor is a recording stand-in (the
lab test drives real libvirt)."""
from __future__ import annotations

import json
import socket
import threading
import time
from types import SimpleNamespace

import pytest
import redis

from tests.conftest import REDIS_URL, make_settings
from vcenter.messaging.contracts import DomainState, ha_datastore_view_key
from workers.agent.ha import HaAgent, heartbeat_file

pytestmark = pytest.mark.integration


class Driver:
    def __init__(self, uuids):
        self.running = set(uuids)
        self.stopped: list[str] = []

    def list_domains(self):
        return [DomainState(uuid=u, name=u, power_state="poweredOn") for u in sorted(self.running)]

    def stop(self, uuid):
        self.running.discard(uuid)
        self.stopped.append(uuid)

    def shutdown(self, uuid, timeout):
        self.stop(uuid)


class Clock:
    t = 100.0

    def __call__(self):
        return self.t


def make_agent(tmp_path, host_id, uuids, ha_cfg, clock):
    settings = make_settings(tmp_path, redis_url=REDIS_URL, ha_datastore_heartbeat_period=1.0, ha_probe_timeout=0.3)
    ds = tmp_path / "ds1"
    ds.mkdir(exist_ok=True)
    agent = SimpleNamespace(settings=settings, host_id=host_id, driver=Driver(uuids), driver_lock=threading.RLock(),
                            stop_event=threading.Event(), _expected={"datastores": [{"id": 1, "path": str(ds)}], "ha": ha_cfg})
    return HaAgent(agent, clock=clock)


@pytest.fixture
def listener():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield f"127.0.0.1:{s.getsockname()[1]}"
    s.close()


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"127.0.0.1:{port}"


def dead_redis():
    return redis.Redis.from_url("redis://127.0.0.1:1/0", socket_timeout=0.2, socket_connect_timeout=0.2)


def test_datastore_heartbeats_are_read_by_peers_and_published(tmp_path):
    clock = Clock()
    a = make_agent(tmp_path, 71, ["vm-a"], {"enabled": True}, clock)
    b = make_agent(tmp_path, 72, [], {"enabled": True}, clock)
    a.step()
    b.step()
    a.step()
    data = json.loads(heartbeat_file(str(tmp_path / "ds1"), 71).read_text())
    assert data["n"] == a.counter and data["holds"] == ["vm-a"] and not data["isolated"]
    view = json.loads(redis.Redis.from_url(REDIS_URL).get(ha_datastore_view_key(72)))
    assert view["71"]["n"] == a.counter - 1 and view["71"]["holds"] == ["vm-a"]  # what b read of a
    b.step()
    assert json.loads(redis.Redis.from_url(REDIS_URL).get(ha_datastore_view_key(72)))["71"]["n"] == a.counter  # the counter advances
    time.sleep(0.02)
    restarted = make_agent(tmp_path, 71, [], {"enabled": True}, clock)
    assert restarted.counter > a.counter  # a restarted agent's counter still grows


def test_redis_down_with_an_answering_address_is_not_isolation(tmp_path, listener):
    clock = Clock()
    a = make_agent(tmp_path, 73, ["vm-a"], {"enabled": True, "isolation_delay_s": 3, "isolation_addresses": [closed_port(), listener],
                                             "isolation_response": "power-off"}, clock)
    a.step()
    a.redis = dead_redis()  # Redis restarting
    for _ in range(10):
        clock.t += 1
        a.step()
    assert not a.isolated and a.agent.driver.stopped == []


@pytest.mark.parametrize("response, stops", [("power-off", True), ("leave-powered-on", False)])
def test_isolation_applies_the_response_after_the_delay(tmp_path, response, stops):
    clock = Clock()
    a = make_agent(tmp_path, 74, ["vm-a", "vm-b"], {"enabled": True, "isolation_delay_s": 3, "isolation_addresses": [closed_port()],
                                                     "isolation_response": response, "overrides": {"vm-b": "leave-powered-on"}}, clock)
    peer = make_agent(tmp_path, 75, [], {"enabled": True}, clock)
    a.step()
    a.redis = dead_redis()  # the link is down: Redis and every address silent
    for _ in range(3):
        clock.t += 1
        a.step()
        assert not a.isolated  # not before the delay
    clock.t += 1
    a.step()
    assert a.isolated
    data = json.loads(heartbeat_file(str(tmp_path / "ds1"), 74).read_text())
    assert data["isolated"] is True
    if stops:
        assert a.agent.driver.stopped == ["vm-a"] and data["released"] == ["vm-a"] and data["holds"] == ["vm-b"]  # vm-b: its override
    else:
        assert a.agent.driver.stopped == [] and data["released"] == [] and data["holds"] == ["vm-a", "vm-b"]
    peer.step()
    seen = json.loads(redis.Redis.from_url(REDIS_URL).get(ha_datastore_view_key(75)))["74"]
    assert seen["isolated"] and seen["released"] == (["vm-a"] if stops else [])
