"""Performance samples on the host: two readings of libvirt's cumulative counters make rates.

Vocabulary: a *reading* (HostCounters) is what libvirt says now: cumulative CPU time and I/O
byte counts, instantaneous memory. A *sample* (MetricsReport) is the counter values of the
host and each running VM over the interval between two readings, in the units of
vcenter.domain.metrics.COUNTERS. Intervals are measured on the agent's monotonic clock. A
counter that went backwards (the VM restarted, moved away and back) gives no rate this time.

``compute_sample`` is pure; MetricsSampler keeps the previous reading.
"""

from __future__ import annotations

import time

from vcenter.messaging.contracts import DomainCounters, HostCounters, MetricsReport, VmMetrics


def _rate(previous: int | None, current: int | None, seconds: float) -> float | None:
    if previous is None or current is None or current < previous or seconds <= 0:
        return None
    return (current - previous) / seconds


def _put(values: dict[str, float], name: str, value: float | None, digits: int = 2) -> None:
    if value is not None:
        values[name] = round(value, digits)


def vm_values(previous: DomainCounters | None, current: DomainCounters, seconds: float, core_mhz: int) -> dict[str, float]:
    values: dict[str, float] = {}
    if current.rss_kib is not None:
        _put(values, "mem.consumed", current.rss_kib / 1024)
    if current.guest_available_kib and current.guest_unused_kib is not None:
        # The guest's own view (balloon driver statistics): memory it uses.
        used = current.guest_available_kib - current.guest_unused_kib
        _put(values, "mem.usage", max(0.0, min(100.0, 100.0 * used / current.guest_available_kib)))
        _put(values, "mem.guest_used", max(0.0, used / 1024))
    elif current.rss_kib is not None and current.memory_mib:
        # No guest statistics: what the VM costs the host, capped (QEMU's own overhead counts).
        _put(values, "mem.usage", min(100.0, 100.0 * current.rss_kib / 1024 / current.memory_mib))
    if previous is None:
        return values
    cpu_ns = _rate(previous.cpu_time_ns, current.cpu_time_ns, seconds)
    if cpu_ns is not None:
        cores = cpu_ns / 1e9
        _put(values, "cpu.usage", min(100.0, 100.0 * cores / max(1, current.vcpus)))
        _put(values, "cpu.usagemhz", cores * core_mhz, 1)
    for name, attr in (("disk.read", "disk_read_bytes"), ("disk.write", "disk_write_bytes"), ("net.rx", "net_rx_bytes"), ("net.tx", "net_tx_bytes")):
        _put(values, name, _rate(getattr(previous, attr), getattr(current, attr), seconds), 1)
    return values


def compute_sample(previous: HostCounters | None, current: HostCounters, seconds: float) -> MetricsReport:
    """The sample between two readings ``seconds`` apart (``previous`` None: the first
    reading, which gives only the instantaneous counters)."""
    before = {d.uuid: d for d in previous.domains} if previous is not None else {}
    vms = []
    sums = {"disk.read": 0.0, "disk.write": 0.0, "net.rx": 0.0, "net.tx": 0.0}
    complete = previous is not None
    for domain in current.domains:
        values = vm_values(before.get(domain.uuid) if previous is not None else None, domain, seconds, current.cpu_mhz)
        for name in sums:
            if name in values:
                sums[name] += values[name]
        vms.append(VmMetrics(uuid=domain.uuid, values=values))
    host: dict[str, float] = {}
    if current.memory_total_kib and current.memory_available_kib is not None:
        used_kib = max(0, current.memory_total_kib - current.memory_available_kib)
        _put(host, "mem.consumed", used_kib / 1024)
        _put(host, "mem.usage", 100.0 * used_kib / current.memory_total_kib)
    if previous is not None:
        busy = _rate(previous.cpu_busy_ns, current.cpu_busy_ns, 1.0)
        total = _rate(previous.cpu_total_ns, current.cpu_total_ns, 1.0)
        if busy is not None and total:
            share = min(1.0, busy / total)
            _put(host, "cpu.usage", 100.0 * share)
            _put(host, "cpu.usagemhz", share * current.cpus * current.cpu_mhz, 1)
    if complete:
        for name, value in sums.items():
            _put(host, name, value, 1)
    return MetricsReport(interval_s=round(seconds, 3) if previous is not None else None, host=host, vms=vms)


class MetricsSampler:
    """Keeps the previous reading; ``sample`` turns a new one into a report."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._previous: HostCounters | None = None
        self._previous_at: float | None = None

    def sample(self, reading: HostCounters) -> MetricsReport:
        now = self._clock()
        seconds = now - self._previous_at if self._previous_at is not None else 0.0
        report = compute_sample(self._previous, reading, seconds)
        self._previous, self._previous_at = reading, now
        return report
