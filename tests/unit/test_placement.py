"""Placement filters and weighers, pending reservations, place_many, CPU compatibility."""

from __future__ import annotations

import pytest

from vcenter.domain.cpu import CpuModel, CpuRequirement, baseline, can_join, compatible, requirement_of
from vcenter.domain.placement import RULE_WEIGHT, decision_order, place, place_many
from vcenter.domain.snapshot import (
    Alloc,
    ClusterSnapshot,
    HostSnapshot,
    PendingReservation,
    PoolNode,
    Rule,
    RuleKind,
    VmSnapshot,
)

G = 1024


def host(hid: str, **kw) -> HostSnapshot:
    base = dict(cores=16, cpu_mhz=40000.0, memory_mib=32 * G, datastores=frozenset({"ds1"}), port_groups=frozenset({"net"}))
    base.update(kw)
    return HostSnapshot(hid, **base)


def vm(vid: str, mem: int = 4 * G, **kw) -> VmSnapshot:
    return VmSnapshot(vid, memory_mib=mem, **kw)


def reasons(result, host_id):
    for r in result.rejected:
        if r.host_id == host_id:
            return dict(zip(r.filters, r.reasons))
    return None


def test_least_loaded_host_wins_and_every_host_is_accounted_for():
    snap = ClusterSnapshot((host("h1"), host("h2"), host("h3")), (vm("a", 16 * G, host="h1"), vm("b", 8 * G, host="h2")))
    r = place(snap, vm("new"))
    assert r.host == "h3"
    assert [c.host_id for c in r.candidates] == ["h3", "h2", "h1"]
    assert r.rejected == ()
    # memory component is -(used after / size)
    assert r.candidates[0].components["memory"] == pytest.approx(-(4 * G) / (32 * G))
    assert r.candidates[1].components["memory"] == pytest.approx(-(12 * G) / (32 * G))


def test_ties_go_to_the_earlier_host_of_the_snapshot():
    snap = ClusterSnapshot((host("hb"), host("ha")))
    assert place(snap, vm("x")).host == "hb"


def test_memory_rejection_gives_the_numbers():
    snap = ClusterSnapshot((host("h1", memory_mib=16 * G, reserved_memory_mib=G), host("h2")), (vm("big", 13 * G, host="h1"),))
    r = place(snap, vm("x", 4 * G))
    assert r.host == "h2"
    assert reasons(r, "h1") == {"MemoryFilter": "memory short by 2048 MiB (needs 4096, free 2048 of 16384)"}


def test_host_states_datastores_port_groups_cpu_each_have_their_reason():
    cpu_old = CpuModel("GenuineIntel", "Haswell", frozenset({"avx"}))
    hosts = (
        host("down", connection="notResponding"),
        host("maint", maintenance=True),
        host("sleep", standby=True),
        host("nods", datastores=frozenset()),
        host("nonet", port_groups=frozenset()),
        host("old", cpu=cpu_old),
        host("ok", cpu=CpuModel("GenuineIntel", "Skylake", frozenset({"avx", "avx2"}))),
    )
    req = CpuRequirement(None, frozenset({"avx2"}))
    r = place(ClusterSnapshot(hosts), vm("x", datastores=frozenset({"ds1"}), port_groups=frozenset({"net"}), cpu=req))
    assert r.host == "ok"
    assert reasons(r, "down") == {"ConnectionFilter": "not connected (notResponding)", "CpuCompatibilityFilter": "CPU incompatible: missing host CPU unknown"}
    assert reasons(r, "maint")["MaintenanceFilter"] == "in maintenance"
    assert reasons(r, "sleep")["StandbyFilter"] == "in standby"
    assert reasons(r, "nods")["DatastoreFilter"] == "datastore ds1 not mounted"
    assert reasons(r, "nonet")["PortGroupFilter"] == "port group net absent"
    assert reasons(r, "old") == {"CpuCompatibilityFilter": "CPU incompatible: missing avx2"}


def test_cpu_filter_counts_vcpus_and_reservations():
    h = host("h1", cores=4, vcpu_ratio=1.0, cpu_mhz=10000.0)
    tiny = host("h2", cores=1, vcpu_ratio=1.0, cpu_mhz=10000.0)  # adds cluster capacity for admission
    snap = ClusterSnapshot((h, tiny), (vm("a", vcpus=2, cpu_reservation_mhz=6000, host="h1"),))
    r = place(snap, vm("x", vcpus=4, cpu_reservation_mhz=5000))
    assert r.host is None and r.refused is None
    assert reasons(r, "h1")["CpuFilter"] == ("vCPUs short by 2 (needs 4, free 2 of 4); CPU reservation short by 1000 MHz (needs 5000, free 4000 of 10000)")
    assert place(snap, vm("y", vcpus=2, cpu_reservation_mhz=4000)).host == "h1"


