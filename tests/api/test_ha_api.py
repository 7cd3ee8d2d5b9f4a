"""HA through the API and the `vcenter ha` monitor on real Redis and both databases: per-cluster
configuration with per-VM overrides, admission control refusing a power-on and a migration
with HA_ADMISSION_REFUSED, failover capacity; the monitor declaring a silent host failed (an
Event with its evidence) and restarting its VMs as Tasks, a standby taking over with a higher
fencing token (the old one fenced out), a Redis outage freezing it. Agents are played by the
test (heartbeat keys, task results); the lab test covers real hosts."""

from __future__ import annotations

import dataclasses
import json

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.apihelpers import app_for, command_id_of, finish_as_agent, login, make_admin, register_host
from vcenter.db.models import Event, Task, VirtualMachine
from vcenter.db.session import session_scope
from vcenter.messaging.contracts import HA_PASSES_KEY, ha_datastore_view_key, heartbeat_key
from vcenter.services.ha.ha_monitor import LOCK_KEY, HaMonitorProcess


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def env(settings):
    # The tests step their monitors by hand on a clock of their own; the lock's TTL is Redis'
    # real time: long enough that a slow step on a loaded machine does not lose it (the test
    # of a takeover shortens it for itself).
    settings = settings.model_copy(update={"ha_lock_ttl": 30.0, "ha_period": 0.1})
    r = redis.Redis.from_url(settings.redis_url)
    r.delete(LOCK_KEY, *[heartbeat_key(i) for i in range(1, 10)], *[ha_datastore_view_key(i) for i in range(1, 10)])
    make_admin(settings)
    with TestClient(app_for(settings)) as client:
        auth = login(client)
        dc = client.post("/api/v1/datacenters", json={"name": "dc"}, headers=auth).json()
        cl = client.post("/api/v1/clusters", json={"name": "cl", "datacenter_id": dc["id"]}, headers=auth).json()
        hosts, agents = [], {}
        for name in ("h1", "h2", "h3"):
            host, agent = register_host(client, auth, dc["id"], name, cluster_id=cl["id"])
            client.post(f"/api/v1/agent/hosts/{host['id']}/state", headers=agent, json={"facts": {"hostname": name, "cpu_cores": 4, "cpu_mhz": 2000, "memory_mib": 4096}, "domains": []})
            hosts.append(host)
            agents[host["id"]] = agent
        vms = []
        for i, mem in enumerate((1500, 1500, 1000)):
            task = client.post("/api/v1/vms", headers=auth, json={"name": f"vm{i}", "host_id": hosts[0]["id"], "memory_mib": mem, "vcpus": 1}).json()
            vms.append(finish_as_agent(client, settings, agents[hosts[0]["id"]], task))
        yield client, auth, cl, hosts, agents, vms, settings, r
    # Leave no heartbeat or view behind for the next test (host ids restart at 1).
    r.delete(LOCK_KEY, *[heartbeat_key(i) for i in range(1, 10)], *[ha_datastore_view_key(i) for i in range(1, 10)])


def _power_on(client, auth, settings, agents, vm):
    task = client.post(f"/api/v1/vms/{vm['id']}/power/on", headers=auth)
    if task.status_code != 202:
        return task
    finish_as_agent(client, settings, agents[task.json()["host_id"]], task.json(), power_state="poweredOn")
    return task


