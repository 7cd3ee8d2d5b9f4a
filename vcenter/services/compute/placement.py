"""Placement use cases: the dry run, the choice of a host for a new VM, the admission check of
a power-on, and DRS rules with their contradiction check. The decisions themselves are the
pure functions of vcenter.domain; this module turns rows into snapshots and answers into
errors with every host's reason.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vcenter.core.errors import Conflict, Invalid, NotFound
from vcenter.db.models import ClusterRule, Host, VirtualMachine
from vcenter.db.snapshots import cluster_snapshot, rule_snapshot, vm_snapshot
from vcenter.domain import placement, pools, rules
from vcenter.domain.cpu import CpuRequirement
from vcenter.domain.placement import PlacementResult
from vcenter.domain.snapshot import VmSnapshot
from vcenter.services.inventory import inventory
from vcenter.services.tasks.events import record_event


class PlacementFailed(Conflict):
    code = "PLACEMENT_FAILED"


def request_snapshot(data: dict[str, Any]) -> VmSnapshot:
    """A VM that does not exist yet, as the placement engine sees it."""
    cpu = data.get("cpu") or {}
    return VmSnapshot(
        id="new",
        name=data.get("name", "new"),
        vcpus=data.get("vcpus", 1),
        memory_mib=data.get("memory_mib", 64),
        cpu_reservation_mhz=float(data.get("cpu_reservation_mhz", 0)),
        memory_reservation_mib=int(data.get("memory_reservation_mib", 0)),
        datastores=frozenset(str(d["datastore_id"]) for d in data.get("disks", [])),
        port_groups=frozenset(str(n["portgroup_id"]) for n in data.get("nics", [])),
        cpu=CpuRequirement(features=frozenset(cpu["features_require"]), name=cpu.get("model", "")) if cpu.get("features_require") else None,
        pool=str(data["pool_id"]) if data.get("pool_id") else None,
    )


def dry_run(session: Session, cluster_id: int, data: dict[str, Any]) -> dict[str, Any]:
    inventory.get(session, "cluster", cluster_id)
    return placement.place(cluster_snapshot(session, cluster_id), request_snapshot(data)).to_dict()


def _failure(result: PlacementResult, what: str) -> PlacementFailed:
    body = result.to_dict()
    if result.refused:
        return PlacementFailed(f"{what}: {result.refused}", code="POOL_ADMISSION_REFUSED", details=body)
    return PlacementFailed(f"{what}: no host fits", details=body)


def choose_host(session: Session, cluster_id: int, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Where a new VM goes (deploy without a host): the best candidate, or 409 with every
    host's reason."""
    result = placement.place(cluster_snapshot(session, cluster_id), request_snapshot(data))
    if result.host is None:
        raise _failure(result, f"VM {data.get('name')} cannot be placed in cluster {cluster_id}")
    return int(result.host), result.to_dict()


def admit_power_on(session: Session, vm: VirtualMachine) -> dict[str, Any] | None:
    """May ``vm`` start on its host? Checks the host's filters (memory, CPU, rules, ...) and the
    resource pool admission; refuses with every host's reason (so the operator sees where it
    would fit). VMs outside clusters are checked by the host only (no rules, no pools)."""
    if vm.cluster_id is None:
        return None
    snapshot = cluster_snapshot(session, vm.cluster_id)
    request = next((v for v in snapshot.vms if v.id == str(vm.id)), None) or vm_snapshot(vm, None)
    request = VmSnapshot(**{**{f: getattr(request, f) for f in request.__slots__}, "host": None})
    result = placement.place(snapshot, request)
    if result.refused:
        raise _failure(result, f"VM {vm.name} cannot power on")
    if str(vm.host_id) not in {c.host_id for c in result.candidates}:
        own = next((r for r in result.rejected if r.host_id == str(vm.host_id)), None)
        reasons = "; ".join(own.reasons) if own else "not a candidate"
        # A dedicated failover host refuses with HA admission control's code (as a VMotion does).
        code = "HA_ADMISSION_REFUSED" if own and "FailoverHostFilter" in own.filters else None
        raise PlacementFailed(f"VM {vm.name} cannot power on on its host: {reasons}", code=code, details=result.to_dict())
    return result.to_dict()


# --- rules ---------------------------------------------------------------------------------
RULE_FIELDS = ("name", "kind", "mandatory", "enabled", "vm_ids", "host_ids", "vm_group", "host_group")


def _validate_members(session: Session, cluster_id: int, data: dict[str, Any]) -> None:
    for vm_id in data.get("vm_ids", []):
        vm = session.get(VirtualMachine, vm_id)
        if vm is None or vm.cluster_id != cluster_id:
            raise Invalid(f"vm_ids: VM {vm_id} is not in cluster {cluster_id}", code="INVALID_REFERENCE", details={"field": "vm_ids"})
    for host_id in data.get("host_ids", []):
        host = session.get(Host, host_id)
        if host is None or host.cluster_id != cluster_id:
            raise Invalid(f"host_ids: host {host_id} is not in cluster {cluster_id}", code="INVALID_REFERENCE", details={"field": "host_ids"})
    vm_host = data.get("kind") in ("run-on", "not-run-on")
    if vm_host and not data.get("host_ids"):
        raise Invalid("host_ids: a VM-host rule needs hosts", code="INVALID", details={"field": "host_ids"})
    if not vm_host and data.get("host_ids"):
        raise Invalid("host_ids: only VM-host rules name hosts", code="INVALID", details={"field": "host_ids"})
    if not vm_host and len(set(data.get("vm_ids", []))) < 2:
        raise Invalid("vm_ids: a VM-VM rule needs at least two VMs", code="INVALID", details={"field": "vm_ids"})


