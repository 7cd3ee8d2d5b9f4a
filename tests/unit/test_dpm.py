"""DPM decisions (vcenter.domain.dpm): band, windows, evacuation, HA reserve, no flapping."""

from __future__ import annotations

from dataclasses import replace

from vcenter.domain.dpm import DpmHistory, DpmSettings, decide
from vcenter.domain.drs import HaReserve
from vcenter.domain.snapshot import ClusterSnapshot, HostSnapshot, Rule, RuleKind, VmSnapshot

MHZ = 2500.0


def host(i, cores=16, mem=65536, **kw):
    return HostSnapshot(f"h{i}", cores=cores, cpu_mhz=cores * MHZ, memory_mib=mem, **kw)


def cluster(n=4, per_host=2, rules=(), vcpus=4):
    hosts = tuple(host(i) for i in range(1, n + 1))
    vms = tuple(VmSnapshot(f"v{i}{k}", vcpus=vcpus, memory_mib=4096, host=f"h{i}") for i in range(1, n + 1) for k in range(per_host))
    return ClusterSnapshot(hosts, vms, tuple(rules))


def flat(snap, cpu, mem=1024.0):
    return {v.id: (cpu, mem) for v in snap.vms if v.host}


def test_power_off_after_the_long_window_only():
    snap = cluster()
    s = DpmSettings()
    low = flat(snap, 2000.0)
    assert not decide(snap, s, [low] * 7).recommendations  # 7 of 8 samples
    plan = decide(snap, s, [low] * 8)
    # Low for long: several hosts off in one pass (U 0.1 on 4 hosts, 0.4 on the last one).
    recs = plan.recommendations
    assert len(recs) == 3 and len({r.host for r in recs}) == 3
    for r in recs:
        assert r.action == "power-off" and r.priority in (3, 4)
        assert all(t != r.host for _, t in r.evacuation)
        assert r.reasons.predicted <= s.fill
        assert r.reasons.utilisation < s.low
    assert len(recs[0].evacuation) == 2 and recs[0].to_dict()["evacuation"]
    assert not decide(snap, DpmSettings(max_off_per_pass=1), [low] * 8).recommendations[1:]


def test_no_power_off_when_one_sample_of_the_window_is_in_the_band():
    snap = cluster()
    low, mid = flat(snap, 2000.0), flat(snap, 9500.0)  # U 0.1, then 0.475 (in the band)
    assert not decide(snap, DpmSettings(), [low] * 7 + [mid]).recommendations


def test_hysteresis_power_off_only_while_the_rest_stays_at_or_below_the_fill():
    snap = cluster(n=4, per_host=1, vcpus=8)
    # U = 4 x 17000 / 160000 = 0.425 < 0.45; on three hosts 0.567 <= 0.72, on two 0.85 > 0.72
    plan = decide(snap, DpmSettings(), [flat(snap, 17000.0)] * 8)
    assert [r.action for r in plan.recommendations] == ["power-off"]
    assert any("> 0.72" in n for n in plan.notes)


def test_power_on_picks_the_smallest_standby_host_that_reaches_the_target():
    hosts = (host(1), host(2), host(3, cores=8, standby=True), host(4, cores=32, standby=True), host(5, cores=16, standby=True))
    vms = tuple(VmSnapshot(f"v{k}", vcpus=8, memory_mib=4096, host=f"h{1 + k % 2}") for k in range(4))
    snap = ClusterSnapshot(hosts, vms)
    hot = {v.id: (18000.0, 2048.0) for v in vms}  # U = 72000 / 80000 = 0.9
    (r,) = decide(snap, DpmSettings(), [hot]).recommendations
    assert r.action == "power-on" and r.host == "h5"  # 8 cores: 72/100 = 0.72 > target; 16 cores: 0.6
    assert r.reasons.predicted <= 0.63 and r.priority == 2


def test_power_on_wakes_several_when_one_is_not_enough():
    hosts = (host(1), host(2, cores=4, standby=True), host(3, cores=4, standby=True))
    vms = (VmSnapshot("v", vcpus=16, memory_mib=4096, host="h1"),)
    snap = ClusterSnapshot(hosts, vms)
    plan = decide(snap, DpmSettings(max_on_per_pass=2), [{"v": (39000.0, 1024.0)}])
    assert [r.action for r in plan.recommendations] == ["power-on", "power-on"]
    assert plan.recommendations[0].priority == 2


def test_min_hosts_cooldown_overrides_and_in_flight():
    snap = cluster(n=2)
    low = flat(snap, 500.0)
    assert not decide(snap, DpmSettings(min_hosts_on=2), [low] * 8).recommendations
    assert decide(snap, DpmSettings(), [low] * 8).recommendations
    hist = DpmHistory(recent={"h1": 100.0, "h2": 100.0})
    plan = decide(snap, DpmSettings(), [low] * 8, hist)
    assert not plan.recommendations and any("cooldown" in n for n in plan.notes)
    plan = decide(snap, DpmSettings(host_overrides={"h1": "disabled", "h2": "manual"}), [low] * 8)
    (r,) = plan.recommendations
    assert r.host == "h2" and not r.automatic
    plan = decide(snap, DpmSettings(), [low] * 8, DpmHistory(in_flight=frozenset({"v11", "v21"})))
    assert not plan.recommendations