def test_pending_reservations_take_the_slot():
    snap = ClusterSnapshot((host("h1", memory_mib=10 * G), host("h2", memory_mib=10 * G)))
    first = place(snap, vm("a", 8 * G))
    assert first.host == "h1"
    snap2 = ClusterSnapshot(snap.hosts, pending=(PendingReservation("a", "h1", 8 * G, 1),))
    assert place(snap2, vm("b", 8 * G)).host == "h2"
    snap3 = ClusterSnapshot(snap.hosts, pending=(PendingReservation("a", "h1", 8 * G, 1), PendingReservation("b", "h2", 8 * G, 1)))
    r = place(snap3, vm("c", 8 * G))
    assert r.host is None and "memory short by 6144 MiB" in reasons(r, "h1")["MemoryFilter"]
    # re-deciding a VM ignores its own reservation
    assert place(snap3, vm("a", 8 * G)).host == "h1"


def test_place_many_consumes_capacity_and_reports_the_rest():
    snap = ClusterSnapshot((host("h1", memory_mib=16 * G), host("h2", memory_mib=16 * G)))
    vms = [vm(n, 10 * G) for n in "abc"] + [vm("d", 4 * G)]
    res = place_many(snap, vms)
    assert res.placed == {"a": "h1", "b": "h2", "d": "h1"}
    assert set(res.unplaced) == {"c"}
    assert "h1: memory short by 4096 MiB" in res.unplaced["c"]
    # every placed VM fits: no host over capacity
    used = {"h1": 0, "h2": 0}
    for v in vms:
        if v.id in res.placed:
            used[res.placed[v.id]] += v.memory_mib
    assert max(used.values()) <= 16 * G


def test_place_many_refuses_duplicates_and_orders_by_priority_then_size():
    with pytest.raises(ValueError):
        place_many(ClusterSnapshot((host("h1"),)), [vm("a"), vm("a")])
    order = decision_order([vm("small", G), vm("big", 8 * G), vm("vip", G, priority=5)])
    assert [v.id for v in order] == ["vip", "big", "small"]


def test_a_move_in_a_batch_frees_the_source_for_the_next_decision():
    snap = ClusterSnapshot((host("h1", memory_mib=16 * G), host("h2", memory_mib=16 * G)), (vm("a", 12 * G, host="h1"),))
    res = place_many(snap, [vm("a", 12 * G, host="h1", priority=1), vm("c", 12 * G)])
    assert res.placed == {"a": "h2", "c": "h1"}  # c fits on h1 only because a left it
    assert reasons(res.result("a"), "h1")["Excluded"] == "current host of the VM"


def test_must_anti_affinity_is_a_filter_with_the_partner_named():
    rule = Rule("web-apart", RuleKind.ANTI_AFFINITY, True, frozenset({"w1", "w2"}))
    snap = ClusterSnapshot((host("h1"), host("h2")), (vm("w1", host="h1"),), rules=(rule,))
    r = place(snap, vm("w2", 20 * G))
    assert r.host == "h2"
    assert reasons(r, "h1") == {"RuleFilter": "rule 'web-apart' (must, anti-affinity with w1 on h1)"}


def test_place_many_binds_rules_between_members_of_the_batch():
    rule = Rule("apart", RuleKind.ANTI_AFFINITY, True, frozenset({"a", "b"}))
    snap = ClusterSnapshot((host("h1"), host("h2")), rules=(rule,))
    res = place_many(snap, [vm("a"), vm("b")])
    assert res.placed["a"] != res.placed["b"]
    together = Rule("together", RuleKind.AFFINITY, True, frozenset({"a", "b"}))
    res = place_many(ClusterSnapshot((host("h1"), host("h2")), rules=(together,)), [vm("a"), vm("b")])
    assert res.placed["a"] == res.placed["b"]


def test_should_rule_is_kept_when_possible_and_broken_with_a_note_otherwise():
    rule = Rule("spread", RuleKind.ANTI_AFFINITY, False, frozenset({"w1", "w2"}))
    # h1 holds w1 but is much emptier than h2: the should-rule still wins
    snap = ClusterSnapshot((host("h1"), host("h2")), (vm("w1", G, host="h1"), vm("fill", 20 * G, host="h2")), rules=(rule,))
    r = place(snap, vm("w2"))
    assert r.host == "h2"
    assert r.candidates[1].components["anti_affinity"] == -RULE_WEIGHT
    assert r.chosen.notes == ()
    # h2 full: the rule yields, and says so
    snap = ClusterSnapshot((host("h1"), host("h2")), (vm("w1", G, host="h1"), vm("fill", 30 * G, host="h2")), rules=(rule,))
    r = place(snap, vm("w2"))
    assert r.host == "h1"
    assert r.chosen.notes and r.chosen.notes[0].startswith("should-rule 'spread' broken: no other host fits")


