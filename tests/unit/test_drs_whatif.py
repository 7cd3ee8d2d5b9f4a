"""DRS what-if (vcenter.domain.drs_whatif): a hypothetical change answered on a copy of the
snapshot, the cluster itself untouched. Moved from test_drs.py with the module."""

from __future__ import annotations

import pytest

from tests.unit.test_drs import host, vm
from vcenter.domain.drs import imbalance_of
from vcenter.domain.drs_whatif import HostFails, HostMaintenance, HostPowersOff, RuleAdded, VmDemandChange, describe_change, whatif
from vcenter.domain.snapshot import ClusterSnapshot, Rule, RuleKind


def test_whatif_host_failure_changes_nothing_and_reports_unplaceable():
    hosts = (host(1, mem=49152), host(2, mem=49152), host(3, mem=49152))
    vms = (vm("a", "h1", mem=8192), vm("big", "h1", mem=28672), vm("c", "h2", mem=24576), vm("d", "h3", mem=24576))
    snap = ClusterSnapshot(hosts, vms)
    res = whatif(snap, HostFails("h1"))
    assert set(res.unplaceable) == {"big"} and "memory short" in res.unplaceable["big"]
    assert res.displaced.placed["a"] in ("h2", "h3")
    assert res.now.imbalance == imbalance_of(snap).imbalance
    assert "h1" not in res.changed.loads
    assert res.to_dict()["unplaceable"] == res.unplaceable
    m = whatif(snap, HostMaintenance("h3"))
    assert set(m.displaced.placed) == {"d"} and not m.unplaceable and m.displaced.placed["d"] != "h3"
    assert snap.vms[0].host == "h1"  # untouched


def test_whatif_demand_and_rule():
    hosts = (host(1), host(2))
    vms = (vm("x1", "h1"), vm("x2", "h1"), vm("y1", "h2"), vm("y2", "h2"))
    snap = ClusterSnapshot(hosts, vms)
    even = {v.id: (4000.0, 4096.0) for v in vms}
    res = whatif(snap, VmDemandChange("x1", cpu_mhz=10000.0), demands=even)
    assert res.changed.imbalance > res.now.imbalance
    rule = Rule("apart", RuleKind.ANTI_AFFINITY, False, frozenset({"x1", "x2"}))
    res = whatif(snap, [RuleAdded(rule)], demands=even)
    assert res.plan.recommendations[0].reasons.rule == "apart"
    assert not snap.rules


def test_changes_apply_in_order_and_are_described_as_operators_read_them():
    snap = ClusterSnapshot((host(1), host(2), host(3)), (vm("a", "h1"), vm("b", "h2")))
    res = whatif(snap, [HostMaintenance("h1"), VmDemandChange("b", cpu_mhz=5000.0)])
    assert res.change == "host h1 enters maintenance; VM b demand cpu=5000 MHz"
    assert res.displaced.placed["a"] in ("h2", "h3")
    assert "h1" not in res.changed.loads and "h1" not in res.plan.after.loads
    assert describe_change(HostPowersOff("h3")) == "host h3 powers off (standby)"
    assert describe_change(HostFails("h2")) == "host h2 fails"
    assert describe_change(VmDemandChange("b", mem_mib=2048.0)) == "VM b demand mem=2048 MiB"
    rule = Rule("apart", RuleKind.ANTI_AFFINITY, True, frozenset({"a", "b"}))
    assert describe_change(RuleAdded(rule)) == "rule 'apart' added (must anti-affinity)"
    with pytest.raises(KeyError):
        whatif(snap, HostFails("h9"))
    with pytest.raises(KeyError):
        whatif(snap, VmDemandChange("zz", cpu_mhz=1.0))