def _check_contradictions(session: Session, cluster_id: int, candidate: ClusterRule) -> None:
    others = [rule_snapshot(r) for r in session.scalars(select(ClusterRule).where(ClusterRule.cluster_id == cluster_id, ClusterRule.id != candidate.id))]
    found = rules.contradictions_with(others, rule_snapshot(candidate))
    if found:
        first = found[0]
        raise Conflict(f"rule {first.second!r} contradicts rule {first.first!r}: {first.reason}", code="RULE_CONTRADICTION", details={"rules": [first.first, first.second], "reason": first.reason})


def create_rule(session: Session, user: str, cluster_id: int, data: dict[str, Any]) -> ClusterRule:
    inventory.get(session, "cluster", cluster_id)
    _validate_members(session, cluster_id, data)
    rule = ClusterRule(cluster_id=cluster_id, **{k: data[k] for k in RULE_FIELDS if k in data})
    rule.vm_ids = sorted(set(rule.vm_ids or []))
    rule.host_ids = sorted(set(rule.host_ids or []))
    session.add(rule)
    inventory.flush_unique(session, f"rule {data['name']!r}")
    _check_contradictions(session, cluster_id, rule)
    record_event(
        session,
        "rule.created",
        f"{'must' if rule.mandatory else 'should'} {rule.kind} rule {rule.name} created in cluster {cluster_id}",
        username=user,
        object_type="cluster",
        object_id=cluster_id,
        data={"rule": rule.name},
    )
    return rule


def update_rule(session: Session, user: str, cluster_id: int, rule_id: int, changes: dict[str, Any]) -> ClusterRule:
    rule = get_rule(session, cluster_id, rule_id)
    inventory.check_version(rule, changes.pop("version", None))
    inventory.refuse_nulls(rule, changes)
    merged = {**{k: getattr(rule, k) for k in RULE_FIELDS}, **changes}
    _validate_members(session, cluster_id, merged)
    for k, v in changes.items():
        setattr(rule, k, sorted(set(v)) if k in ("vm_ids", "host_ids") else v)
    inventory.flush_unique(session, f"rule {rule.name!r}")
    _check_contradictions(session, cluster_id, rule)
    record_event(session, "rule.updated", f"rule {rule.name} updated: {', '.join(sorted(changes))}", username=user, object_type="cluster", object_id=cluster_id, data={"rule": rule.name})
    return rule


def get_rule(session: Session, cluster_id: int, rule_id: int) -> ClusterRule:
    rule = session.get(ClusterRule, rule_id)
    if rule is None or rule.cluster_id != cluster_id:
        raise NotFound(f"rule {rule_id} not found in cluster {cluster_id}", code="RULE_NOT_FOUND")
    return rule


def list_rules(session: Session, cluster_id: int) -> list[ClusterRule]:
    inventory.get(session, "cluster", cluster_id)
    return list(session.scalars(select(ClusterRule).where(ClusterRule.cluster_id == cluster_id).order_by(ClusterRule.id)))


def delete_rule(session: Session, user: str, cluster_id: int, rule_id: int) -> None:
    rule = get_rule(session, cluster_id, rule_id)
    session.delete(rule)
    record_event(session, "rule.deleted", f"rule {rule.name} deleted", username=user, object_type="cluster", object_id=cluster_id, data={"rule": rule.name})


def violations(session: Session, cluster_id: int) -> list[dict[str, Any]]:
    inventory.get(session, "cluster", cluster_id)
    return [{"rule": v.rule, "must": v.must, "message": v.message, "vms": sorted(v.vms), "hosts": sorted(v.hosts)} for v in rules.violations(cluster_snapshot(session, cluster_id))]


def entitlements(session: Session, cluster_id: int) -> dict[str, Any]:
    """Each running VM's entitlement from the pool hierarchy (demand = its configured size)."""
    inventory.get(session, "cluster", cluster_id)
    snapshot = cluster_snapshot(session, cluster_id)
    tree = pools.PoolTree.from_snapshot(snapshot)
    capacity = (sum(h.cpu_mhz for h in snapshot.hosts if h.usable), sum(h.memory_mib for h in snapshot.hosts if h.usable))
    demands = {v.id: (float(v.vcpus * 1000), float(v.memory_mib)) for v in snapshot.vms if v.host is not None}
    result = pools.entitlements(tree, capacity, demands)
    return {vm: {"cpu_mhz": round(cpu, 1), "memory_mib": round(mem, 1)} for vm, (cpu, mem) in sorted(result.items())}
