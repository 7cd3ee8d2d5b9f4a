"""Performance counters, statistics tiers and rollup math.

Vocabulary (vCenter's):
- counter: one measured quantity of an object, dotted like ``cpu.usage``; its unit and the
  object types that report it are in COUNTERS.
- sample: one value of every counter of one object at one instant, reported by the agent of
  the object's host every sample period (vCenter: 20 s).
- tier: a resolution of the kept statistics. ``realtime`` holds the samples themselves; each
  coarser tier holds one *aggregate* per object per bucket of its interval, rolled up from the
  tier below it, and keeps them for its retention (vCenter: 20 s for an hour, 5 min for a day,
  30 min for a week, 2 h for a month, 1 day for a year).
- aggregate: (avg, min, max, n) over a bucket, n = how many realtime samples it covers, so
  an aggregate of aggregates weighs each by the samples it covers (a bucket with a gap of
  missing samples counts for less).
- bucket: [start, start + interval) with start a multiple of the interval since the epoch.

Pure: times are epoch seconds given by the caller; ``scale`` compresses every interval and
retention (tests run the tiers on compressed time).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast


@dataclass(frozen=True)
class Counter:
    name: str
    unit: str
    description: str
    object_types: tuple[str, ...]


COUNTERS: dict[str, Counter] = {
    c.name: c
    for c in (
        Counter("cpu.usage", "percent", "CPU used, as a share of the object's CPU capacity (host: all its cores; VM: its vCPUs)", ("host", "vm", "cluster")),
        Counter("cpu.usagemhz", "MHz", "CPU used, in MHz at the host's core speed", ("host", "vm", "cluster")),
        Counter(
            "mem.usage",
            "percent",
            "memory used, as a share of the object's memory (VM: as its guest's balloon driver reports it; without one, the resident memory of its QEMU process over its configured memory, capped at 100)",
            ("host", "vm", "cluster"),
        ),
        Counter("mem.guest_used", "MiB", "memory the guest uses as its balloon driver reports it (available minus unused); DRS's memory demand of the VM", ("vm",)),
        Counter("mem.consumed", "MiB", "memory used (host: total minus free, buffers and cache; VM: resident memory of its QEMU process)", ("host", "vm", "cluster")),
        Counter("disk.read", "bytes/s", "bytes read from virtual disks (host: the sum over its running VMs)", ("host", "vm", "cluster")),
        Counter("disk.write", "bytes/s", "bytes written to virtual disks (host: the sum over its running VMs)", ("host", "vm", "cluster")),
        Counter("net.rx", "bytes/s", "bytes received by virtual NICs (host: the sum over its running VMs)", ("host", "vm", "cluster")),
        Counter("net.tx", "bytes/s", "bytes sent by virtual NICs (host: the sum over its running VMs)", ("host", "vm", "cluster")),
    )
}

OBJECT_TYPES = ("host", "vm", "cluster")
# A cluster's series is made from its hosts' at query time: percentages are averaged over the
# hosts reporting, quantities (MHz, MiB, bytes/s) summed.
SUMMED_UNITS = frozenset({"MHz", "MiB", "bytes/s"})


@dataclass(frozen=True)
class Tier:
    """``level`` is what the database stores; ``source`` the tier it is rolled up from."""

    level: int
    name: str
    interval_s: float
    retention_s: float
    source: str | None


_BASE_TIERS = (
    ("realtime", 20.0, 3600.0, None),
    ("day", 300.0, 86400.0, "realtime"),
    ("week", 1800.0, 7 * 86400.0, "day"),
    ("month", 7200.0, 30 * 86400.0, "week"),
    ("year", 86400.0, 365 * 86400.0, "month"),
)

TIER_NAMES = tuple(t[0] for t in _BASE_TIERS)


def tiers(sample_period_s: float = 20.0, scale: float = 1.0) -> tuple[Tier, ...]:
    """The tiers, realtime's interval being the agents' sample period, every other interval
    and every retention multiplied by ``scale`` (1.0: vCenter's)."""
    out = []
    for level, (name, interval, retention, source) in enumerate(_BASE_TIERS):
        out.append(Tier(level, name, sample_period_s if source is None else interval * scale, retention * scale, source))
    return tuple(out)


def tier_named(all_tiers: Sequence[Tier], name: str) -> Tier:
    for tier in all_tiers:
        if tier.name == name:
            return tier
    raise KeyError(name)


def choose_tier(all_tiers: Sequence[Tier], start_s: float, now_s: float) -> Tier:
    """The finest tier that still holds data as old as ``start_s`` (vCenter picks the chart's
    interval the same way: past hour -> real-time, past day -> 5 min, ...); the coarsest
    when even it does not reach that far back."""
    age = now_s - start_s
    for tier in all_tiers:
        if age <= tier.retention_s:
            return tier
    return all_tiers[-1]


@dataclass(frozen=True)
class Aggregate:
    avg: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, value: float) -> "Aggregate":
        return cls(value, value, value, 1)

    def encode(self) -> list[float]:
        return [round(self.avg, 4), round(self.min, 4), round(self.max, 4), self.n]

    @classmethod
    def decode(cls, raw: object) -> "Aggregate":
        """A stored value: a plain number (realtime sample) or [avg, min, max, n]."""
        if isinstance(raw, (int, float)):
            return cls.of(float(raw))
        avg, lo, hi, n = cast(Sequence[float], raw)  # [avg, min, max, n] as encode writes it
        return cls(float(avg), float(lo), float(hi), int(n))


