"""HA decisions (vcenter.domain.ha): liveness on two channels, freezes, restart planning,
admission control, VM monitoring, isolation; and the HA scenarios' invariants have teeth."""

from __future__ import annotations

from pathlib import Path

import pytest

from vcenter.domain import ha
from vcenter.domain.ha import HostHealth as H
from vcenter.domain.snapshot import ClusterSnapshot, HostSnapshot, Rule, RuleKind, VmSnapshot
from vcenter.sim.runner import run_scenario, scenario_dirs

DET = ha.DetectionSettings(detection_s=5.0)


def obs(h, net, ds=None, channel=True, monitored=True):
    return ha.HostObservation(h, net, ds, channel, monitored)


def view(now, since=0.0, redis=True):
    return ha.MonitorView(now, since, redis, "" if redis else "refused")


# -- detection -------------------------------------------------------------------------------


def test_both_channels_silent_past_detection_is_failed_not_before():
    o = [obs("h1", 0.0, 0.0), obs("h2", 5.0, 5.0), obs("h3", 5.0, 5.0)]
    assert ha.judge({}, o, view(5.0), DET).health["h1"] == H.CONNECTED
    j = ha.judge({}, o, view(5.5), DET)
    assert j.health["h1"] == H.FAILED and j.frozen is None
    (t,) = j.transitions
    assert t.evidence["network_age_s"] == 5.5 and t.evidence["datastore_age_s"] == 5.5
    assert "failed" in t.reason


def test_network_silent_datastore_alive_is_isolated():
    o = [obs("h1", 0.0, 9.9), obs("h2", 9.9, 9.9), obs("h3", 9.9, 9.9)]
    j = ha.judge({}, o, view(10.0), DET)
    assert j.health["h1"] == H.ISOLATED
    assert "isolated, not failed" in j.transitions[0].reason


def test_host_without_datastore_channel_fails_on_network_alone():
    o = [obs("h1", 0.0, None, channel=False), obs("h2", 9.0, 9.0), obs("h3", 9.0, 9.0)]
    j = ha.judge({}, o, view(9.0), DET)
    assert j.health["h1"] == H.FAILED and "no datastore heartbeat channel" in j.transitions[0].reason


def test_redis_unhealthy_freezes_and_keeps_states():
    o = [obs("h1", 0.0, 0.0), obs("h2", 0.0, 0.0)]
    j = ha.judge({"h1": H.CONNECTED}, o, view(100.0, redis=False), DET)
    assert j.frozen and "Redis" in j.frozen
    assert j.transitions == () and j.health["h1"] == H.CONNECTED


def test_silence_counts_only_while_observing():
    # Redis came back (or the monitor took over) at t=50: a heartbeat last seen at 0 is 2 s old.
    o = [obs("h1", 0.0, 0.0), obs("h2", 51.0, 51.0), obs("h3", 51.0, 51.0)]
    assert ha.judge({}, o, view(52.0, since=50.0), DET).health["h1"] == H.CONNECTED
    assert ha.judge({}, o, view(55.5, since=50.0), DET).health["h1"] == H.FAILED


def test_declared_host_returns_only_on_a_fresh_sighting():
    o = [obs("h1", 0.0, 0.0), obs("h2", 60.0, 60.0), obs("h3", 60.0, 60.0)]
    j = ha.judge({"h1": H.FAILED}, o, view(60.0, since=59.0), DET)  # a monitor that just took over
    assert j.health["h1"] == H.FAILED and j.transitions == ()
    o[0] = obs("h1", 60.0, 60.0)
    assert ha.judge({"h1": H.FAILED}, o, view(60.0, since=59.0), DET).health["h1"] == H.CONNECTED


def test_mass_silence_freezes_with_reason_but_one_host_does_not():
    o = [obs("h1", 0.0, 0.0), obs("h2", 0.0, 0.0), obs("h3", 0.0, 0.0), obs("h4", 9.0, 9.0)]
    j = ha.judge({}, o, view(9.0), DET)
    assert j.frozen and "3 of 4" in j.frozen
    assert all(v == H.CONNECTED for v in j.health.values())
    o2 = [obs("h1", 0.0, 0.0), obs("h2", 9.0, 9.0), obs("h3", 9.0, 9.0), obs("h4", 9.0, 9.0)]
    assert ha.judge({}, o2, view(9.0), DET).frozen is None


