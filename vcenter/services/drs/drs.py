"""DRS use cases: run the balancer on a cluster, keep its recommendations, apply them as
VMotion Tasks (automatically in fully automated clusters), dismiss them, and what-if; wake a
standby host when the powered-on hosts cannot hold the demand (``DrsPlan.wake``).

Settings (``cluster.settings["drs"]``): enabled, automation (manual | partial | full),
threshold 1-5, vm_overrides {vm id: level}, cooldown_s, budget, ha_reserve_fraction.
Demand: each running VM's CPU demand measured on its host (vcenter.domain.demand; configured
size until measured; the smoothed demand, or the last sample where it shifted beyond the
noise: ``demand.level_shift_estimate``), memory as ``measured_demands`` says; history: migrations in flight, and each
VM's last move.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from vcenter.core.clock import utcnow
from vcenter.core.errors import Conflict, Invalid, InvalidState, NotFound, VcError
from vcenter.core.settings import Settings, get_settings
from vcenter.db.models import Cluster, DrsRecommendation, Task, VirtualMachine, VmStats
from vcenter.db.snapshots import cluster_snapshot
from vcenter.domain import drs, drs_whatif
from vcenter.domain.demand import level_shift_estimate
from vcenter.domain.snapshot import Rule, RuleKind
from vcenter.domain.states import TaskState
from vcenter.services.ha import ha
from vcenter.services.compute import migration
from vcenter.services.inventory import inventory, host_power
from vcenter.services.monitoring import metrics
from vcenter.services.tasks.events import record_event
from vcenter.observability.committed import after_commit
from vcenter.observability.metrics import DRS_MOVES


def drs_settings(cluster: Cluster) -> drs.DrsSettings:
    conf = (cluster.settings or {}).get("drs") or {}
    try:
        return drs.DrsSettings(
            threshold=int(conf.get("threshold", 3)),
            automation=conf.get("automation", "full"),
            vm_overrides={str(k): v for k, v in (conf.get("vm_overrides") or {}).items()},
            cooldown_s=float(conf.get("cooldown_s", 1800)),
            budget=int(conf.get("budget", 8)),
            confidence=float(conf.get("confidence", drs.DrsSettings().confidence)),
            risk_gain=float(conf.get("risk_gain", drs.DrsSettings().risk_gain)),
            ha=drs.HaReserve(fraction=max(float(conf.get("ha_reserve_fraction", 0)), _ha_reserve(cluster))),
        )
    except (ValueError, TypeError) as exc:
        raise Invalid(f"cluster {cluster.name}: DRS settings: {exc}", code="INVALID_DRS_SETTINGS") from exc


def history(session: Session, cluster_id: int, cooldown_s: float) -> drs.DrsHistory:
    migrations = session.scalars(select(Task).where(Task.kind == "vm.migrate", Task.created_at > utcnow() - timedelta(seconds=max(cooldown_s, 1))))
    in_flight, recent = set(), {}
    now = utcnow()
    for task in migrations:
        if not TaskState(task.state).finished:
            in_flight.add(str(task.object_id))
        elif task.state == TaskState.SUCCESS.value and task.finished_at:
            recent[str(task.object_id)] = (now - task.finished_at).total_seconds()
    return drs.DrsHistory(in_flight=frozenset(in_flight), recent=recent)


def measured_demands(session: Session, cluster_id: int, config: Settings | None = None) -> dict[str, tuple[float, float]]:
    """CPU demand measured on the hosts (VMs without a measurement yet keep their configured
    size). Memory demand: what the guest uses as its balloon driver reports it (``mem.guest_used``
    of its latest real-time metrics sample, of the last three sample periods), else its
    configured memory. QEMU's resident memory is no measure of it (every page the guest ever
    touched stays resident, plus QEMU's own), so a VM without balloon statistics demands its
    configured size, as before."""
    config = config or get_settings()
    rows = session.execute(
        select(VirtualMachine.id, VmStats.cpu_demand_mhz, VirtualMachine.memory_mib, VmStats.cpu_demand_spread_mhz, VmStats.cpu_demand_window)
        .join(VmStats, VmStats.vm_id == VirtualMachine.id)
        .where(VirtualMachine.cluster_id == cluster_id, VmStats.cpu_demand_mhz.is_not(None))
    )
    # The smoothed demand, or the last sample where it shifted beyond the noise
    # (demand.level_shift_estimate; as the trace replay gives DRS).
    demands = {str(vm_id): (float(level_shift_estimate(cpu, window[-1], spread or 0.0)) if len(window or ()) >= 3 else float(cpu), float(mem)) for vm_id, cpu, mem, spread, window in rows}
    if demands:
        since = utcnow() - timedelta(seconds=3 * config.metrics_sample_period)
        in_cluster = select(VirtualMachine.id).where(VirtualMachine.cluster_id == cluster_id)
        for vm_id, samples in metrics.latest(session, "vm", since, in_cluster).items():
            key = str(vm_id)
            if key not in demands:
                continue
            _, values = max(samples, key=lambda s: s[0])
            if values.get("mem.guest_used") is not None:
                demands[key] = (demands[key][0], min(demands[key][1], float(values["mem.guest_used"])))
    return demands


def measured_spreads(session: Session, cluster_id: int) -> dict[str, tuple[float, float]]:
    """The noise of each VM's CPU demand (MHz; memory is taken as exact), as its host's reports
    measured it and the API shows it (``cpu_demand_spread_mhz``: ``demand.noise_spread`` of the
    last ``NOISE_WINDOW`` samples), which tells a climbing or stepping demand (no noise) from
    one that goes up and down (DRS does not chase gains within the noise). A VM with fewer than
    three samples has none (exact)."""
    rows = session.execute(
        select(VmStats.vm_id, VmStats.cpu_demand_spread_mhz, VmStats.cpu_demand_window).join(VirtualMachine, VirtualMachine.id == VmStats.vm_id).where(VirtualMachine.cluster_id == cluster_id)
    )
    return {str(vm_id): (float(spread or 0.0), 0.0) for vm_id, spread, window in rows if len(window or ()) >= 3}


def run(session: Session, user: str, cluster_id: int, config: Settings) -> dict[str, Any]:
    """One DRS pass: pending recommendations of earlier passes become stale, the new ones
    are stored, and the automatic ones are applied at once."""
    cluster: Cluster = inventory.get(session, "cluster", cluster_id)
    settings = drs_settings(cluster)
    snapshot = cluster_snapshot(session, cluster_id)
    plan = drs.balance(snapshot, settings, measured_demands(session, cluster_id, config), history(session, cluster_id, settings.cooldown_s), measured_spreads(session, cluster_id))
    session.execute(update(DrsRecommendation).where(DrsRecommendation.cluster_id == cluster_id, DrsRecommendation.state == "pending").values(state="stale", decided_at=utcnow()))
    stored = []
    for rec in plan.recommendations:
        row = DrsRecommendation(
            cluster_id=cluster_id,
            vm_id=int(rec.vm_id),
            source_host_id=int(rec.source),
            target_host_id=int(rec.target),
            priority=rec.priority,
            kind=rec.kind,
            reason=rec.reason,
            reasons=rec.to_dict()["reasons"],
        )
        session.add(row)
        session.flush()
        if rec.automatic:
            try:
                with session.begin_nested():
                    _apply(session, user, row, config)
            except VcError as exc:  # e.g. the VM became busy: the move stays recommended
                row.state = "pending"
                row.reason = f"{row.reason}; not applied automatically: {exc.code}"
        stored.append(row)
    applied = sum(1 for row in stored if row.state == "applied")
    after_commit(session, lambda: record_moves(applied, len(stored) - applied))
    record_event(
        session,
        "cluster.drs.run",
        f"DRS on cluster {cluster.name}: imbalance {plan.before.imbalance:.4f} (target {settings.target}), {len(stored)} recommendation(s)",
        username=user,
        object_type="cluster",
        object_id=cluster.id,
        object_name=cluster.name,
        data={"before": plan.before.imbalance, "after": plan.after.imbalance, "recommendations": len(stored)},
    )
    return {
        "imbalance_before": plan.before.imbalance,
        "imbalance_after": plan.after.imbalance,
        "target": settings.target,
        "recommendations": [recommendation_read(r) for r in stored],
        "notes": list(plan.notes),
        "wake": _wake(session, user, cluster, plan, settings),
    }


def record_moves(applied: int, recommended: int) -> None:
    """A pass's moves, counted once its transaction committed (vcenter_drs_moves_total)."""
    if applied:
        DRS_MOVES.labels("applied").inc(applied)
    if recommended:
        DRS_MOVES.labels("recommended").inc(recommended)


