"""Maintenance evacuation decisions (vcenter.domain.evacuation): running VMs placed together,
powered-off VMs left, refusing maintenance, or moved as cold moves (no demand, datastores
mounted on the target, must rules kept), and every VM that cannot leave named with a code."""

from __future__ import annotations

import pytest

from vcenter.domain.evacuation import DEFAULT_POLICY, StoppedVm, parse_policy, plan
from vcenter.domain.snapshot import ClusterSnapshot, HostSnapshot, Rule, RuleKind, VmSnapshot

G = 1024


def host(hid: str, **kw) -> HostSnapshot:
    base = dict(cores=4, cpu_mhz=8000.0, memory_mib=4 * G, datastores=frozenset({"shared"}), port_groups=frozenset({"net"}))
    base.update(kw)
    return HostSnapshot(hid, name=hid, **base)


def vm(vid: str, mem: int = 1 * G, **kw) -> VmSnapshot:
    return VmSnapshot(vid, name=vid, memory_mib=mem, datastores=frozenset({"shared"}), **kw)


def off(v: VmSnapshot, state: str = "poweredOff", **kw) -> StoppedVm:
    return StoppedVm(v, state, **kw)


def test_policy_values():
    assert parse_policy(None) == DEFAULT_POLICY == "leave"
    assert [parse_policy(p) for p in ("leave", "refuse", "move")] == ["leave", "refuse", "move"]
    for bad in ("Move", "migrate", 1, ""):
        with pytest.raises(ValueError):
            parse_policy(bad)


def test_leave_moves_only_running_vms_and_keeps_stopped_ones_registered():
    snap = ClusterSnapshot((host("h1"), host("h2")), (vm("r", host="h1"), vm("o")))
    p = plan(snap, "h1", [vm("r", host="h1")], [off(vm("o"))], "leave")
    assert p.ok and p.moves == {"r": "h2"} and p.cold_moves == {} and p.left == ("o",)


def test_refuse_names_every_stopped_vm_before_placing_anything():
    snap = ClusterSnapshot((host("h1"),), (vm("r", host="h1"), vm("o"), vm("s")))
    p = plan(snap, "h1", [vm("r", host="h1")], [off(vm("o")), off(vm("s"), "suspended")], "refuse")
    assert not p.ok and [(b.vm_id, b.code) for b in p.blocked] == [("o", "POWERED_OFF_VMS_PRESENT"), ("s", "POWERED_OFF_VMS_PRESENT")]


def test_move_places_stopped_vms_after_the_running_ones_without_demand():
    # h2 is nearly full: the running VM needs h3; the powered-off 3 GiB VM still fits on h2
    # (it does not run, so it takes no memory) and goes to the least loaded host after the moves.
    h2 = host("h2", used_memory_mib=3 * G + 512)
    snap = ClusterSnapshot((host("h1"), h2, host("h3")), (vm("r", host="h1"), vm("big", 3 * G)))
    p = plan(snap, "h1", [vm("r", host="h1")], [off(vm("big", 3 * G))], "move")
    assert p.ok and p.moves == {"r": "h3"}
    assert p.cold_moves == {"big": "h3"}  # h3 is at 1/4 after the running move, h2 near 7/8
    # Only h2 left: the stopped VM goes there, though it could not run there now.
    snap = ClusterSnapshot((host("h1"), h2), (vm("big", 3 * G),))
    p = plan(snap, "h1", [], [off(vm("big", 3 * G))], "move")
    assert p.ok and p.cold_moves == {"big": "h2"}
    assert "h1" not in {c.host_id for r in p.stopped for c in r.candidates}


def test_move_needs_a_host_mounting_the_datastores_and_names_the_filter():
    snap = ClusterSnapshot((host("h1", datastores=frozenset({"shared", "local1"})), host("h2")), (vm("o"),))
    local = VmSnapshot("loc", name="loc", memory_mib=G, datastores=frozenset({"local1"}))
    p = plan(snap, "h1", [], [off(vm("o")), off(local)], "move")
    assert not p.ok and p.cold_moves == {"o": "h2"}
    (b,) = p.blocked
    assert (b.vm_id, b.code, b.filter) == ("loc", "NO_HOST", "DatastoreFilter") and "local1 not mounted" in b.reason


def test_move_blocks_suspended_unready_and_snapshotted_vms_with_their_codes():
    snap = ClusterSnapshot((host("h1"), host("h2")), ())
    p = plan(snap, "h1", [], [off(vm("s"), "suspended"), off(vm("n"), ready=False), off(vm("k"), snapshots=2), off(vm("fine"))], "move")
    assert {b.vm_id: b.code for b in p.blocked} == {"s": "VM_SUSPENDED", "n": "VM_NOT_READY", "k": "VM_HAS_SNAPSHOTS"}
    assert p.cold_moves == {"fine": "h2"}


def test_move_keeps_must_rules_and_binds_them_for_the_next_decision():
    # "o" and "q" must run on h3 or h4 (a VM-host must rule): h2, the emptiest, is refused to
    # both. "o" takes h3 (emptier than h4); "q" must be apart from "o", so h4 although h3 is
    # emptier: the cold move of "o" counts as its location for the next decision.
    rules = (Rule("pin", RuleKind.RUN_ON, True, frozenset({"o", "q"}), hosts=frozenset({"h3", "h4"})), Rule("apart", RuleKind.ANTI_AFFINITY, True, frozenset({"o", "q"})))
    hosts = (host("h1"), host("h2"), host("h3", used_memory_mib=G), host("h4", used_memory_mib=2 * G))
    snap = ClusterSnapshot(hosts, (vm("o"), vm("q")), rules)
    p = plan(snap, "h1", [], [off(vm("o")), off(vm("q"))], "move")
    assert p.ok and p.cold_moves == {"o": "h3", "q": "h4"}


def test_running_vm_that_fits_nowhere_is_blocked_with_the_filter_that_refused_every_host():
    snap = ClusterSnapshot((host("h1"), host("h2", memory_mib=G)), (vm("r", 2 * G, host="h1"),))
    p = plan(snap, "h1", [vm("r", 2 * G, host="h1")], [], "move")
    assert not p.ok and [(b.vm_id, b.code, b.filter) for b in p.blocked] == [("r", "NO_HOST", "MemoryFilter")]
