"""Dedicated HA failover hosts (admission policy "failover-hosts"): placement never chooses them
(FailoverHostFilter, with its reason), DRS neither balances onto them nor counts them, HA restart
planning uses them first; and the golden scenario that shows it has teeth."""

from __future__ import annotations

from pathlib import Path

from vcenter.domain import drs, ha, placement
from vcenter.domain.ha import HostHealth as H
from vcenter.domain.snapshot import ClusterSnapshot, HostSnapshot, VmSnapshot
from vcenter.sim.runner import diff, run_scenario

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "87-ha-failover-host-kept-empty"


def host(h, **kw):
    return HostSnapshot(h, **{"cores": 16, "memory_mib": 65536, "cpu_mhz": 16 * 2500, **kw})


def vm(v, on=None, mem=4096, vcpus=4):
    return VmSnapshot(v, memory_mib=mem, vcpus=vcpus, host=on)


def cluster(failover=("h3",), vms=()):
    s = ClusterSnapshot(hosts=(host("h1"), host("h2"), host("h3")), vms=tuple(vms))
    return ha.with_failover_flags(s, failover)


def test_flags_follow_the_reserved_hosts_and_clear():
    s = cluster()
    assert [h.failover for h in s.hosts] == [False, False, True]
    assert ha.with_failover_flags(s, ["h3"]) is s  # unchanged: same snapshot
    assert not any(h.failover for h in ha.with_failover_flags(s, ()).hosts)
    policy = ha.AdmissionPolicy(ha.AdmissionKind.FAILOVER_HOSTS, failover_hosts=frozenset({"h2"}))
    assert ha.reserved_hosts(policy) == {"h2"}
    assert ha.reserved_hosts(ha.AdmissionPolicy(ha.AdmissionKind.HOST_FAILURES, failover_hosts=frozenset({"h2"}))) == frozenset()


def test_placement_never_chooses_a_failover_host_and_says_why():
    # h3 is the emptiest host: without the flag it would win.
    s = cluster(vms=[vm("a", "h1"), vm("b", "h2")])
    assert placement.place(ha.with_failover_flags(s, ()), vm("new")).host == "h3"
    r = placement.place(s, vm("new"))
    assert r.host in ("h1", "h2")
    (rej,) = [x for x in r.rejected if x.host_id == "h3"]
    assert rej.filters == ("FailoverHostFilter",) and "failover host" in rej.reason
    many = placement.place_many(s, [vm(f"n{i}") for i in range(6)])
    assert set(many.placed.values()) <= {"h1", "h2"} and len(many.placed) == 6
    # A VMotion aimed at it is refused by the same filter.
    assert placement.place(s, vm("a", "h1"), only=["h3"]).host is None


def test_only_failover_hosts_left_means_no_placement():
    s = ClusterSnapshot(hosts=(host("h1", connection="notResponding"), host("h3", failover=True)))
    r = placement.place(s, vm("new"))
    assert r.host is None and "FailoverHostFilter" in {f for x in r.rejected for f in x.filters}


def test_ha_restarts_may_use_failover_hosts():
    s = ha.with_failover_flags(ClusterSnapshot(hosts=(host("h1", connection="notResponding"), host("h2", memory_mib=0), host("h3"))), ["h3"])
    cand = ha.RestartCandidate(vm("a"), ha.Priority.MEDIUM, "h1", "h1")
    health = {"h1": H.FAILED, "h2": H.CONNECTED, "h3": H.CONNECTED}
    # Even without naming them (the flag alone): h2 has no room, the failover host takes it.
    assert ha.plan_restarts(s, [cand], health, 0.0).starts[0].host_id == "h3"
    # Named, they are tried first.
    s2 = ha.with_failover_flags(ClusterSnapshot(hosts=(host("h1", connection="notResponding"), host("h2"), host("h3"))), ["h3"])
    assert ha.plan_restarts(s2, [cand], health, 0.0, failover_hosts=["h3"]).starts[0].host_id == "h3"


def test_drs_neither_balances_onto_nor_counts_a_failover_host():
    busy = [vm(f"busy{i}", "h1") for i in range(4)]
    demands = {f"busy{i}": (9000.0 if i < 2 else 8000.0, 4096.0) for i in range(4)}
    s = cluster(vms=busy)
    plan = drs.balance(s, drs.DrsSettings(), demands)
    assert plan.recommendations and all(r.target != "h3" for r in plan.recommendations)
    assert set(drs.imbalance_of(s, demands).loads) == {"h1", "h2"}
    # Without the flag DRS would use h3 (the check above can fail).
    free = drs.balance(ha.with_failover_flags(s, ()), drs.DrsSettings(), demands)
    assert any(r.target == "h3" for r in free.recommendations)


def test_scenario_fails_when_the_filter_is_ignored(monkeypatch):
    assert run_scenario(SCENARIO).failures == [] and diff(SCENARIO) == ""
    monkeypatch.setattr(placement, "FILTERS", [f for f in placement.FILTERS if f.name != "FailoverHostFilter"])
    assert diff(SCENARIO) != ""