def test_configuration_overrides_admission_and_capacity(env):
    client, auth, cl, hosts, agents, vms, settings, _ = env
    base = f"/api/v1/clusters/{cl['id']}/ha"
    cfg = client.get(base, headers=auth).json()
    assert cfg["enabled"] is False and cfg["detection_s"] == 5.0 and cfg["default_priority"] == "medium"
    bad = client.patch(base, headers=auth, json={"isolation_response": "explode"})
    assert bad.status_code == 422
    bad = client.patch(base, headers=auth, json={"isolation_addresses": ["no-port"]})
    assert bad.status_code == 422
    bad = client.patch(base, headers=auth, json={"admission": {"kind": "failover-hosts", "failover_hosts": [999]}})
    assert bad.status_code == 422 and bad.json()["code"] == "INVALID_REFERENCE"
    cfg = client.patch(
        base,
        headers=auth,
        json={
            "enabled": True,
            "detection_s": 3,
            "isolation_response": "power-off",
            "isolation_delay_s": 2,
            "isolation_addresses": ["10.0.0.1:22"],
            "admission": {"kind": "host-failures", "host_failures": 1},
            "vm_monitoring": {"enabled": True, "failure_interval_s": 20},
        },
    ).json()
    assert cfg["enabled"] and cfg["admission"]["host_failures"] == 1 and cfg["vm_monitoring"]["failure_interval_s"] == 20
    o = client.put(f"/api/v1/vms/{vms[2]['id']}/ha", headers=auth, json={"restart_priority": "high", "vm_monitoring": False})
    assert o.status_code == 200 and o.json()["restart_priority"] == "high"
    assert client.get(f"/api/v1/vms/{vms[2]['id']}/ha", headers=auth).json()["restart_priority"] == "high"
    assert client.put(f"/api/v1/vms/{vms[2]['id']}/ha", headers=auth, json={"restart_priority": "urgent"}).status_code == 422
    assert client.get(base, headers=auth).json()["vm_overrides"][str(vms[2]["id"])]["restart_priority"] == "high"
    # Three hosts of 4096 MiB, one failure tolerated: 8192 MiB usable for VMs.
    assert _power_on(client, auth, settings, agents, vms[0]).status_code == 202
    cap = client.get(f"{base}/capacity", headers=auth).json()
    assert cap["ok"] and cap["tolerated_host_failures"] >= 1 and cap["reserved_memory_mib"] == 4096 and cap["used_memory_mib"] == 1500
    # The reserve is what DRS and DPM keep free (one host of three).
    from vcenter.db.models import Cluster
    from vcenter.services.drs import dpm, drs

    with session_scope(settings.database_url) as s:
        c = s.get(Cluster, cl["id"])
        assert abs(drs.drs_settings(c).ha.fraction - 1 / 3) < 1e-6 and abs(dpm.dpm_settings(c).ha.fraction - 1 / 3) < 1e-6
    assert abs(cap["ha_reserve_fraction"] - 1 / 3) < 1e-6
    # Fill up to the reserve; the next power-on would leave too little for a failover.
    for i in range(5):
        t = client.post("/api/v1/vms", headers=auth, json={"name": f"big{i}", "host_id": hosts[(i + 1) % 3]["id"], "memory_mib": 1500, "vcpus": 1}).json()
        v = finish_as_agent(client, settings, agents[t["host_id"]], t)
        r = _power_on(client, auth, settings, agents, v)
        if r.status_code != 202:
            break
    assert i == 4 and r.status_code == 409 and r.json()["code"] == "HA_ADMISSION_REFUSED" and "tolerates 0" in r.json()["message"], r.text
    with session_scope(settings.database_url) as s:
        assert s.scalar(select(Event).where(Event.kind == "vm.powerOn.refused", Event.reason == "HA_ADMISSION_REFUSED")) is not None
    # Dedicated failover host: no migration onto it.
    client.patch(base, headers=auth, json={"admission": {"kind": "failover-hosts", "failover_hosts": [hosts[2]["id"]]}})
    m = client.post(f"/api/v1/vms/{vms[0]['id']}/migrate", headers=auth, json={"host_id": hosts[2]["id"]})
    assert m.status_code == 409 and m.json()["code"] == "HA_ADMISSION_REFUSED" and "failover host" in m.json()["message"], m.text
    cap = client.get(f"{base}/capacity", headers=auth).json()
    assert cap["policy"] == "failover-hosts" and cap["failover_hosts"] == [hosts[2]["id"]]