def test_unmonitored_hosts_are_not_judged():
    j = ha.judge({}, [obs("h1", None, None, monitored=False), obs("h2", 9.0, 9.0)], view(9.0), DET)
    assert "h1" not in j.health


# -- restarts --------------------------------------------------------------------------------


def snap(*hosts, vms=(), rules=()):
    return ClusterSnapshot(hosts=tuple(hosts), vms=tuple(vms), rules=tuple(rules))


def host(h, mem=16384, **kw):
    return HostSnapshot(h, cores=8, memory_mib=mem, cpu_mhz=8 * 2500, **kw)


def cand(v, mem=4096, prio=ha.Priority.MEDIUM, holder="h1", **kw):
    return ha.RestartCandidate(VmSnapshot(v, memory_mib=mem, vcpus=1), prio, "h1", holder, **kw)


DEAD = {"h1": H.FAILED, "h2": H.CONNECTED, "h3": H.CONNECTED}


def test_restart_in_priority_order_and_disabled_skipped():
    s = snap(host("h1", connection="notResponding"), host("h2", mem=8192))
    cs = [cand("low", 4096, ha.Priority.LOW), cand("hi", 4096, ha.Priority.HIGH), cand("med", 4096, ha.Priority.MEDIUM), cand("no", 1024, ha.Priority.DISABLED)]
    p = ha.plan_restarts(s, cs, DEAD, now=10.0, settings=ha.RestartSettings(max_attempts=5))
    assert [x.vm_id for x in p.starts] == ["hi", "med"]
    assert p.waits[0].vm_id == "low" and p.waits[0].until == 12.0 and "no host fits" in p.waits[0].reason
    assert p.skipped[0].vm_id == "no"


def test_held_disks_block_restart_until_holder_failed():
    s = snap(host("h1", connection="notResponding"), host("h2"))
    p = ha.plan_restarts(s, [cand("a")], {"h1": H.ISOLATED, "h2": H.CONNECTED}, 0.0)
    assert p.starts == () and "disks held by h1" in p.waits[0].reason
    assert ha.plan_restarts(s, [cand("a")], {"h1": H.FAILED, "h2": H.CONNECTED}, 0.0).starts[0].host_id == "h2"
    assert ha.plan_restarts(s, [cand("a", holder=None, cause="released")], {"h1": H.ISOLATED, "h2": H.CONNECTED}, 0.0).starts


def test_released_waits_until_the_monitor_sees_the_host_cut_off():
    s = snap(host("h1"), host("h2"))
    p = ha.plan_restarts(s, [cand("a", holder=None, cause="released")], {"h1": H.CONNECTED, "h2": H.CONNECTED}, 0.0)
    assert p.starts == () and "does not see isolated" in p.waits[0].reason


def test_frozen_plans_nothing():
    s = snap(host("h1", connection="notResponding"), host("h2"))
    p = ha.plan_restarts(s, [cand("a")], DEAD, 0.0, frozen="Redis unhealthy")
    assert p.starts == () and "frozen" in p.waits[0].reason


def test_backoff_and_give_up():
    rs = ha.RestartSettings(retry_base_s=2, retry_max_s=10, max_attempts=4)
    assert [rs.backoff(n) for n in (1, 2, 3, 4, 5)] == [2, 4, 8, 10, 10]
    s = snap(host("h1", connection="notResponding"), host("h2", mem=1024))
    p = ha.plan_restarts(s, [cand("a", attempts=3)], DEAD, 50.0, rs)
    assert p.gave_up and p.gave_up[0].attempts == 4
    p = ha.plan_restarts(s, [cand("a", attempts=1, next_try_at=60.0)], DEAD, 50.0, rs)
    assert p.waits[0].until == 60.0 and not p.gave_up
    assert ha.after_failed_start(cand("a", attempts=1), 10.0, rs) == (2, 14.0)
    assert ha.after_failed_start(cand("a", attempts=3), 10.0, rs) == (4, None)