def _wake(session: Session, user: str, cluster: Cluster, plan: drs.DrsPlan, settings: drs.DrsSettings) -> list[dict[str, Any]]:
    """Standby hosts the plan asks for (the powered-on hosts cannot hold the demand): powered
    on through DPM's path (services.inventory.host_power, a ``host.exitStandby`` Task) when the cluster is
    fully automated, recommended otherwise; each an Event with the shortfall."""
    out = []
    automatic = drs.Automation(settings.automation) == drs.Automation.FULL
    for w in plan.wake:
        entry: dict[str, Any] = {**w.to_dict(), "automatic": automatic, "task_id": None, "error": None}
        if automatic:
            try:
                with session.begin_nested():
                    entry["task_id"] = host_power.power_on_host(session, user, int(w.host), reason=f"DRS: {w.reason}").id
            except VcError as exc:  # e.g. no power settings, or a power action already running
                entry["error"] = exc.code
        record_event(
            session,
            "cluster.drs.wake",
            f"DRS on cluster {cluster.name}: {'powers on' if automatic else 'recommends powering on'} standby host {w.host}: {w.reason}",
            username=user,
            object_type="cluster",
            object_id=cluster.id,
            object_name=cluster.name,
            data=entry,
        )
        out.append(entry)
    return out


def _apply(session: Session, user: str, row: DrsRecommendation, config: Settings) -> None:
    task = migration.migrate(session, user, row.vm_id, row.target_host_id, config)
    task.params = {**task.params, "drs_recommendation": row.id, "reason": row.reason}
    row.state = "applied"
    row.task_id = task.id
    row.decided_at = utcnow()