def _beat(r, hosts, skip=(), n=[0]):
    n[0] += 1
    for h in hosts:
        if h["id"] not in skip:
            r.set(heartbeat_key(h["id"]), str(n[0]), px=3000)


def test_the_active_monitor_counts_its_passes_in_redis(env):
    """HA_PASSES_KEY: one more for each pass the active monitor completed; a standby's steps
    count nothing (the lab waits on it to prove that HA did nothing)."""
    client, auth, cl, hosts, agents, vms, settings, r = env
    r.delete(HA_PASSES_KEY)
    clock = Clock()
    a = HaMonitorProcess(client.app.state.runtime, owner="a", clock=clock)
    b = HaMonitorProcess(client.app.state.runtime, owner="b", clock=clock)
    assert a.try_acquire() and not b.try_acquire()
    for _ in range(3):
        _beat(r, hosts)
        a.step()
        b.step()
        clock.t += 1
    assert int(r.get(HA_PASSES_KEY) or 0) == 3


def test_monitor_detects_restarts_fails_over_and_freezes(env):
    client, auth, cl, hosts, agents, vms, settings, r = env
    client.patch(f"/api/v1/clusters/{cl['id']}/ha", headers=auth, json={"enabled": True, "detection_s": 5, "admission": {"kind": "disabled"}})
    for vm in vms[:2]:
        assert _power_on(client, auth, settings, agents, vm).status_code == 202
    client.put(f"/api/v1/vms/{vms[1]['id']}/ha", headers=auth, json={"restart_priority": "high"})
    # a lock that expires within a second of the active monitor's death
    runtime = dataclasses.replace(client.app.state.runtime, settings=settings.model_copy(update={"ha_lock_ttl": 1.0}))
    clock = Clock()
    a = HaMonitorProcess(runtime, owner="a", clock=clock)
    b = HaMonitorProcess(runtime, owner="b", clock=clock)
    assert a.try_acquire() and not b.try_acquire()  # never two active
    token_a = a.token
    # h2 publishes what it reads on the shared datastore: h1's heartbeat file, holding both VMs.
    uuids = [v["libvirt_uuid"] for v in vms[:2]]

    def ds_view(h1_counter):
        r.set(ha_datastore_view_key(hosts[1]["id"]), px=3000, value=json.dumps({str(hosts[0]["id"]): {"n": h1_counter, "holds": uuids}, str(hosts[1]["id"]): {"n": clock.t, "holds": []}}))

    for _ in range(3):
        _beat(r, hosts)
        ds_view(clock.t)
        a.step()
        clock.t += 1
    # h1 dies: both channels stop. Nothing for 5 s, then failed with its evidence.
    for _ in range(5):
        _beat(r, hosts, skip={hosts[0]["id"]})
        ds_view(1002.0)
        a.step()
        clock.t += 1
    assert a.health.get(str(hosts[0]["id"]), "connected") != "failed" or clock.t - 1002 > 5
    for _ in range(3):
        _beat(r, hosts, skip={hosts[0]["id"]})
        ds_view(1002.0)
        a.step()
        clock.t += 1
    with session_scope(settings.database_url) as s:
        ev = s.scalar(select(Event).where(Event.kind == "ha.host.failed"))
        assert ev is not None and ev.object_id == hosts[0]["id"] and ev.data["evidence"]["network_age_s"] > 5 and ev.data["evidence"]["datastore_age_s"] > 5
        restarts = list(s.scalars(select(Task).where(Task.kind == "vm.ha_restart").order_by(Task.id)))
        assert [t.object_id for t in restarts] == [vms[1]["id"], vms[0]["id"]]  # high priority first
        assert all(t.host_id != hosts[0]["id"] and t.params["command"] == "vm.ha_start" and "failed" in t.params["reason"] for t in restarts)
        assert s.scalar(select(Event).where(Event.kind == "ha.vm.restart")).data["token"] == token_a
        restart_tasks = [(t.id, t.host_id, t.object_id) for t in restarts]
    # Restarts run (the target agents report success): the VMs now live on their new hosts.
    for tid, hid, vid in restart_tasks:
        cid = command_id_of(settings, tid)
        vm = client.get(f"/api/v1/vms/{vid}", headers=auth).json()
        client.post(
            f"/api/v1/agent/hosts/{hid}/tasks/{tid}/result",
            headers=agents[hid],
            json={"command_id": cid, "ok": True, "domain": {"uuid": vm["libvirt_uuid"], "name": vm["name"], "power_state": "poweredOn"}},
        )
        assert client.get(f"/api/v1/vms/{vid}", headers=auth).json()["host_id"] == hid
    status = client.get(f"/api/v1/clusters/{cl['id']}/ha/status", headers=auth).json()
    assert status["restarts"] == [] and next(h for h in status["hosts"] if h["host_id"] == hosts[0]["id"])["health"] == "failed"
    # The active monitor dies (stops renewing); the standby takes over with a higher token and
    # restarts nothing twice.
    import time

    deadline = time.monotonic() + 5
    while not b.try_acquire():
        assert time.monotonic() < deadline, "the standby did not take over within 5 s"
        time.sleep(0.1)
    assert b.token > token_a
    before = client.get("/api/v1/tasks?kind=vm.ha_restart", headers=auth).json()["total"]
    for _ in range(8):
        _beat(r, hosts, skip={hosts[0]["id"]})
        b.step()
        clock.t += 1
    assert client.get("/api/v1/tasks?kind=vm.ha_restart", headers=auth).json()["total"] == before
    # The old monitor wakes up believing it is active: fenced out, writes nothing.
    a.run_pass()
    assert a.token is None
    # Redis unhealthy (the monitor's client points at a dead port): frozen, with the reason.
    b.redis = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_timeout=0.2, socket_connect_timeout=0.2)
    b.run_pass()
    assert b.frozen and "Redis" in b.frozen
    with session_scope(settings.database_url) as s:
        assert s.scalar(select(Event).where(Event.kind == "ha.frozen")) is not None
        assert s.scalar(select(Event).where(Event.kind == "ha.monitor.active", Event.data["owner"].as_string() == "b")) is not None