def test_rules_kept_and_failover_hosts_first():
    rule = Rule("apart", RuleKind.ANTI_AFFINITY, True, frozenset({"a", "b"}))
    s = snap(host("h1", connection="notResponding"), host("h2"), host("h3"), vms=[VmSnapshot("b", memory_mib=1024, vcpus=1, host="h2")], rules=[rule])
    p = ha.plan_restarts(s, [cand("a")], DEAD, 0.0)
    assert p.starts[0].host_id == "h3"
    s2 = snap(host("h1", connection="notResponding"), host("h2"), host("h3"))
    assert ha.plan_restarts(s2, [cand("a")], DEAD, 0.0, failover_hosts=["h3"]).starts[0].host_id == "h3"


def test_wake_standby_when_short():
    s = snap(host("h1", connection="notResponding"), host("h2", mem=2048), host("h3", standby=True))
    p = ha.plan_restarts(s, [cand("a")], DEAD, 0.0)
    assert p.wake == ("h3",) and "standby host h3" in p.waits[0].reason


def test_place_1000_vms_of_failed_hosts():
    hosts = [HostSnapshot(f"h{i}", cores=64, memory_mib=262144, cpu_mhz=64 * 2500, connection="notResponding" if i < 10 else "connected") for i in range(50)]
    cs = [ha.RestartCandidate(VmSnapshot(f"v{i}", memory_mib=2048, vcpus=2), ha.Priority.MEDIUM, f"h{i % 10}", f"h{i % 10}") for i in range(1000)]
    health = {h.id: (H.FAILED if h.connection != "connected" else H.CONNECTED) for h in hosts}
    p = ha.plan_restarts(snap(*hosts), cs, health, 0.0)
    failed = {f"h{i}" for i in range(10)}
    assert len(p.starts) == 1000 and not any(x.host_id in failed for x in p.starts)


# -- reconcile, fencing ----------------------------------------------------------------------


def test_reconcile_verdicts():
    r = {
        x.vm_id: x.verdict
        for x in ha.reconcile(
            {"ok": "h2", "moved": "h2", "dup": "h2", "dead": "h1", "stopped": "h2", "unknown": "h4"},
            {"ok": ["h2"], "moved": ["h3"], "dup": ["h2", "h3"]},
            known_hosts=["h2", "h3"],
            health={"h1": H.FAILED},
        )
    }
    assert r == {"ok": "ok", "moved": "moved", "dup": "duplicate", "dead": "restart", "stopped": "stopped", "unknown": "unknown"}


def test_fencing_token():
    assert ha.fence_ok(5, 5) and ha.fence_ok(6, 5) and not ha.fence_ok(4, 5)


# -- admission -------------------------------------------------------------------------------


def test_host_failures_policy():
    hs = [host("h1"), host("h2"), host("h3")]
    vms = [VmSnapshot("a", memory_mib=10240, vcpus=1, host="h1"), VmSnapshot("b", memory_mib=10240, vcpus=1, host="h2")]
    pol = ha.AdmissionPolicy(ha.AdmissionKind.HOST_FAILURES, host_failures=1)
    cap = ha.failover_capacity(snap(*hs, vms=vms), pol)
    assert cap.ok and cap.tolerated_host_failures == 1 and cap.reserved_memory_mib == 16384
    d = ha.admit(snap(*hs, vms=vms), VmSnapshot("c", memory_mib=14336, vcpus=1), None, pol)
    assert not d.ok and d.code == "HA_ADMISSION_REFUSED" and "tolerates 0" in d.reason
    assert ha.admit(snap(*hs, vms=vms), VmSnapshot("c", memory_mib=8192, vcpus=1), None, pol).ok
    # a migration within the cluster does not change the aggregate
    assert ha.admit(snap(*hs, vms=vms), vms[0], "h3", pol, action="migration").ok


def test_percentage_and_failover_host_policies():
    hs = [host("h1"), host("h2")]
    pol = ha.AdmissionPolicy(ha.AdmissionKind.PERCENTAGE, memory_percent=50, cpu_percent=0)
    assert ha.admit(snap(*hs), VmSnapshot("a", memory_mib=16384, vcpus=1), None, pol).ok
    assert not ha.admit(snap(*hs), VmSnapshot("a", memory_mib=16385, vcpus=1), None, pol).ok
    fo = ha.AdmissionPolicy(ha.AdmissionKind.FAILOVER_HOSTS, failover_hosts=frozenset({"h2"}))
    d = ha.admit(snap(*hs), VmSnapshot("a", memory_mib=1024, vcpus=1), "h2", fo)
    assert not d.ok and "dedicated failover host" in d.reason
    assert ha.reserved_hosts(fo) == {"h2"}
    assert ha.ha_reserve_fraction(snap(*hs), pol) == 0.5
    with pytest.raises(ValueError):
        ha.AdmissionPolicy(ha.AdmissionKind.PERCENTAGE, memory_percent=120)


