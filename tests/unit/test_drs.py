"""DRS balancer (vcenter.domain.drs): pure, over plain snapshots. What-if: test_drs_whatif.py."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest

from vcenter.domain import drs
from vcenter.domain.drs import (
    Automation,
    DrsHistory,
    DrsSettings,
    HaReserve,
    apply_plan,
    balance,
    imbalance_of,
    vm_entitlements,
)
from vcenter.domain.pools import PoolTree, entitlements
from vcenter.domain.rules import violations
from vcenter.domain.snapshot import ClusterSnapshot, HostSnapshot, Rule, RuleKind, VmSnapshot
from vcenter.sim.drs import move_breaks_must

MHZ = 2500.0


def host(i, cores=16, mem=65536, **kw):
    return HostSnapshot(f"h{i}", cores=cores, cpu_mhz=cores * MHZ, memory_mib=mem, **kw)


def vm(name, on, vcpus=4, mem=4096, **kw):
    return VmSnapshot(name, vcpus=vcpus, memory_mib=mem, host=on, **kw)


def skewed(n_hosts=3, n_vms=8):
    hosts = tuple(host(i) for i in range(1, n_hosts + 1))
    vms = tuple(vm(f"v{k}", "h1", vcpus=2) for k in range(n_vms))
    return ClusterSnapshot(hosts, vms)


def test_balance_moves_load_off_the_hot_host_with_reasons():
    snap = skewed()
    plan = balance(snap)
    assert plan.recommendations, plan.notes
    assert plan.after.imbalance < plan.before.imbalance
    # 8 equal VMs on 3 hosts: 3/3/2 is as even as it gets (above the 0.015 target); the pass
    # stops there because no move gains enough, and says so.
    after = apply_plan(snap, plan)
    assert sorted(sum(1 for v in after.vms if v.host == h.id) for h in after.hosts) == [2, 3, 3]
    assert any("no move gains" in n for n in plan.notes), plan.notes
    prev = plan.before.imbalance
    for r in plan.recommendations:
        assert r.source == "h1" and r.kind == "balance"
        assert r.reasons.imbalance_before == pytest.approx(prev)
        assert r.reasons.gain == pytest.approx(r.reasons.imbalance_before - r.reasons.imbalance_after)
        assert r.reasons.gain > 0 and r.reasons.memory_mib == 4096 and r.reasons.host == "h1"
        assert 2 <= r.priority <= 3
        prev = r.reasons.imbalance_after
    assert plan.after.imbalance == pytest.approx(imbalance_of(apply_plan(snap, plan)).imbalance)
    d = plan.to_dict()
    assert d["recommendations"][0]["reasons"]["imbalance_before"] == pytest.approx(plan.before.imbalance)


def test_the_busy_vm_moves_not_the_idle_one():
    hosts = (host(1), host(2))
    vms = (vm("busy1", "h1"), vm("busy2", "h1"), vm("idle1", "h1"), vm("idle2", "h1"), vm("idle3", "h1"))
    demands = {"busy1": (9000.0, 4096.0), "busy2": (9000.0, 4096.0), "idle1": (50.0, 512.0), "idle2": (50.0, 512.0), "idle3": (50.0, 512.0)}
    plan = balance(ClusterSnapshot(hosts, vms), demands=demands)
    assert [r.vm_id for r in plan.recommendations][:1] in (["busy1"], ["busy2"])


def test_threshold_mapping_and_threshold_one_only_fixes_rules():
    snap = skewed(4, 9)
    assert drs.TARGETS == {1: float("inf"), 2: 0.20, 3: 0.015, 4: 0.008, 5: 0.004}
    counts = {t: len(balance(snap, DrsSettings(threshold=t)).recommendations) for t in range(1, 6)}
    assert counts[1] == 0
    assert counts[2] <= counts[3] <= counts[4] <= counts[5]
    for t in range(2, 6):
        plan = balance(snap, DrsSettings(threshold=t))
        assert all(r.priority <= t for r in plan.recommendations)
    with pytest.raises(ValueError):
        DrsSettings(threshold=6)


def test_must_rule_violation_fixed_first_even_at_threshold_one_and_in_cooldown():
    hosts = (host(1), host(2), host(3))
    vms = (vm("a", "h1"), vm("b", "h1"), vm("c", "h2"))
    rule = Rule("apart", RuleKind.ANTI_AFFINITY, True, frozenset({"a", "b"}))
    snap = ClusterSnapshot(hosts, vms, (rule,))
    assert violations(snap)
    hist = DrsHistory(recent={"a": 10.0, "b": 10.0})
    plan = balance(snap, DrsSettings(threshold=1), history=hist)
    assert len(plan.recommendations) == 1
    r = plan.recommendations[0]
    assert r.priority == 1 and r.kind == "rule" and r.reasons.rule == "apart" and r.reasons.rule_must
    assert r.target == "h3"  # the emptiest host that keeps the rule
    assert not violations(apply_plan(snap, plan))


def test_must_affinity_violation_gathers_on_the_majority_host():
    hosts = (host(1), host(2), host(3))
    vms = (vm("a", "h1"), vm("b", "h1"), vm("c", "h2"), vm("x", "h3"))
    rule = Rule("together", RuleKind.AFFINITY, True, frozenset({"a", "b", "c"}))
    snap = ClusterSnapshot(hosts, vms, (rule,))
    plan = balance(snap, DrsSettings(threshold=1))
    assert [(r.vm_id, r.target) for r in plan.recommendations] == [("c", "h1")]
    assert not violations(apply_plan(snap, plan))


def test_should_rules_after_must_rules_and_unresolved_reasons():
    hosts = (host(1, mem=16384), host(2, mem=16384))
    vms = (vm("a", "h1", mem=8192), vm("b", "h1", mem=8192), vm("c", "h2", mem=12288))
    must = Rule("m", RuleKind.RUN_ON, True, frozenset({"c"}), frozenset({"h2"}))
    should = Rule("s", RuleKind.ANTI_AFFINITY, False, frozenset({"a", "b"}))
    plan = balance(ClusterSnapshot(hosts, vms, (must, should)))
    assert not plan.recommendations
    assert any("rule 's'" in u and "memory short" in u for u in plan.unresolved)


def test_in_flight_vm_never_moved_even_for_a_must_fix():
    hosts = (host(1), host(2), host(3))
    vms = (vm("a", "h1"), vm("b", "h1"))
    rule = Rule("apart", RuleKind.ANTI_AFFINITY, True, frozenset({"a", "b"}))
    plan = balance(ClusterSnapshot(hosts, vms, (rule,)), history=DrsHistory(in_flight=frozenset({"a", "b"})))
    assert not plan.recommendations
    assert plan.skipped == {"a": "migration in flight", "b": "migration in flight"}
    assert plan.unresolved


def test_cooldown_budget_and_min_gain():
    snap = skewed(4, 12)
    full = balance(snap, DrsSettings(threshold=5))
    assert len(full.recommendations) > 2
    budget = balance(snap, DrsSettings(threshold=5, budget=2))
    assert len(budget.recommendations) == 2
    assert [r.vm_id for r in budget.recommendations] == [r.vm_id for r in full.recommendations[:2]]
    assert any("budget" in n for n in budget.notes)
    cooled = {r.vm_id: 60.0 for r in full.recommendations}
    plan = balance(snap, DrsSettings(threshold=5), history=DrsHistory(recent=cooled))
    assert not {r.vm_id for r in plan.recommendations} & set(cooled)
    assert all("cooldown" in plan.skipped[v] for v in cooled)
    after_cooldown = balance(snap, DrsSettings(threshold=5, cooldown_s=30), history=DrsHistory(recent=cooled))
    assert len(after_cooldown.recommendations) == len(full.recommendations)
    # A prohibitive minimum gain stops balancing, not the relief of an overloaded host: only
    # moves off the overloaded host remain, and they stop as soon as it is no longer overloaded.
    h1_overloaded = balance(snap, DrsSettings(min_gain=0.5))
    assert "h1" in h1_overloaded.before.overloaded
    assert h1_overloaded.recommendations and all(r.reasons.overloaded for r in h1_overloaded.recommendations)
    assert not h1_overloaded.after.overloaded
    assert len(h1_overloaded.recommendations) < len(balance(snap).recommendations)
    unloaded = replace(snap, vms=snap.vms[:6])
    assert not imbalance_of(unloaded).overloaded
    assert not balance(unloaded, DrsSettings(min_gain=0.5)).recommendations
    # cost per GiB: a prohibitive price keeps every VM home
    assert not balance(snap, DrsSettings(cost_per_gib=1.0)).recommendations


def test_automation_levels_and_overrides():
    snap = skewed(3, 6)
    plan = balance(snap, DrsSettings(automation="partial", vm_overrides={"v0": "disabled", "v1": "full"}))
    assert "v0" not in {r.vm_id for r in plan.recommendations}
    assert plan.skipped["v0"] == "DRS disabled for this VM"
    for r in plan.recommendations:
        assert r.automatic == (r.vm_id == "v1")
        assert r.automation == (Automation.FULL if r.vm_id == "v1" else Automation.PARTIAL)


def test_ha_reserve_keeps_targets_below_capacity_minus_reserve():
    hosts = (host(1, mem=32768), host(2, mem=32768))
    vms = tuple(vm(f"a{k}", "h1", mem=8192) for k in range(3)) + tuple(vm(f"b{k}", "h2", mem=8192) for k in range(3))
    demands = {**{f"a{k}": (9000.0, 8192.0) for k in range(3)}, **{f"b{k}": (1000.0, 8192.0) for k in range(3)}}
    snap = ClusterSnapshot(hosts, vms)
    assert balance(snap, DrsSettings(), demands).recommendations
    assert not balance(snap, DrsSettings(ha=HaReserve(fraction=0.25)), demands).recommendations


def test_entitlements_flat_fill_equals_the_pool_tree():
    rnd = random.Random(3)
    hosts = (host(1, cores=4), host(2, cores=4))
    vms = tuple(
        vm(
            f"v{k}",
            f"h{1 + k % 2}",
            vcpus=rnd.choice((1, 2, 4)),
            mem=1024,
            cpu_reservation_mhz=rnd.choice((0.0, 500.0)),
            cpu_limit_mhz=rnd.choice((None, 3000.0)),
            cpu_shares=rnd.choice((None, 500.0, 4000.0)),
        )
        for k in range(12)
    )
    snap = ClusterSnapshot(hosts, vms)
    demands = {v.id: (rnd.uniform(0, 10000), 800.0) for v in vms}  # contended: 20 GHz for more demand
    ours = vm_entitlements(snap, demands)
    ref = entitlements(PoolTree.from_snapshot(snap), None, demands)
    for k in ref:
        assert ours[k][0] == pytest.approx(ref[k][0], abs=1e-3)
        assert ours[k][1] == pytest.approx(ref[k][1], abs=1e-3)


def test_incremental_score_matches_recomputation():
    rnd = random.Random(5)
    hosts = tuple(host(i, cores=rnd.choice((8, 16, 32))) for i in range(1, 7))
    vms = tuple(vm(f"v{k}", f"h{rnd.randint(1, 6)}", vcpus=rnd.choice((1, 2, 4)), mem=rnd.choice((1024, 4096))) for k in range(40))
    snap = ClusterSnapshot(hosts, vms)
    p = drs._Pass(snap, DrsSettings(), None, None)
    L = p.loads
    src = 0
    movers = L.vms_on[src][:5]
    targets = np.arange(1, 6)
    got = L.after(src, np.array([L.ent[v.id] for v in movers]), targets)
    for k, v in enumerate(movers):
        for m, t in enumerate(targets.tolist()):
            moved = replace(snap, vms=tuple(replace(x, host=f"h{t + 1}") if x.id == v.id else x for x in snap.vms))
            assert got[k, m] == pytest.approx(imbalance_of(moved).imbalance, abs=1e-9)


def _random_cluster(seed, n_hosts=8, n_vms=80):
    rnd = random.Random(seed)
    hosts = tuple(host(i, cores=16, mem=65536) for i in range(n_hosts))
    used = [0] * n_hosts
    vms = []
    for k in range(n_vms):
        i = min(range(n_hosts), key=lambda j: used[j] + rnd.random() * 30000) if rnd.random() < 0.5 else rnd.randrange(n_hosts // 2)
        mem = rnd.choice((1024, 2048, 4096))
        if used[i] + mem > 60000:
            i = min(range(n_hosts), key=lambda j: used[j])
        used[i] += mem
        vms.append(vm(f"v{k}", f"h{i}", vcpus=rnd.choice((1, 2, 4)), mem=mem))
    rules = []
    ids = [v.id for v in vms]
    for r in range(6):
        members = frozenset(rnd.sample(ids, 3))
        kind = rnd.choice((RuleKind.ANTI_AFFINITY, RuleKind.RUN_ON, RuleKind.NOT_RUN_ON))
        hosts_sel = frozenset(f"h{j}" for j in rnd.sample(range(n_hosts), n_hosts // 2))
        rules.append(Rule(f"r{r}", kind, rnd.random() < 0.5, members, hosts_sel if kind != RuleKind.ANTI_AFFINITY else frozenset()))
    demands = {v.id: (rnd.uniform(0, v.vcpus * MHZ), rnd.uniform(256, v.memory_mib)) for v in vms}
    return ClusterSnapshot(hosts, tuple(vms), tuple(rules)), demands


@pytest.mark.parametrize("seed", range(12))
def test_plans_never_break_must_rules_nor_capacity(seed):
    snap, demands = _random_cluster(seed)
    rnd = random.Random(seed)
    hist = DrsHistory(in_flight=frozenset(rnd.sample([v.id for v in snap.vms], 5)))
    settings = DrsSettings(threshold=rnd.randint(1, 5), budget=rnd.randint(1, 10))
    before_must = {v.rule for v in violations(snap) if v.must}
    plan = balance(snap, settings, demands, hist)
    assert len(plan.recommendations) <= settings.budget
    ids = [r.vm_id for r in plan.recommendations]
    assert len(ids) == len(set(ids))
    assert not set(ids) & hist.in_flight
    cur = snap
    for r in plan.recommendations:
        assert next(v for v in cur.vms if v.id == r.vm_id).host == r.source
        assert move_breaks_must(cur, r.vm_id, r.target) is None
        cur = apply_plan(cur, [r])
        mem = sum(v.memory_mib for v in cur.vms if v.host == r.target)
        assert mem <= 65536
    assert {v.rule for v in violations(cur) if v.must} <= before_must
    if all(r.kind == "balance" for r in plan.recommendations):
        assert imbalance_of(cur, demands).imbalance <= plan.before.imbalance + 1e-12


def test_a_skewed_96_host_10000_vm_cluster_gets_a_plan_that_improves_balance():
    # Speed at this scale is measured by bench/drs.py, not asserted here.
    rnd = random.Random(1)
    hosts = tuple(HostSnapshot(f"h{i}", cores=48, cpu_mhz=48 * 2600.0, memory_mib=512 * 1024, vcpu_ratio=8.0) for i in range(96))
    vms = tuple(VmSnapshot(f"v{k}", vcpus=rnd.choice((1, 2, 4)), memory_mib=rnd.choice((1024, 2048, 4096)), host=f"h{(k * 7) % 96 if k % 3 else k % 24}") for k in range(10_000))
    snap = ClusterSnapshot(hosts, vms)
    # Demand within the cluster's capacity (about 70 % of its CPU): a saturated cluster gets no
    # balancing moves (test_a_saturated_cluster_gets_no_balancing_moves).
    demands = {v.id: (rnd.uniform(0, 0.28 * v.vcpus * 2600.0), v.memory_mib * rnd.uniform(0.2, 0.9)) for v in vms}
    plan = balance(snap, DrsSettings(), demands)
    assert plan.recommendations
    assert plan.after.imbalance < plan.before.imbalance


def test_wake_a_standby_host_only_when_the_powered_on_hosts_cannot_hold_the_demand():
    hosts = (host(1), host(2), replace(host(3), standby=True), replace(host(4), standby=True, maintenance=True))
    vms = tuple(vm(f"v{k}", f"h{k % 2 + 1}", vcpus=4) for k in range(12))
    snap = ClusterSnapshot(hosts, vms)
    core = drs.core_mhz(snap)
    light = {v.id: (0.5 * v.vcpus * core, float(v.memory_mib)) for v in vms}
    assert balance(snap, demands=light).wake == ()  # fits: nobody is woken
    heavy = {v.id: (v.vcpus * core, float(v.memory_mib)) for v in vms}
    cap = sum(drs.host_capacity(h)[0] for h in hosts[:2])
    assert sum(c for c, _ in heavy.values()) > cap
    plan = balance(snap, demands=heavy)
    assert [w.host for w in plan.wake] == ["h3"]  # never the host in maintenance
    assert plan.wake[0].cpu_short_mhz == pytest.approx(sum(c for c, _ in heavy.values()) - cap)
    assert "cannot hold the demand" in plan.wake[0].reason and plan.to_dict()["wake"][0]["host"] == "h3"
    # Threshold 1 balances nothing but still asks for capacity.
    assert [w.host for w in balance(snap, DrsSettings(threshold=1), heavy).wake] == ["h3"]
    # An HA reserve counts as capacity the powered-on hosts do not have.
    assert balance(snap, DrsSettings(ha=HaReserve(fraction=0.5)), light).wake
    # No standby host: nothing to wake.
    awake = replace(snap, hosts=hosts[:2])
    assert balance(awake, demands=heavy).wake == ()


def test_memory_nobody_lacks_is_not_evened_out():
    """The lab's case: two burning and three idle small guests on h1, h2 empty, memory mostly
    free everywhere. DRS moves one burning guest; it does not then move an idle one to even
    out memory at 2 % vs 7 % of the hosts (memory does not count: no host at 50 %)."""
    hosts = (host(1, cores=2, mem=4096), host(2, cores=2, mem=4096))
    vms = tuple(vm(n, "h1", vcpus=1, mem=96) for n in ("burn1", "burn2", "idle1", "idle2", "idle3"))
    snap = ClusterSnapshot(hosts, vms)
    dem = {v.id: ((0.95 if v.id.startswith("burn") else 0.01) * MHZ, 96.0) for v in vms}
    plan = balance(snap, demands=dem)
    assert [r.vm_id for r in plan.recommendations] == ["burn1"]
    assert "memory not counted" in plan.notes[-1]
    assert plan.after.mem_std > DrsSettings().target  # memory is left uneven, on purpose
    # With a comfort of 0 memory counts, and an idle guest moves too (what the default avoids).
    eager = balance(snap, DrsSettings(comfort=0.0), dem)
    assert any(r.vm_id.startswith("idle") for r in eager.recommendations)


def _lab_pair(guest_mem_demand: float):
    """The lab's DRS test as a snapshot: two 2-core / 2 GiB hosts, two guests burning a core and
    three idle ones (96 MiB each) on h1, one burning guest already moved to h2."""
    hosts = (host(1, cores=2, mem=2048), host(2, cores=2, mem=2048))
    vms = (vm("burn1", "h2", vcpus=1, mem=96),) + tuple(vm(n, "h1", vcpus=1, mem=96) for n in ("burn2", "idle1", "idle2", "idle3"))
    # Idle guests measured at 1 % of a host (the lab's idle TCG guests: 25-70 MHz of 5.2 GHz);
    # the burning ones a little apart (TCG's noise), so the CPU imbalance stays above target.
    load = {"burn1": 0.45, "burn2": 0.47}
    dem = {v.id: (load.get(v.id, 0.01) * 2 * MHZ, guest_mem_demand) for v in vms}
    return ClusterSnapshot(hosts, vms), dem


def test_idle_guests_stay_when_memory_demand_is_what_the_guests_use():
    """With memory demand = configured size, memory (19 % vs 5 % of the hosts) dominates the
    imbalance and an idle guest moves to even it out; with the balloon's measure (20 MiB used
    of 96) what is left is within the minimum gain, and nothing moves."""
    snap, configured = _lab_pair(96.0)
    eager = balance(snap, demands=configured)
    assert [r.vm_id for r in eager.recommendations][:1] in (["idle1"], ["idle2"], ["idle3"])
    snap, measured = _lab_pair(20.0)
    plan = balance(snap, demands=measured)
    assert plan.recommendations == (), plan.notes


def test_confidence_discounts_gains_within_the_noise():
    hosts = (host(1, cores=4, mem=16384), host(2, cores=4, mem=16384))
    vms = (vm("a", "h1", vcpus=2, mem=1024), vm("b", "h1", vcpus=2, mem=1024), vm("c", "h2", vcpus=2, mem=1024))
    snap = ClusterSnapshot(hosts, vms)
    dem = {"a": (2400.0, 1024.0), "b": (600.0, 1024.0), "c": (1800.0, 1024.0)}  # h1 at 30 %, h2 at 18 %: b evens them
    exact = balance(snap, DrsSettings(confidence=1.0), dem)
    assert [r.vm_id for r in exact.recommendations] == ["b"]  # no spread given: loads are exact
    assert exact.recommendations[0].reasons.robust_gain == pytest.approx(exact.recommendations[0].reasons.gain)
    noisy = {"a": (900.0, 0.0), "b": (300.0, 0.0), "c": (900.0, 0.0)}
    assert [r.vm_id for r in balance(snap, DrsSettings(confidence=0.0), dem, spread=noisy).recommendations] == ["b"]
    cautious = balance(snap, DrsSettings(confidence=1.0), dem, spread=noisy)
    assert cautious.recommendations == (), cautious.notes  # the gain lies within the noise
    calm = {k: (50.0, 0.0) for k in noisy}
    kept = balance(snap, DrsSettings(confidence=1.0), dem, spread=calm).recommendations
    assert [r.vm_id for r in kept] == ["b"] and kept[0].reasons.robust_gain < kept[0].reasons.gain
    assert "within noise" in kept[0].reason
    with pytest.raises(ValueError):
        DrsSettings(confidence=-1)
