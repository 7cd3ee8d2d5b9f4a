"""Measured demand of a VM from its host's counters.

A host reports each running VM's cumulative CPU time (ns). Between two samples, the VM used
``delta_cpu / delta_wall`` cores; at the host's core speed that is its CPU demand in MHz.
Samples are smoothed with an exponential moving average so one busy second does not move a
VM (alpha = weight of the newest sample). A counter that went backwards (the VM restarted or
moved) starts over.
"""
from __future__ import annotations


def cpu_demand_mhz(
    previous_ns: int | None,
    previous_s: float | None,
    current_ns: int,
    current_s: float,
    core_mhz: float,
    previous_demand: float | None,
    alpha: float = 0.5,
) -> float | None:
    """The smoothed CPU demand after a new sample, or None when there is no interval yet."""
    if previous_ns is None or previous_s is None or current_s <= previous_s or current_ns < previous_ns:
        return None
    cores = (current_ns - previous_ns) / 1e9 / (current_s - previous_s)
    sample = max(0.0, cores) * core_mhz
    if previous_demand is None:
        return sample
    return alpha * sample + (1 - alpha) * previous_demand
