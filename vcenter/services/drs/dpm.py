"""DPM use cases: sample the cluster's demand, decide (vcenter.domain.dpm) and power hosts off
(after evacuating them) or on, automatically in fully automated clusters.

Settings (``cluster.settings["dpm"]``): enabled, automation (manual | full), target,
tolerance, sample_s, off_window_s, on_window_s, host_cooldown_s, min_hosts_on,
ha_reserve_fraction. A pass runs every ``VCENTER_DPM_PERIOD`` seconds (beat) and records one
demand sample; decisions use the samples of the windows.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from vcenter.core.clock import utcnow
from vcenter.core.errors import Invalid, VcError
from vcenter.core.settings import Settings
from vcenter.db.models import Cluster, DpmSample, Task
from vcenter.db.snapshots import cluster_snapshot
from vcenter.domain import dpm, drs
from vcenter.services.ha import ha
from vcenter.services.compute import maintenance_mode
from vcenter.services.inventory import inventory, host_power
from vcenter.services.drs.drs import measured_demands
from vcenter.services.tasks.events import record_event


def dpm_settings(cluster: Cluster) -> dpm.DpmSettings:
    conf = (cluster.settings or {}).get("dpm") or {}
    try:
        return dpm.DpmSettings(
            target=float(conf.get("target", 0.63)),
            tolerance=float(conf.get("tolerance", 0.18)),
            sample_s=float(conf.get("sample_s", 300)),
            off_window_s=float(conf.get("off_window_s", 2400)),
            on_window_s=float(conf.get("on_window_s", 300)),
            host_cooldown_s=float(conf.get("host_cooldown_s", 1800)),
            min_hosts_on=int(conf.get("min_hosts_on", 1)),
            automation=conf.get("automation", "full"),
            ha=drs.HaReserve(fraction=max(float(conf.get("ha_reserve_fraction", 0)), _ha_reserve(cluster))),
        )
    except (ValueError, TypeError) as exc:
        raise Invalid(f"cluster {cluster.name}: DPM settings: {exc}", code="INVALID_DPM_SETTINGS") from exc


def _history(session: Session, cluster_id: int, cooldown_s: float) -> dpm.DpmHistory:
    recent: dict[str, float] = {}
    now = utcnow()
    since = now - timedelta(seconds=max(cooldown_s, 1))
    for task in session.scalars(select(Task).where(Task.kind.in_(("host.enterStandby", "host.exitStandby")), Task.created_at > since)):
        recent[str(task.object_id)] = (now - task.created_at).total_seconds()
    return dpm.DpmHistory(recent=recent)


def run(session: Session, user: str, cluster_id: int, config: Settings) -> dict[str, Any]:
    cluster: Cluster = inventory.get(session, "cluster", cluster_id)
    settings = dpm_settings(cluster)
    demands = measured_demands(session, cluster_id, config)
    session.add(DpmSample(cluster_id=cluster_id, demands={k: list(v) for k, v in demands.items()}))
    keep = settings.samples_for(max(settings.off_window_s, settings.on_window_s))
    session.flush()
    rows = list(session.scalars(select(DpmSample).where(DpmSample.cluster_id == cluster_id).order_by(DpmSample.id.desc()).limit(keep)))
    session.execute(delete(DpmSample).where(DpmSample.cluster_id == cluster_id, DpmSample.id < (rows[-1].id if rows else 0)))
    samples = [{k: tuple(v) for k, v in r.demands.items()} for r in reversed(rows)]
    plan = dpm.decide(cluster_snapshot(session, cluster_id), settings, samples, _history(session, cluster_id, settings.host_cooldown_s))
    actions = []
    for rec in plan.recommendations:
        entry = {**rec.to_dict(), "reason": rec.reason, "task_id": None, "error": None}
        if rec.automatic:
            try:
                with session.begin_nested():
                    if rec.action == "power-off":
                        task = maintenance_mode.enter_maintenance(session, user, int(rec.host), config, standby=True)
                    else:
                        task = host_power.power_on_host(session, user, int(rec.host), reason=rec.reason)
                    entry["task_id"] = task.id
            except VcError as exc:
                entry["error"] = exc.code
        actions.append(entry)
        record_event(
            session,
            f"cluster.dpm.{rec.action}",
            f"DPM on cluster {cluster.name}: {rec.action} host {rec.host}: {rec.reason}",
            username=user,
            object_type="cluster",
            object_id=cluster.id,
            object_name=cluster.name,
            data={"host": rec.host, "automatic": rec.automatic, "task_id": entry["task_id"]},
        )
    return {**plan.to_dict(), "recommendations": actions, "samples": len(samples)}


def run_due(session: Session, config: Settings) -> list[int]:
    ran = []
    for cluster in session.scalars(select(Cluster).order_by(Cluster.id)):
        if ((cluster.settings or {}).get("dpm") or {}).get("enabled"):
            run(session, "dpm", cluster.id, config)
            ran.append(cluster.id)
    return ran


def _ha_reserve(cluster: Cluster) -> float:
    """What HA admission control holds back for failover (vcenter.services.ha.ha)."""
    return ha.reserve_fraction(cluster)