def test_guests_stopped_by_the_isolation_response_restart_when_their_host_is_back_first(env):
    """The link came back before HA declared the host isolated: the host's report already made
    its VM powered off, but its datastore heartbeat says its isolation response stopped it."""
    client, auth, cl, hosts, agents, vms, settings, r = env
    client.patch(f"/api/v1/clusters/{cl['id']}/ha", headers=auth, json={"enabled": True, "admission": {"kind": "disabled"}})
    vm = vms[0]  # on h1, powered off as the reconciled report left it
    clock = Clock()
    m = HaMonitorProcess(client.app.state.runtime, owner="m", clock=clock)
    assert m.try_acquire()
    view = {str(hosts[0]["id"]): {"n": 1, "holds": [], "released": [vm["libvirt_uuid"]], "isolated": False}}
    for i in range(3):
        _beat(r, hosts)
        view[str(hosts[0]["id"])]["n"] = i
        r.set(ha_datastore_view_key(hosts[1]["id"]), json.dumps(view))
        m.step()
        clock.t += 1
    with session_scope(settings.database_url) as s:
        task = s.scalar(select(Task).where(Task.kind == "vm.ha_restart", Task.object_id == vm["id"]))
        assert task is not None and "isolation response" in task.params["reason"]
    # Another VM of that host, powered off but not listed as released, is left alone.
    assert client.get("/api/v1/tasks?kind=vm.ha_restart", headers=auth).json()["total"] == 1