def test_evacuation_keeps_must_rules():
    hosts = (host(1), host(2), host(3))
    vms = (
        VmSnapshot("a", vcpus=2, memory_mib=4096, host="h1"),
        VmSnapshot("b", vcpus=2, memory_mib=4096, host="h2"),
        VmSnapshot("c", vcpus=2, memory_mib=4096, host="h3"),
        VmSnapshot("d", vcpus=2, memory_mib=8192, host="h3"),
    )
    rule = Rule("abc", RuleKind.ANTI_AFFINITY, True, frozenset({"a", "b", "c"}))
    snap = ClusterSnapshot(hosts, vms, (rule,))
    plan = decide(snap, DpmSettings(), [{v.id: (100.0, 512.0) for v in vms}] * 8)
    # every host holds one of a/b/c: evacuating any would put two together
    assert not plan.recommendations
    assert any("cannot evacuate" in n for n in plan.notes)


def test_ha_reserve_blocks_power_off_that_eats_it():
    hosts = tuple(host(i, mem=32768) for i in (1, 2, 3))
    vms = tuple(VmSnapshot(f"v{k}", vcpus=2, memory_mib=8192, host=f"h{1 + k % 3}") for k in range(5))
    snap = ClusterSnapshot(hosts, vms)
    low = {v.id: (1000.0, 2048.0) for v in vms}
    assert decide(snap, DpmSettings(), [low] * 8).recommendations
    plan = decide(snap, DpmSettings(ha=HaReserve(fraction=0.3)), [low] * 8)
    assert not plan.recommendations and any("HA reserve" in n for n in plan.notes)


def test_never_flaps_over_a_demand_series():
    """Apply every decision over a noisy series around the band's edges: a host is never powered
    off within the cooldown after a power action, and constant demand never toggles a host."""
    snap = cluster(n=6, per_host=3)
    s = DpmSettings(off_window_s=1200)
    levels = [2000.0] * 30 + [9000.0] * 10 + [3500.0] * 30 + [6000.0] * 30
    samples, last_action, actions = [], {}, []
    for t, lvl in enumerate(levels):
        now = t * s.sample_s
        samples.append(flat(snap, lvl + (t % 3) * 150.0, 1024.0))
        hist = DpmHistory({h: now - at for h, at in last_action.items()})
        plan = decide(snap, s, samples[-20:], hist)
        for r in plan.recommendations:
            if r.action == "power-off":
                assert now - last_action.get(r.host, -1e9) >= s.host_cooldown_s
                moves = dict(r.evacuation)
                snap = replace(snap, hosts=tuple(replace(h, standby=True) if h.id == r.host else h for h in snap.hosts), vms=tuple(replace(v, host=moves.get(v.id, v.host)) for v in snap.vms))
            else:
                snap = replace(snap, hosts=tuple(replace(h, standby=False) if h.id == r.host else h for h in snap.hosts))
            last_action[r.host] = now
            actions.append((t, r.action, r.host))
    assert any(a == "power-off" for _, a, _ in actions) and any(a == "power-on" for _, a, _ in actions)
    # in the final constant phase nothing toggles back and forth
    tail = [a for t, a, _ in actions if t >= 80]
    assert not ("power-off" in tail and "power-on" in tail)


def test_a_dedicated_failover_host_is_never_powered_off_nor_counted():
    """The emptiest host would go first; as an HA failover host it stays on, and its capacity
    is not the cluster's (placement keeps it empty)."""
    hosts = (host(1), host(2), host(3), host(4, failover=True))
    vms = tuple(VmSnapshot(f"v{i}{k}", vcpus=4, memory_mib=4096, host=f"h{i}") for i in range(1, 4) for k in range(2))
    snap = ClusterSnapshot(hosts, vms)
    low = flat(snap, 2000.0)
    plan = decide(snap, DpmSettings(), [low] * 8)
    assert plan.recommendations and all(r.host != "h4" for r in plan.recommendations)
    counted = decide(replace(snap, hosts=hosts[:3]), DpmSettings(), [low] * 8)
    assert plan.utilisation == counted.utilisation  # h4's capacity left out
    small = tuple(host(i, cores=6) for i in range(1, 4)) + (host(4, cores=6, failover=True, standby=True),)
    asleep = replace(snap, hosts=small)  # 6 VMs of 4 vCPUs on 3 x 6 cores, all busy
    busy = flat(asleep, 10000.0)
    woken = decide(asleep, DpmSettings(), [busy] * 8)
    assert not woken.recommendations and any("no standby host" in n for n in woken.notes), woken.notes
    ordinary = decide(replace(asleep, hosts=asleep.hosts[:3] + (replace(asleep.hosts[3], failover=False),)), DpmSettings(), [busy] * 8)
    assert [r.host for r in ordinary.recommendations] == ["h4"]  # the same host, not a failover one, is woken