# -- VM monitoring ---------------------------------------------------------------------------

MON = ha.VmMonitoringSettings(True, failure_interval_s=30, min_uptime_s=60, max_resets=3, window_s=3600)


def test_vm_monitoring_reset_and_limits():
    w = ha.VmWatch("a", True, True, started_at=0.0, heartbeat_seen_at=100.0)
    assert ha.watch_vm(w, 120.0, 0.0, MON).action == "none"
    v = ha.watch_vm(w, 131.0, 0.0, MON)
    assert v.action == "reset" and v.evidence["heartbeat_age_s"] == 31.0
    w3 = ha.VmWatch("a", True, True, 0.0, 100.0, resets=(200.0, 300.0, 400.0))
    assert ha.watch_vm(w3, 500.0, 0.0, MON).action == "limit"
    assert ha.watch_vm(w3, 3801.0, 0.0, MON).action == "reset"  # the first reset left the window
    assert ha.watch_vm(ha.VmWatch("a", True, True, 0.0, None), 999.0, 0.0, MON).action == "none"  # never had a heartbeat
    assert ha.watch_vm(ha.VmWatch("a", True, True, 990.0, 100.0), 1000.0, 0.0, MON).action == "none"  # just started
    assert ha.watch_vm(w, 131.0, 120.0, MON).action == "none"  # the monitor only just started watching


# -- isolation -------------------------------------------------------------------------------


def test_isolation_needs_redis_and_every_address_silent():
    assert ha.isolated(ha.IsolationView(10.0, 0.0, redis_ok_at=0.0, probe_ok_at=0.0), 5.0)[0]
    ok, why = ha.isolated(ha.IsolationView(10.0, 0.0, redis_ok_at=0.0, probe_ok_at=9.0), 5.0)
    assert not ok and "isolation address answered" in why  # a Redis restart alone
    assert not ha.isolated(ha.IsolationView(10.0, 0.0, redis_ok_at=8.0, probe_ok_at=None), 5.0)[0]
    assert not ha.isolated(ha.IsolationView(10.0, 7.0, None, None), 5.0)[0]  # just started
    assert ha.isolation_actions(ha.IsolationResponse.LEAVE_ON, ["a"]) == []
    assert ha.isolation_actions(ha.IsolationResponse.POWER_OFF, ["b", "a"]) == [("a", "stop"), ("b", "stop")]


# -- the HA scenarios have teeth -------------------------------------------------------------

HA_DIRS = [d for d in scenario_dirs(Path(__file__).resolve().parents[1] / "scenarios") if "-ha-" in d.name and int(d.name[:2]) >= 60]


def test_there_are_enough_ha_scenarios():
    assert len(HA_DIRS) >= 20


def _failures():
    # Scenarios with a known gap lose VMs anyway: they cannot show a breakage.
    return {d.name: r.failures for d in HA_DIRS if (r := run_scenario(d)).failures and not r.known_gap}


def test_ignoring_disk_holders_breaks_an_invariant(monkeypatch):
    monkeypatch.setattr(ha, "may_restart", lambda c, health: None)
    fails = _failures()
    assert any("disks are held" in f or "runs on 2 hosts" in f for fs in fails.values() for f in fs), fails


def test_ignoring_the_datastore_channel_breaks_an_invariant(monkeypatch):
    real = ha.judge

    def no_ds(prev, observations, view, settings=DET):
        return real(prev, [ha.HostObservation(o.host_id, o.net_seen_at, None, False, o.monitored) for o in observations], view, settings)

    monkeypatch.setattr(ha, "judge", no_ds)
    fails = _failures()
    assert any("held by live host" in f or "hosts" in f for fs in fails.values() for f in fs), fails