def test_dedicated_failover_host_is_never_chosen_by_placement_or_drs(env):
    """h3 is a dedicated failover host and the emptiest one: deploy, the placement dry run, a
    power-on on it and DRS all keep it empty, each with a clear reason; HA restarts still go there."""
    client, auth, cl, hosts, agents, vms, settings, r = env
    h1, h2, h3 = (h["id"] for h in hosts)
    base = f"/api/v1/clusters/{cl['id']}/ha"
    assert client.patch(base, headers=auth, json={"enabled": True, "admission": {"kind": "failover-hosts", "failover_hosts": [h3]}}).status_code == 200
    for vm in vms[:2]:  # 3000 MiB on h1, nothing elsewhere
        assert _power_on(client, auth, settings, agents, vm).status_code == 202
    w = finish_as_agent(client, settings, agents[h2], client.post("/api/v1/vms", headers=auth, json={"name": "w", "host_id": h2, "memory_mib": 1500, "vcpus": 1}).json())
    assert _power_on(client, auth, settings, agents, w).status_code == 202
    dry = client.post(f"/api/v1/clusters/{cl['id']}/placement", headers=auth, json={"memory_mib": 200}).json()
    assert {c["host"] for c in dry["candidates"]} == {str(h1), str(h2)}
    (rej,) = [x for x in dry["rejected"] if x["host"] == str(h3)]
    assert rej["filters"] == ["FailoverHostFilter"] and "failover host" in rej["reasons"][0]
    # Deploy without a host: the emptiest host is h3, yet the VM goes to h2.
    task = client.post("/api/v1/vms", headers=auth, json={"name": "auto", "cluster_id": cl["id"], "memory_mib": 200}).json()
    assert task["host_id"] == h2 and task["placement"]["host"] == str(h2), task
    # A VM registered on h3 cannot power on there.
    stray = finish_as_agent(client, settings, agents[h3], client.post("/api/v1/vms", headers=auth, json={"name": "stray", "host_id": h3, "memory_mib": 200, "vcpus": 1}).json())
    refused = client.post(f"/api/v1/vms/{stray['id']}/power/on", headers=auth)
    assert refused.status_code == 409 and refused.json()["code"] == "HA_ADMISSION_REFUSED" and "failover host" in refused.json()["message"], refused.text
    # DRS: h1 holds twice h2's memory; the only move that gains would go to h3: none is made.
    current = client.get(f"/api/v1/clusters/{cl['id']}", headers=auth).json()
    drs_on = {**current["settings"], "drs": {**(current["settings"].get("drs") or {}), "enabled": True, "automation": "manual"}}
    assert client.patch(f"/api/v1/clusters/{cl['id']}", headers=auth, json={"settings": drs_on, "version": current["version"]}).status_code == 200
    plan = client.post(f"/api/v1/clusters/{cl['id']}/drs/run", headers=auth).json()
    assert all(x["target_host_id"] != h3 for x in plan["recommendations"]), plan
    # Without the policy, DRS does use h3 (the check above can fail).
    assert client.patch(base, headers=auth, json={"admission": {"kind": "disabled"}}).status_code == 200
    free = client.post(f"/api/v1/clusters/{cl['id']}/drs/run", headers=auth).json()
    assert any(x["target_host_id"] == h3 for x in free["recommendations"]), free
    assert client.post(f"/api/v1/clusters/{cl['id']}/placement", headers=auth, json={"memory_mib": 200}).json()["rejected"] == []