def combine(parts: Iterable[Aggregate]) -> Aggregate | None:
    """One aggregate over several: the average weighted by the samples each covers."""
    total = 0.0
    count = 0
    lo = math.inf
    hi = -math.inf
    for part in parts:
        if part.n <= 0:
            continue
        total += part.avg * part.n
        count += part.n
        lo = min(lo, part.min)
        hi = max(hi, part.max)
    if count == 0:
        return None
    return Aggregate(total / count, lo, hi, count)


def bucket_start(at_s: float, interval_s: float) -> float:
    return math.floor(at_s / interval_s) * interval_s


def complete_buckets(done_until_s: float | None, now_s: float, interval_s: float, grace_s: float, oldest_s: float) -> list[float]:
    """Starts of the buckets to roll up now: those after ``done_until_s`` (the watermark: end
    of the last bucket rolled up; None the first time, then from ``oldest_s``) that ended at
    least ``grace_s`` ago, so a late sample still counts."""
    first = bucket_start(oldest_s if done_until_s is None else done_until_s, interval_s)
    if done_until_s is not None and first < done_until_s:
        first += interval_s
    last_end = bucket_start(now_s - grace_s, interval_s)
    starts = []
    start = first
    while start + interval_s <= last_end + 1e-9:
        starts.append(start)
        start += interval_s
    return starts


Row = tuple[str, int, float, Mapping[str, object]]  # object_type, object_id, at (s), stored values


def rollup(rows: Iterable[Row], interval_s: float) -> dict[tuple[str, int, float], dict[str, list[float]]]:
    """Aggregate rows of a finer tier into buckets of ``interval_s``: for every (object_type,
    object_id, bucket start) the encoded aggregate of every counter present."""
    # Running [weighted sum, min, max, n] per counter: the same as ``combine`` over the parts,
    # without building an Aggregate per stored value (hundreds of thousands per pass).
    grouped: dict[tuple[str, int, float], dict[str, list[float]]] = {}
    for object_type, object_id, at_s, values in rows:
        key = (object_type, object_id, math.floor(at_s / interval_s) * interval_s)
        counters = grouped.get(key)
        if counters is None:
            counters = grouped[key] = {}
        for counter, raw in values.items():
            if raw is None:
                continue
            n: float  # a sample count, stored as the JSON number it was
            if isinstance(raw, (int, float)):
                total, lo, hi, n = float(raw), float(raw), float(raw), 1
            else:
                avg, lo, hi, n = cast(Sequence[float], raw)
                if n <= 0:
                    continue
                total = avg * n
            acc = counters.get(counter)
            if acc is None:
                counters[counter] = [total, lo, hi, n]
            else:
                acc[0] += total
                if lo < acc[1]:
                    acc[1] = lo
                if hi > acc[2]:
                    acc[2] = hi
                acc[3] += n
    out: dict[tuple[str, int, float], dict[str, list[float]]] = {}
    for key, counters in grouped.items():
        if counters:
            out[key] = {c: Aggregate(acc[0] / acc[3], acc[1], acc[2], int(acc[3])).encode() for c, acc in counters.items()}
    return out


def across_hosts(rows: Iterable[tuple[int, float, Mapping[str, object]]], counter: str, interval_s: float) -> list[tuple[float, Aggregate]]:
    """A cluster's points from its hosts' rows (host id, at, values): per bucket of
    ``interval_s``, each host's average in it, then their sum (quantities) or average
    (percentages); min and max are the lowest and highest host, n the hosts reporting."""
    summed = COUNTERS[counter].unit in SUMMED_UNITS
    buckets: dict[float, dict[int, list[float]]] = {}
    for host_id, at_s, values in rows:
        raw = values.get(counter)
        if raw is None:
            continue
        buckets.setdefault(bucket_start(at_s, interval_s), {}).setdefault(host_id, []).append(Aggregate.decode(raw).avg)
    points = []
    for start in sorted(buckets):
        per_host = [sum(v) / len(v) for v in buckets[start].values()]
        total = sum(per_host)
        points.append((start, Aggregate(total if summed else total / len(per_host), min(per_host), max(per_host), len(per_host))))
    return points


def series(rows: Iterable[tuple[float, Mapping[str, object]]], counter: str) -> list[tuple[float, Aggregate]]:
    """One counter's points (at, aggregate) from stored rows (at, values), in time order."""
    points = []
    for at_s, values in rows:
        raw = values.get(counter)
        if raw is not None:
            points.append((at_s, Aggregate.decode(raw)))
    points.sort(key=lambda p: p[0])
    return points