def get(session: Session, cluster_id: int, rec_id: int) -> DrsRecommendation:
    row = session.get(DrsRecommendation, rec_id)
    if row is None or row.cluster_id != cluster_id:
        raise NotFound(f"recommendation {rec_id} not found in cluster {cluster_id}", code="RECOMMENDATION_NOT_FOUND")
    return row


def apply(session: Session, user: str, cluster_id: int, rec_id: int, config: Settings) -> DrsRecommendation:
    row = get(session, cluster_id, rec_id)
    if row.state != "pending":
        raise InvalidState(f"recommendation {rec_id} is {row.state}", code="RECOMMENDATION_NOT_PENDING")
    _apply(session, user, row, config)
    return row


def dismiss(session: Session, user: str, cluster_id: int, rec_id: int) -> DrsRecommendation:
    row = get(session, cluster_id, rec_id)
    if row.state != "pending":
        raise InvalidState(f"recommendation {rec_id} is {row.state}", code="RECOMMENDATION_NOT_PENDING")
    row.state = "dismissed"
    row.decided_at = utcnow()
    record_event(session, "cluster.drs.dismissed", f"DRS recommendation {rec_id} dismissed: {row.reason}", username=user, object_type="cluster", object_id=cluster_id)
    return row


def list_recommendations(session: Session, cluster_id: int, state: str | None) -> list[dict[str, Any]]:
    inventory.get(session, "cluster", cluster_id)
    query = select(DrsRecommendation).where(DrsRecommendation.cluster_id == cluster_id).order_by(DrsRecommendation.id.desc())
    if state:
        query = query.where(DrsRecommendation.state == state)
    return [recommendation_read(r) for r in session.scalars(query.limit(500))]


