"""Performance statistics: agents' samples in, charts' series out, rollups and retention.

Vocabulary in vcenter.domain.metrics (counter, sample, tier, aggregate, bucket). A sample is
stamped with the server's clock when it arrives (agents' clocks may drift); the agent
measured the rates over its own monotonic interval.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from vcenter.core.clock import utcnow
from vcenter.core.errors import Invalid, NotFound
from vcenter.core.settings import Settings
from vcenter.db.models import Cluster, Host, MetricRollup, MetricSample, VirtualMachine
from vcenter.domain import metrics as m
from vcenter.messaging.contracts import MetricsReport

log = logging.getLogger(__name__)

_OBJECTS = {"host": Host, "vm": VirtualMachine, "cluster": Cluster}
OBJECT_TYPES = tuple(_OBJECTS)


def tiers_for(settings: Settings) -> tuple[m.Tier, ...]:
    return m.tiers(settings.metrics_sample_period, settings.metrics_tier_scale)


def _ts(at: datetime) -> float:
    return at.timestamp()


def _dt(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def _clean(values: dict[str, float]) -> dict[str, float]:
    """Known counters with finite values only (a report is agent input)."""
    return {k: float(v) for k, v in values.items() if k in m.COUNTERS and v == v and abs(v) != float("inf")}


# --- in ---------------------------------------------------------------------------------------
def ingest(session: Session, host: Host, report: MetricsReport, now: datetime | None = None) -> dict[str, int]:
    """Store one agent sample: the host's counters and those of its VMs (a VM the inventory
    places elsewhere, e.g. arriving by VMotion, is skipped). One bulk insert."""
    at = (now or utcnow()).replace(microsecond=0)
    rows: list[dict[str, Any]] = []
    host_values = _clean(report.host)
    if host_values:
        rows.append({"object_type": "host", "object_id": host.id, "tier": 0, "at": at, "values": host_values})
    if report.vms:
        uuids = [vm.uuid for vm in report.vms]
        ids = dict(session.execute(select(VirtualMachine.libvirt_uuid, VirtualMachine.id).where(VirtualMachine.host_id == host.id, VirtualMachine.libvirt_uuid.in_(uuids))).all())
        for vm in report.vms:
            values = _clean(vm.values)
            if vm.uuid in ids and values:
                rows.append({"object_type": "vm", "object_id": ids[vm.uuid], "tier": 0, "at": at, "values": values})
    if not rows:
        return {"stored": 0}
    # A second report within the same second (a retry) replaces nothing: the unique key
    # (object, tier, instant) drops it in the same statement.
    stored = session.connection().execute(_insert_ignoring_duplicates(session).returning(MetricSample.id), rows).all()
    return {"stored": len(stored)}


def _insert_ignoring_duplicates(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(MetricSample).on_conflict_do_nothing()
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(MetricSample).on_conflict_do_nothing()
    return insert(MetricSample)


# --- out --------------------------------------------------------------------------------------
def catalogue(settings: Settings) -> dict[str, Any]:
    return {
        "counters": [{"name": c.name, "unit": c.unit, "description": c.description, "object_types": list(c.object_types), "rollup": "average"} for c in m.COUNTERS.values()],
        "tiers": [{"name": t.name, "interval_s": t.interval_s, "retention_s": t.retention_s} for t in tiers_for(settings)],
    }


def _parse_time(value: str | None, field: str) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            return _dt(float(value))
        except (ValueError, OverflowError, OSError):
            raise Invalid(f"{field} is an ISO 8601 time or epoch seconds", code="INVALID_TIME", details={"field": field}) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def query(
    session: Session, settings: Settings, object_type: str, object_id: int, counters: list[str], tier: str | None = None, start: str | None = None, end: str | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """Series of ``counters`` of one object between ``start`` and ``end`` (default: the last
    hour), from ``tier`` (default: the finest tier that reaches back to ``start``)."""
    model = _OBJECTS.get(object_type)
    if model is None:
        raise NotFound(f"no statistics for {object_type} objects; they exist for {', '.join(_OBJECTS)}", code="UNKNOWN_OBJECT_TYPE")
    if session.get(model, object_id) is None:
        raise NotFound(f"{object_type} {object_id} not found")
    counters = counters or ["cpu.usage"]
    for counter in counters:
        if counter not in m.COUNTERS:
            raise Invalid(f"unknown counter {counter!r}", code="UNKNOWN_COUNTER", details={"field": "counter", "allowed": sorted(m.COUNTERS)})
        if object_type not in m.COUNTERS[counter].object_types:
            raise Invalid(f"{object_type} objects have no counter {counter}", code="UNKNOWN_COUNTER", details={"field": "counter"})
    now = now or utcnow()
    end_at = _parse_time(end, "end") or now
    start_at = _parse_time(start, "start") or end_at - timedelta(hours=1)
    if start_at >= end_at:
        raise Invalid("start must be before end", code="INVALID_TIME", details={"field": "start"})
    all_tiers = tiers_for(settings)
    if tier is None:
        chosen = m.choose_tier(all_tiers, _ts(start_at), _ts(now))
    else:
        try:
            chosen = m.tier_named(all_tiers, tier)
        except KeyError:
            raise Invalid(f"unknown tier {tier!r}", code="UNKNOWN_TIER", details={"field": "tier", "allowed": list(m.TIER_NAMES)}) from None
    if object_type == "cluster":
        hosts = list(session.scalars(select(Host.id).where(Host.cluster_id == object_id)))
        host_rows = (
            [
                (i, _ts(at), v or {})
                for i, at, v in session.execute(
                    select(MetricSample.object_id, MetricSample.at, MetricSample.values).where(
                        MetricSample.object_type == "host", MetricSample.object_id.in_(hosts), MetricSample.tier == chosen.level, MetricSample.at >= start_at, MetricSample.at <= end_at
                    )
                )
            ]
            if hosts
            else []
        )
    else:
        rows = session.execute(
            select(MetricSample.at, MetricSample.values)
            .where(MetricSample.object_type == object_type, MetricSample.object_id == object_id, MetricSample.tier == chosen.level, MetricSample.at >= start_at, MetricSample.at <= end_at)
            .order_by(MetricSample.at)
        ).all()
        stored = [(_ts(at), values or {}) for at, values in rows]
    series = []
    for counter in counters:
        points = m.across_hosts(host_rows, counter, chosen.interval_s) if object_type == "cluster" else m.series(stored, counter)
        series.append(
            {
                "counter": counter,
                "unit": m.COUNTERS[counter].unit,
                "points": [{"at": _dt(t).isoformat(), "avg": round(a.avg, 4), "min": round(a.min, 4), "max": round(a.max, 4), "samples": a.n} for t, a in points],
            }
        )
    return {"object_type": object_type, "object_id": object_id, "tier": chosen.name, "interval_s": chosen.interval_s, "start": start_at.isoformat(), "end": end_at.isoformat(), "series": series}


def latest(session: Session, object_type: str, since: datetime, object_ids: Any = None) -> dict[int, list[tuple[float, dict[str, Any]]]]:
    """Real-time rows of every object of a type (or of ``object_ids`` only: an id list or a
    select of ids) since ``since``: object id -> [(at, values)]."""
    out: dict[int, list[tuple[float, dict[str, Any]]]] = {}
    query = select(MetricSample.object_id, MetricSample.at, MetricSample.values).where(MetricSample.tier == 0, MetricSample.object_type == object_type, MetricSample.at >= since)
    if object_ids is not None:
        query = query.where(MetricSample.object_id.in_(object_ids))
    for object_id, at, values in session.execute(query):
        out.setdefault(object_id, []).append((_ts(at), values or {}))
    return out


# --- rollups and retention ---------------------------------------------------------------------
def rollup(session: Session, settings: Settings, now: datetime | None = None, max_buckets: int = 500) -> dict[str, int]:
    """Roll every finished bucket of every coarser tier up from the tier below, finest first,
    advancing each tier's watermark in the same transaction; a second run finds nothing to do."""
    now_s = _ts(now or utcnow())
    all_tiers = tiers_for(settings)
    by_name = {t.name: t for t in all_tiers}
    done: dict[str, int] = {}
    for tier in all_tiers:
        if tier.source is None:
            continue
        source = by_name[tier.source]
        mark = session.get(MetricRollup, tier.level)
        if mark is None:
            oldest = session.scalar(select(MetricSample.at).where(MetricSample.tier == source.level).order_by(MetricSample.at).limit(1))
            if oldest is None:
                continue
            starts = m.complete_buckets(None, now_s, tier.interval_s, settings.metrics_rollup_grace, _ts(oldest))
        else:
            # Source rows older than its retention are gone: never start before them.
            watermark = max(_ts(mark.done_until), m.bucket_start(now_s - source.retention_s, tier.interval_s))
            starts = m.complete_buckets(watermark, now_s, tier.interval_s, settings.metrics_rollup_grace, watermark)
        starts = starts[:max_buckets]
        if not starts:
            continue
        first, last_end = _dt(starts[0]), _dt(starts[-1] + tier.interval_s)
        # Streamed (a server-side cursor on PostgreSQL): memory holds the aggregates, not the
        # hundreds of thousands of samples behind them.
        rows = session.execute(
            select(MetricSample.object_type, MetricSample.object_id, MetricSample.at, MetricSample.values)
            .where(MetricSample.tier == source.level, MetricSample.at >= first, MetricSample.at < last_end)
            .execution_options(yield_per=5000)
        )
        aggregates = m.rollup(((t, i, _ts(at), v or {}) for t, i, at, v in rows), tier.interval_s)
        if aggregates:
            session.execute(insert(MetricSample), [{"object_type": t, "object_id": i, "tier": tier.level, "at": _dt(start), "values": values} for (t, i, start), values in aggregates.items()])
        if mark is None:
            session.add(MetricRollup(tier=tier.level, done_until=last_end))
        else:
            mark.done_until = last_end
        session.flush()
        done[tier.name] = len(aggregates)
    return done


def purge(session: Session, settings: Settings, now: datetime | None = None) -> dict[str, int]:
    """Retention: rows older than their tier's retention go."""
    now = now or utcnow()
    removed = {}
    for tier in tiers_for(settings):
        cutoff = now - timedelta(seconds=tier.retention_s)
        count = session.execute(delete(MetricSample).where(MetricSample.tier == tier.level, MetricSample.at < cutoff)).rowcount or 0
        if count:
            removed[tier.name] = count
    return removed
