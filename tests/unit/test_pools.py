"""Resource pools: admission (nested, expandable, limits) and entitlements (water-filling)."""

from __future__ import annotations

import pytest

from vcenter.domain.pools import ROOT, Amount, PoolTree, VmAlloc, admit, entitlements, pool_shares, vm_shares, water_fill
from vcenter.domain.snapshot import Alloc, PoolNode

G = 1024.0


def pool(pid, parent=None, mem=None, cpu=None):
    return PoolNode(pid, parent=parent, mem=mem or Alloc(shares=163840.0), cpu=cpu or Alloc(shares=4000.0))


def vmA(vid, pool_id, mem_res=0.0, cpu_res=0.0, running=True, cpu_max=10000.0, mem_max=8 * G, cpu_limit=None, cpu_shares=1000.0, mem_shares=1000.0):
    return VmAlloc(vid, pool_id, Alloc(cpu_res, cpu_limit, cpu_shares, False), Alloc(mem_res, None, mem_shares, False), cpu_max, mem_max, running)


def tree(vms=()):
    pools = [
        pool("dept", mem=Alloc(16 * G, None, 1.0, False)),
        pool("team-a", "dept", mem=Alloc(4 * G, None, 1.0, True)),
        pool("team-b", "dept", mem=Alloc(8 * G, None, 1.0, False)),
        pool("squad", "team-a", mem=Alloc(0, None, 1.0, True)),
    ]
    return PoolTree(pools, Amount(100000, 128 * G), vms)


def test_used_counts_child_reservations_and_expanded_children():
    t = tree([vmA("a1", "team-a", mem_res=6 * G)])
    assert t.used("team-a", "mem") == 6 * G
    assert t.used("dept", "mem") == 6 * G + 8 * G  # team-a expanded beyond its 4G; team-b holds its 8G
    assert t.unreserved("dept").mem_mib == 2 * G


def test_expandable_child_borrows_until_a_non_expandable_parent_refuses():
    t = tree([vmA("a1", "team-a", mem_res=6 * G)])
    assert admit(t, "squad", (0, 2 * G)).ok
    a = admit(t, "squad", (0, 3 * G))
    assert not a.ok and a.pool == "dept"
    assert "pool 'dept' short by 1024 MiB memory" in a.reason and "squad -> team-a" in a.reason


def test_non_expandable_pool_refuses_itself():
    a = admit(tree(), "team-b", (0, 9 * G))
    assert not a.ok and a.pool == "team-b" and "short by 1024 MiB" in a.reason
    assert admit(tree(), "team-b", (0, 8 * G)).ok


def test_reserve_then_admit_and_root_capacity():
    t = tree()
    t.reserve("team-b", Amount(0, 8 * G))
    assert not admit(t, "team-b", (0, 1)).ok
    a = admit(t, None, (0, 120 * G))
    assert not a.ok and a.pool == ROOT and "cluster capacity" in a.reason
    assert admit(t, "nope", (0, 1)).reason == "pool 'nope' does not exist"


def test_limit_caps_an_expandable_pool():
    t = PoolTree([pool("capped", mem=Alloc(0, 8 * G, 1.0, True))], Amount(0, 64 * G), [vmA("v1", "capped", mem_res=6 * G)])
    assert admit(t, "capped", (0, 2 * G)).ok
    a = admit(t, "capped", (0, 3 * G))
    assert not a.ok and "limit 8192 MiB would be exceeded" in a.reason


def test_stopped_vms_hold_no_reservation():
    t = tree([vmA("a1", "team-b", mem_res=8 * G, running=False)])
    assert admit(t, "team-b", (0, 8 * G)).ok


def test_water_fill_levels():
    # floors, caps and shares as in scenario 30: reservation 8000/low, limit 3000, normal
    got = water_fill(20000, [8000, 0, 0], [10000, 3000, 10000], [2000, 4000, 4000])
    assert got == pytest.approx([8000, 3000, 9000])
    assert water_fill(100, [0, 0], [30, 40], [1, 1]) == [30, 40]  # everyone capped: rest unallocated
    assert water_fill(10, [10, 30], [10, 30], [1, 1]) == pytest.approx([2.5, 7.5])  # floors over capacity: scaled
    assert water_fill(90, [0, 0, 0], [100, 100, 100], [1, 2, 6]) == pytest.approx([10, 20, 60])
    assert water_fill(5, [], [], []) == []


def test_entitlements_follow_shares_at_each_level_and_demand():
    pools = [pool("prod", cpu=Alloc(0, None, pool_shares("high", "cpu"), True)), pool("test", cpu=Alloc(0, None, pool_shares("low", "cpu"), True))]
    vms = [vmA("p1", "prod"), vmA("t1", "test"), vmA("t2", "test")]
    t = PoolTree(pools, Amount(10000, 64 * G), vms)
    ent = entitlements(t, None, {})
    assert ent["p1"][0] == pytest.approx(8000)
    assert ent["t1"][0] == pytest.approx(1000) and ent["t2"][0] == pytest.approx(1000)
    ent = entitlements(t, (10000, 64 * G), {"p1": (1000, 1 * G)})
    assert ent["p1"] == pytest.approx((1000, 1 * G))
    assert ent["t1"][0] == pytest.approx(4500)


def test_entitlement_floor_limit_and_not_running():
    vms = [vmA("r", ROOT, cpu_res=6000), vmA("l", ROOT, cpu_limit=1000), vmA("off", ROOT, running=False)]
    t = PoolTree([], Amount(8000, 64 * G), vms)
    ent = entitlements(t, None, {"r": (100, G)})
    assert ent["r"][0] == pytest.approx(6000) and ent["l"][0] == pytest.approx(1000)
    assert "off" not in ent


def test_share_levels():
    assert pool_shares("high", "cpu") == 8000 and pool_shares("low", "mem") == 81920 and pool_shares(123, "cpu") == 123
    assert vm_shares("normal", "cpu", 4, 1024) == 4000 and vm_shares("high", "mem", 1, 1024) == 20480
    with pytest.raises(ValueError):
        pool_shares("huge", "cpu")