def test_restarts_wake_a_standby_host_through_its_power_driver_and_wait_for_it(env):
    """h1 fails; h2 is nearly full and h3 sleeps (standby, Wake-on-LAN aimed at a UDP socket
    of this test). The monitor asks h3's power driver to power it on (a host.exitStandby Task,
    a real magic packet on the wire, once however many passes wait), the VMs wait for it with
    that reason, and once h3's agent reports again they restart there."""
    import socket

    from vcenter.power.drivers import magic_packet

    client, auth, cl, hosts, agents, vms, settings, r = env
    h1, h2, h3 = (h["id"] for h in hosts)
    mac = "52:54:00:ab:cd:ef"
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    with sock:
        current = client.get(f"/api/v1/hosts/{h3}", headers=auth).json()
        assert (
            client.patch(
                f"/api/v1/hosts/{h3}", headers=auth, json={"power": {"type": "wol", "mac": mac, "broadcast": "127.0.0.1", "port": sock.getsockname()[1], "repeat": 1}, "version": current["version"]}
            ).status_code
            == 200
        )
        assert client.post(f"/api/v1/hosts/{h3}/standby/enter", headers=auth).json()["standby"] is True
        assert client.patch(f"/api/v1/clusters/{cl['id']}/ha", headers=auth, json={"enabled": True, "detection_s": 5, "admission": {"kind": "disabled"}}).status_code == 200
        for vm in vms[:2]:  # 2 x 1500 MiB on h1
            assert _power_on(client, auth, settings, agents, vm).status_code == 202
        big = finish_as_agent(client, settings, agents[h2], client.post("/api/v1/vms", headers=auth, json={"name": "big", "host_id": h2, "memory_mib": 3000, "vcpus": 1}).json())
        assert _power_on(client, auth, settings, agents, big).status_code == 202  # h2 keeps 1096 MiB free: neither fits
        clock = Clock()
        m = HaMonitorProcess(client.app.state.runtime, owner="m", clock=clock)
        assert m.try_acquire()
        up = {h1, h2}
        sock.settimeout(0.05)

        def beat_and_step(n):
            for _ in range(n):
                _beat(r, [{"id": h} for h in up])
                m.step()
                clock.t += 1

        beat_and_step(2)
        up.discard(h1)  # h1 loses power
        beat_and_step(9)
        with session_scope(settings.database_url) as s:
            assert s.scalar(select(Event).where(Event.kind == "ha.host.failed", Event.object_id == h1)) is not None
            wakes = list(s.scalars(select(Task).where(Task.kind == "host.exitStandby")))
            assert [(t.object_id, t.state, t.username) for t in wakes] == [(h3, "running", "ha")], wakes
            assert s.scalar(select(Task).where(Task.kind == "vm.ha_restart")) is None
            assert s.scalar(select(Event).where(Event.kind == "ha.host.wake_failed")) is None
        data, _ = sock.recvfrom(1024)
        assert data == magic_packet(mac)
        with pytest.raises(socket.timeout):  # one packet however many passes waited
            sock.recvfrom(1024)
        status = client.get(f"/api/v1/clusters/{cl['id']}/ha/status", headers=auth).json()
        assert {x["vm_id"] for x in status["restarts"]} == {vms[0]["id"], vms[1]["id"]}
        assert all(x["state"] == "waiting" and f"standby host {h3} to power on" in x["reason"] for x in status["restarts"]), status["restarts"]
        # h3 boots: its agent writes its heartbeat and reports; the next pass restarts there.
        up.add(h3)
        _beat(r, [{"id": h3}])
        client.post(f"/api/v1/agent/hosts/{h3}/state", headers=agents[h3], json={"facts": {"hostname": "h3", "cpu_cores": 4, "cpu_mhz": 2000, "memory_mib": 4096}, "domains": []})
        beat_and_step(2)
        assert client.get(f"/api/v1/hosts/{h3}", headers=auth).json()["standby"] is False
        with session_scope(settings.database_url) as s:
            assert s.scalar(select(Task).where(Task.kind == "host.exitStandby")).state == "success"
            restarts = [(t.object_id, t.host_id) for t in s.scalars(select(Task).where(Task.kind == "vm.ha_restart").order_by(Task.object_id))]
        assert restarts == [(vms[0]["id"], h3), (vms[1]["id"], h3)], restarts