def test_restarting_nothing_loses_vms(monkeypatch):
    monkeypatch.setattr(ha, "plan_restarts", lambda *a, **k: ha.RestartPlan())
    fails = _failures()
    assert any("lost" in f for fs in fails.values() for f in fs), fails


def test_stamps_tell_a_dead_host_from_an_isolated_one():
    # Network silent 6 s; the datastore channel still looks fresh (it is observed late).
    dead = ha.HostObservation("h1", 0.0, 4.0, True, net_stamp=500.0, ds_stamp=500.2)  # wrote nothing after its last beat
    alive = ha.HostObservation("h1", 0.0, 5.5, True, net_stamp=500.0, ds_stamp=504.0)  # went on writing
    others = [obs("h2", 6.0, 6.0), obs("h3", 6.0, 6.0)]
    j = ha.judge({}, [dead, *others], view(6.0), DET)
    assert j.health["h1"] == H.FAILED and "no datastore heartbeat written after" in j.transitions[0].reason
    assert ha.judge({}, [alive, *others], view(6.0), DET).health["h1"] == H.ISOLATED


# -- unexpected stops ------------------------------------------------------------------------


def _stop(**kw) -> ha.StoppedVm:
    base = dict(vm_id="a", host="h1", reason="unobserved", power_state="poweredOff", ha_enabled=True, restart_pending=False, busy=False)
    return ha.StoppedVm(**{**base, **kw})


@pytest.mark.parametrize("reason", ["crashed", "unobserved"])
def test_a_vm_that_stopped_unexpectedly_is_restarted(reason):
    assert ha.restart_after_stop(_stop(reason=reason)) is None


@pytest.mark.parametrize(
    "kw, why",
    [
        ({"reason": "shutdown"}, "stopped on purpose (shutdown)"),  # the guest shut itself down
        ({"reason": "destroyed"}, "stopped on purpose (destroyed)"),  # virsh destroy from outside
        ({"reason": "saved"}, "stopped on purpose (saved)"),
        ({"ha_enabled": False}, "its cluster has no HA"),
        ({"restart_pending": True}, "HA already restarts it"),  # its host failed, or released it
        ({"busy": True}, "a task holds it"),  # a migration or a user's power operation
        ({"power_state": "poweredOn"}, "it is poweredOn now"),  # someone started it meanwhile
        ({"power_state": "suspended"}, "it is suspended now"),
        ({"host": None}, "it has no host"),
    ],
)
def test_a_stop_someone_asked_for_or_already_handled_is_not_restarted(kw, why):
    assert ha.restart_after_stop(_stop(**{"reason": "crashed", **kw})) == why


def test_the_monitor_consumes_each_unexpected_stop_once():
    """The loop asks its store for the stops not yet handled, makes candidates of those the
    decision restarts, and hands every one back as handled, fenced by its token."""
    from vcenter.services.ha.ha_manager import HaMonitor, UnexpectedStop

    class Store:
        def __init__(self) -> None:
            self.pending = [
                UnexpectedStop("a", "h1", "ua", _stop(vm_id="a", reason="crashed")),
                UnexpectedStop("b", "h1", "ub", _stop(vm_id="b", reason="shutdown")),
                UnexpectedStop("c", "h2", "uc", _stop(vm_id="c", restart_pending=True)),
            ]
            self.candidates: list[tuple] = []
            self.handled: list[tuple] = []

        def unexpected_stops(self):
            return list(self.pending)

        def add_candidates(self, host, cause, uuids=None, power_state="poweredOn"):
            self.candidates.append((host, cause, list(uuids), power_state))
            return [u[1:] for u in uuids]

        def stops_handled(self, token, stops):
            self.handled.append((token, [s.vm for s in stops]))
            self.pending = [s for s in self.pending if s not in stops]

    m = HaMonitor(env=None, owner="m", redis_return_grace=0.0)  # type: ignore[arg-type]
    m.token = 7
    store = Store()
    assert m.handle_unexpected_stops(store) == ["a"]  # type: ignore[arg-type]
    assert store.candidates == [("h1", "crashed", ["ua"], "poweredOff")]
    assert store.handled == [(7, ["a", "b", "c"])]
    assert m.handle_unexpected_stops(store) == [] and len(store.candidates) == 1  # type: ignore[arg-type]
    assert store.handled == [(7, ["a", "b", "c"])]  # nothing left: no write