def recommendation_read(row: DrsRecommendation) -> dict[str, Any]:
    return {
        "id": row.id,
        "vm_id": row.vm_id,
        "source_host_id": row.source_host_id,
        "target_host_id": row.target_host_id,
        "priority": row.priority,
        "kind": row.kind,
        "reason": row.reason,
        "reasons": row.reasons,
        "state": row.state,
        "task_id": row.task_id,
        "created_at": row.created_at,
        "decided_at": row.decided_at,
    }


def whatif(session: Session, cluster_id: int, change: dict[str, Any]) -> dict[str, Any]:
    """The plan and the resulting balance after a hypothetical change; nothing is touched."""
    cluster: Cluster = inventory.get(session, "cluster", cluster_id)
    settings = drs_settings(cluster)
    snapshot = cluster_snapshot(session, cluster_id)
    kind = change["kind"]
    if kind in ("host-fails", "host-maintenance", "host-powers-off"):
        host = str(change["host_id"])
        if host not in {h.id for h in snapshot.hosts}:
            raise Invalid(f"host_id: host {host} is not in the cluster", code="INVALID_REFERENCE", details={"field": "host_id"})
        hypothetical = {"host-fails": drs_whatif.HostFails, "host-maintenance": drs_whatif.HostMaintenance, "host-powers-off": drs_whatif.HostPowersOff}[kind](host)
    elif kind == "vm-demand":
        if str(change["vm_id"]) not in {v.id for v in snapshot.vms}:
            raise Invalid(f"vm_id: VM {change['vm_id']} is not running in the cluster", code="INVALID_REFERENCE", details={"field": "vm_id"})
        hypothetical = drs_whatif.VmDemandChange(str(change["vm_id"]), change.get("cpu_mhz"), change.get("memory_mib"))
    elif kind == "rule-added":
        rule = change["rule"]
        unknown = sorted({str(v) for v in rule["vm_ids"]} - {v.id for v in snapshot.vms}) + sorted({str(h) for h in rule.get("host_ids", [])} - {h.id for h in snapshot.hosts})
        if unknown:
            raise Invalid(f"rule: not in the cluster: {', '.join(unknown)}", code="INVALID_REFERENCE", details={"field": "rule", "unknown": unknown})
        hypothetical = drs_whatif.RuleAdded(
            Rule(
                name=rule["name"],
                kind=RuleKind(rule["kind"]),
                must=bool(rule.get("mandatory")),
                vms=frozenset(str(v) for v in rule["vm_ids"]),
                hosts=frozenset(str(h) for h in rule.get("host_ids", [])),
            )
        )
    else:
        raise Invalid(f"kind: unknown change {kind!r}", code="INVALID", details={"field": "kind"})
    result = drs_whatif.whatif(snapshot, hypothetical, settings, measured_demands(session, cluster_id), history(session, cluster_id, settings.cooldown_s), measured_spreads(session, cluster_id))
    return result.to_dict()


def run_due(session: Session, config: Settings) -> list[int]:
    """Beat's pass: every cluster with DRS enabled."""
    ran = []
    for cluster in session.scalars(select(Cluster).order_by(Cluster.id)):
        if ((cluster.settings or {}).get("drs") or {}).get("enabled"):
            try:
                run(session, "drs", cluster.id, config)
                ran.append(cluster.id)
            except Conflict:
                continue  # an automatic move raced an operator's task: the next pass decides again
    return ran


def _ha_reserve(cluster: Cluster) -> float:
    """What HA admission control holds back for failover (vcenter.services.ha.ha)."""
    return ha.reserve_fraction(cluster)