def test_vms_that_stopped_unexpectedly_restart_and_those_stopped_on_purpose_do_not(env):
    """A host report finds a powered-on VM shut off with no lifecycle event seen (its host
    rebooted faster than the detection time): restarted, cause crashed. A VM whose QEMU died
    (lifecycle "crashed"): restarted. A VM its user powered off, a guest that shut itself down:
    left alone, as is one that crashed before HA was enabled. Each stop is handled once: further
    passes start nothing more."""
    client, auth, cl, hosts, agents, vms, settings, r = env
    extra = client.post("/api/v1/vms", headers=auth, json={"name": "vm3", "host_id": hosts[0]["id"], "memory_mib": 64, "vcpus": 1}).json()
    vms = [*vms, finish_as_agent(client, settings, agents[hosts[0]["id"]], extra)]
    early = client.post("/api/v1/vms", headers=auth, json={"name": "early", "host_id": hosts[1]["id"], "memory_mib": 64, "vcpus": 1}).json()
    early = finish_as_agent(client, settings, agents[hosts[1]["id"]], early)
    for vm in [*vms, early]:
        assert _power_on(client, auth, settings, agents, vm).status_code == 202
    h1, agent1 = hosts[0]["id"], agents[hosts[0]["id"]]

    def event(vm, reason):
        return {"uuid": vm["libvirt_uuid"], "name": vm["name"], "event": "stopped", "reason": reason, "power_state": "poweredOff", "at": "2026-01-01T00:00:00Z"}

    # One crashed before HA protected its cluster: not HA's to restart once HA is enabled.
    client.post(f"/api/v1/agent/hosts/{hosts[1]['id']}/events", headers=agents[hosts[1]["id"]], json=[event(early, "crashed")])
    client.patch(f"/api/v1/clusters/{cl['id']}/ha", headers=auth, json={"enabled": True, "admission": {"kind": "disabled"}})
    rebooted, crashed, user_off, guest_off = vms
    # The user powers one off (its Task's result says poweredOff, then libvirt's event).
    task = client.post(f"/api/v1/vms/{user_off['id']}/power/off", headers=auth).json()
    finish_as_agent(client, settings, agent1, task, power_state="poweredOff")
    client.post(f"/api/v1/agent/hosts/{h1}/events", headers=agent1, json=[event(user_off, "destroyed"), event(guest_off, "shutdown"), event(crashed, "crashed")])
    # h1's report after its reboot: nothing runs there any more.
    client.post(
        f"/api/v1/agent/hosts/{h1}/state",
        headers=agent1,
        json={"facts": {"hostname": "h1", "cpu_cores": 4, "cpu_mhz": 2000, "memory_mib": 4096}, "domains": [{"uuid": v["libvirt_uuid"], "name": v["name"], "power_state": "poweredOff"} for v in vms]},
    )
    assert client.get(f"/api/v1/vms/{rebooted['id']}", headers=auth).json()["last_stop_reason"] == "unobserved"
    clock = Clock()

    def passes(monitor):
        for _ in range(3):
            _beat(r, hosts)
            monitor.step()
            clock.t += 1

    m = HaMonitorProcess(client.app.state.runtime, owner="m", clock=clock)
    assert m.try_acquire()
    passes(m)
    with session_scope(settings.database_url) as s:
        tasks = list(s.scalars(select(Task).where(Task.kind == "vm.ha_restart").order_by(Task.object_id)))
        assert [t.object_id for t in tasks] == sorted([rebooted["id"], crashed["id"]])
        assert all(t.params["cause"] == "crashed" and "stopped unexpectedly" in t.params["reason"] for t in tasks)
        down = list(s.scalars(select(Event).where(Event.kind == "ha.vm.down")))
        assert sorted(e.object_id for e in down) == sorted([rebooted["id"], crashed["id"]])
        assert all(e.reason == "HA_CRASHED" and "stopped unexpectedly" in e.message for e in down)
        assert s.scalar(select(VirtualMachine.id).where(VirtualMachine.unexpected_stop.is_not(None))) is None  # consumed
    # A standby taking over finds nothing left to handle: nothing started twice.
    m.release()
    other = HaMonitorProcess(client.app.state.runtime, owner="o", clock=clock)
    assert other.try_acquire()
    passes(other)
    assert client.get("/api/v1/tasks?kind=vm.ha_restart", headers=auth).json()["total"] == 2