def test_should_affinity_bonus_and_host_group_penalty():
    aff = Rule("near", RuleKind.AFFINITY, False, frozenset({"a", "b"}))
    snap = ClusterSnapshot((host("h1"), host("h2")), (vm("a", 20 * G, host="h1"),), rules=(aff,))
    r = place(snap, vm("b"))
    assert r.host == "h1" and r.chosen.components["affinity"] == RULE_WEIGHT
    grp = Rule("fast", RuleKind.RUN_ON, False, frozenset({"b"}), frozenset({"h2"}), host_group="fast")
    snap = ClusterSnapshot((host("h1"), host("h2")), (vm("x", 20 * G, host="h2"),), rules=(grp,))
    r = place(snap, vm("b"))
    assert r.host == "h2" and r.candidates[1].components["host_group"] == -RULE_WEIGHT


def test_pool_admission_refuses_before_any_host_and_names_the_pool():
    pool = PoolNode("dev", mem=Alloc(reservation=4 * G, expandable=False))
    snap = ClusterSnapshot((host("h1"),), (vm("a", 4 * G, memory_reservation_mib=3 * G, pool="dev", host="h1"),), pools=(pool,))
    r = place(snap, vm("b", 4 * G, memory_reservation_mib=2 * G, pool="dev"))
    assert r.host is None and r.refused_by == "dev"
    assert "pool 'dev' short by 1024 MiB memory" in r.refused
    # a batch consumes pool reservations too
    snap = ClusterSnapshot((host("h1"),), pools=(pool,))
    res = place_many(snap, [vm("x", 2 * G, memory_reservation_mib=3 * G, pool="dev"), vm("y", G, memory_reservation_mib=2 * G, pool="dev")])
    assert res.placed == {"x": "h1"} and "pool 'dev'" in res.unplaced["y"]


def test_exclude_and_only():
    snap = ClusterSnapshot((host("h1"), host("h2"), host("h3")))
    r = place(snap, vm("x"), exclude={"h1": "source host"})
    assert reasons(r, "h1") == {"Excluded": "source host"}
    r = place(snap, vm("x"), only=["h3"])
    assert r.host == "h3" and [c.host_id for c in r.candidates] == ["h3"]


def test_result_serializes_for_the_api():
    snap = ClusterSnapshot((host("h1", maintenance=True), host("h2")))
    d = place(snap, vm("x")).to_dict()
    assert d["host"] == "h2"
    assert d["rejected"] == [{"host": "h1", "name": "h1", "filters": ["MaintenanceFilter"], "reasons": ["in maintenance"]}]


# -- CPU compatibility -----------------------------------------------------------------------

HASWELL = CpuModel("GenuineIntel", "Haswell", frozenset({"sse4_2", "avx", "avx2"}))
SKYLAKE = CpuModel("GenuineIntel", "Skylake", frozenset({"sse4_2", "avx", "avx2", "avx512f"}))
EPYC = CpuModel("AuthenticAMD", "EPYC", frozenset({"sse4_2", "avx", "avx2", "sha_ni"}))


def test_compatible_lists_missing_features_and_vendor():
    assert compatible(requirement_of(SKYLAKE), HASWELL) == (False, ("avx512f",))
    assert compatible(requirement_of(HASWELL), SKYLAKE) == (True, ())
    assert compatible(CpuRequirement("GenuineIntel", frozenset({"sha_ni"})), EPYC) == (False, ("vendor:GenuineIntel",))
    assert compatible(None, None) == (True, ())
    assert compatible(CpuRequirement(None, frozenset({"avx"})), None) == (False, ("host CPU unknown",))


def test_baseline_is_the_intersection_within_one_vendor():
    b = baseline([HASWELL, SKYLAKE])
    assert b.features == HASWELL.features and b.model == "baseline" and b.vendor == "GenuineIntel"
    assert baseline([SKYLAKE, SKYLAKE]).model == "Skylake"
    with pytest.raises(ValueError):
        baseline([HASWELL, EPYC])
    with pytest.raises(ValueError):
        baseline([])
    assert can_join(b, SKYLAKE) == (True, ())
    assert can_join(b, CpuModel("GenuineIntel", "Westmere", frozenset({"sse4_2"}))) == (False, ("avx", "avx2"))


def test_evc_cluster_gives_vms_the_baseline_requirement():
    b = baseline([HASWELL, SKYLAKE])
    hosts = (host("old", cpu=CpuModel("GenuineIntel", "Westmere", frozenset({"sse4_2"}))), host("h1", cpu=SKYLAKE))
    r = place(ClusterSnapshot(hosts, evc=b), vm("x"))
    assert r.host == "h1"
    assert reasons(r, "old")["CpuCompatibilityFilter"].endswith("missing avx, avx2")
