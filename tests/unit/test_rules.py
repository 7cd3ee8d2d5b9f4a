"""Rules: contradictions (with both names) and violations of a current placement."""

from __future__ import annotations

from vcenter.domain.rules import contradictions_with, find_contradictions, violations
from vcenter.domain.snapshot import ClusterSnapshot, HostSnapshot, Rule, RuleKind, VmSnapshot


def R(name, kind, must=True, vms=("a", "b"), hosts=(), host_group=None, enabled=True):
    return Rule(name, RuleKind(kind), must, frozenset(vms), frozenset(hosts), host_group=host_group, enabled=enabled)


def test_affinity_against_anti_affinity_on_the_same_vms():
    found = find_contradictions([R("together", "affinity"), R("apart", "anti-affinity", vms=("a", "b", "c"))])
    assert [(c.first, c.second) for c in found] == [("together", "apart")]
    assert "a, b" in found[0].reason
    assert "'together' and 'apart'" in str(found[0])


def test_must_and_should_do_not_contradict_and_one_shared_vm_is_not_enough():
    assert find_contradictions([R("together", "affinity"), R("apart", "anti-affinity", must=False)]) == []
    assert find_contradictions([R("together", "affinity"), R("apart", "anti-affinity", vms=("b", "c"))]) == []
    assert len(find_contradictions([R("x", "affinity", must=False), R("y", "anti-affinity", must=False)])) == 1


def test_run_on_inside_not_run_on_contradicts():
    run = R("on-rack1", "run-on", hosts=("h1",), host_group="rack1")
    avoid = R("not-rack1", "not-run-on", vms=("b",), hosts=("h1", "h2"), host_group="rack12")
    found = find_contradictions([run, avoid])
    assert [(c.first, c.second) for c in found] == [("on-rack1", "not-rack1")]
    assert "no host left" in found[0].reason
    # a host left over: no contradiction
    assert find_contradictions([R("on", "run-on", hosts=("h1", "h3")), avoid]) == []


def test_disjoint_run_on_groups_contradict_overlapping_ones_do_not():
    assert len(find_contradictions([R("r1", "run-on", hosts=("h1",)), R("r2", "run-on", hosts=("h2",))])) == 1
    assert find_contradictions([R("r1", "run-on", hosts=("h1", "h2")), R("r2", "run-on", hosts=("h2",))]) == []
    # different VMs: no contradiction
    assert find_contradictions([R("r1", "run-on", vms=("a",), hosts=("h1",)), R("r2", "run-on", vms=("b",), hosts=("h2",))]) == []


def test_disabled_rules_and_contradictions_with_a_new_rule():
    old = [R("together", "affinity"), R("x", "anti-affinity", enabled=False)]
    assert find_contradictions(old) == []
    found = contradictions_with(old, R("apart", "anti-affinity"))
    assert [(c.first, c.second) for c in found] == [("together", "apart")]
    assert contradictions_with(old, R("together", "anti-affinity")) == []  # same name: a replacement


def _snap(placement, rules):
    hosts = tuple(HostSnapshot(h) for h in ("h1", "h2", "h3"))
    vms = tuple(VmSnapshot(v, host=h) for v, h in placement.items())
    return ClusterSnapshot(hosts, vms, rules=tuple(rules))


def test_violations_of_each_kind():
    rules = [
        R("apart", "anti-affinity", vms=("a", "b", "c")),
        R("together", "affinity", must=False, vms=("d", "e")),
        R("on", "run-on", vms=("a",), hosts=("h2",), host_group="g2"),
        R("off", "not-run-on", vms=("d",), hosts=("h3",)),
    ]
    vs = violations(_snap({"a": "h1", "b": "h1", "c": "h2", "d": "h3", "e": "h2"}, rules))
    by = {v.rule: v for v in vs}
    assert set(by) == {"apart", "together", "on", "off"}
    assert by["apart"].must and by["apart"].vms == ("a", "b") and by["apart"].hosts == ("h1",)
    assert not by["together"].must and by["together"].hosts == ("h2", "h3")
    assert "outside host group 'g2'" in by["on"].message
    assert by["off"].vms == ("d",)


def test_no_violation_when_kept_and_powered_off_vms_bind_nothing():
    rules = [R("apart", "anti-affinity", vms=("a", "b")), R("together", "affinity", vms=("c", "d"))]
    assert violations(_snap({"a": "h1", "b": "h2", "c": "h3", "d": "h3"}, rules)) == []
    snap = _snap({"a": "h1", "c": "h3"}, rules)
    snap = ClusterSnapshot(snap.hosts, snap.vms + (VmSnapshot("b"), VmSnapshot("d")), rules=snap.rules)
    assert violations(snap) == []
