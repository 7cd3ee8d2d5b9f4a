"""Synthetic VM demand traces, generated from a seed: noise, bursts, trends and daily cycles.

``generate(family, seed, vms, intervals)`` returns a ``vcenter.sim.trace.Trace`` (per-VM demand
as fractions of the VM's size, one row per 5-minute interval), the same one for the same
arguments on every machine (numpy's PCG64 from the seed). ``vcenter sim drs --trace
synthetic:FAMILY:SEED`` replays one without writing it; ``write(trace, folder)`` writes it in the
trace format (one file per VM, ``cpu_percent [mem_percent]`` per line) for other tools.

Each VM's CPU demand (fraction of its vCPUs) is the product/sum of independent parts:
- a level: lognormal around the family's median (most VMs light, a few heavy);
- a daily cycle: a sine of one day's period, amplitude a fraction of the level, phase drawn
  around a shared "business hours" peak (so the cluster's total rises and falls: DPM's case)
  with a per-VM jitter;
- trends: with the family's probability a ramp, the level climbing (or falling) by a factor
  over one to six hours from a random start and staying there (a climbing demand, not noise);
- noise: an AR(1) process (``phi`` the correlation of consecutive samples) scaled to the level;
- bursts: Poisson arrivals of plateaus of random height and duration (a batch job, a backup).
Memory (fraction of configured memory), when the family has it: a level, a slow drift and small
noise, plus part of the CPU bursts (a burst allocates); without it the VM uses all its memory
(the trace format's missing column).

Families (the parameters are the table ``FAMILIES``):
- ``bursty``: heavy noise and frequent bursts, weak daily cycle, few trends, CPU and memory.
- ``diurnal``: strong shared daily cycle, frequent ramps, moderate noise, rare bursts; CPU only
  (memory = configured, as in traces that carry CPU alone).
The defaults of DRS and DPM were chosen on the GCD trace and ``bursty``; ``diurnal`` is the
family they were then confirmed on (docs/benchmarks.md, "DRS and DPM").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vcenter.sim.trace_data import Trace, TraceError

DAY = 288  # 5-minute intervals per day


@dataclass(frozen=True, slots=True)
class Family:
    median: float  # median CPU level (fraction of the VM's vCPUs)
    level_sigma: float  # lognormal sigma of the levels
    daily: tuple[float, float]  # amplitude range, as a fraction of the level
    phase_jitter: float  # std of a VM's peak time around the shared one (fraction of a day)
    trend_p: float  # share of VMs with a ramp
    trend_factor: tuple[float, float]  # the level is multiplied by this over the ramp (<1: falls)
    noise: tuple[float, float]  # AR(1) innovation std range, as a fraction of the level
    phi: tuple[float, float]  # AR(1) correlation range
    burst_rate: float  # bursts per VM per day
    burst_height: tuple[float, float]  # added CPU (fraction of the VM)
    burst_len: tuple[int, int]  # intervals
    memory: bool  # the trace carries memory


FAMILIES: dict[str, Family] = {
    "bursty": Family(
        median=0.18,
        level_sigma=0.6,
        daily=(0.0, 0.3),
        phase_jitter=0.2,
        trend_p=0.1,
        trend_factor=(0.5, 2.0),
        noise=(0.2, 0.6),
        phi=(0.0, 0.6),
        burst_rate=3.0,
        burst_height=(0.2, 0.8),
        burst_len=(1, 12),
        memory=True,
    ),
    "diurnal": Family(
        median=0.22,
        level_sigma=0.5,
        daily=(0.2, 0.7),
        phase_jitter=0.1,
        trend_p=0.3,
        trend_factor=(0.4, 2.5),
        noise=(0.05, 0.25),
        phi=(0.3, 0.9),
        burst_rate=0.5,
        burst_height=(0.1, 0.5),
        burst_len=(2, 24),
        memory=False,
    ),
}


def _vm(f: Family, rng: np.random.Generator, steps: int, peak: float) -> np.ndarray:
    t = np.arange(steps, dtype=float)
    level = min(0.9, f.median * math.exp(rng.normal(0.0, f.level_sigma)))
    base = np.full(steps, level)
    if rng.random() < f.trend_p:
        start = rng.integers(0, max(1, steps - 12))
        length = int(rng.integers(12, 73))  # one to six hours
        factor = rng.uniform(*f.trend_factor)
        ramp = np.clip((t - start) / length, 0.0, 1.0)
        base = level * (1.0 + (factor - 1.0) * ramp)
    amp = rng.uniform(*f.daily)
    phase = peak + rng.normal(0.0, f.phase_jitter)
    cyc = 1.0 + amp * np.cos(2 * math.pi * (t / DAY - phase))
    phi = rng.uniform(*f.phi)
    sd = rng.uniform(*f.noise)
    e = rng.normal(0.0, sd, steps)
    ar = np.empty(steps)
    ar[0] = e[0] / math.sqrt(max(1e-9, 1 - phi * phi))
    for k in range(1, steps):
        ar[k] = phi * ar[k - 1] + e[k]
    cpu = base * cyc * (1.0 + ar)
    burst = np.zeros(steps)
    for _ in range(rng.poisson(f.burst_rate * steps / DAY)):
        s = int(rng.integers(0, steps))
        n = int(rng.integers(f.burst_len[0], f.burst_len[1] + 1))
        burst[s : s + n] = np.maximum(burst[s : s + n], rng.uniform(*f.burst_height))
    cpu = np.clip(cpu + burst, 0.0, 1.0)
    if not f.memory:
        mem = np.ones(steps)
    else:
        m0 = rng.uniform(0.15, 0.8)
        drift = np.cumsum(rng.normal(0.0, 0.004, steps))
        mem = np.clip(m0 + drift + rng.normal(0.0, 0.01, steps) + 0.3 * burst, 0.02, 1.0)
    return np.stack([cpu, mem], axis=1)


def generate(family: str, seed: int, vms: int = 400, intervals: int = DAY) -> Trace:
    """``vms`` VM series of ``intervals`` rows for the family, from the seed."""
    f = FAMILIES.get(family)
    if f is None:
        raise TraceError(f"unknown synthetic family {family!r} (known: {', '.join(FAMILIES)})")
    if vms < 1 or intervals < 1:
        raise TraceError("a synthetic trace needs at least one VM and one interval")
    rng = np.random.default_rng([seed, sum(map(ord, family))])
    peak = rng.uniform(0.0, 1.0)  # the cluster's busy time of day
    series = tuple(np.round(_vm(f, rng, intervals, peak), 4) for _ in range(vms))
    width = len(str(vms - 1))
    return Trace(f"synthetic:{family}:{seed}", tuple(f"{family}-{k:0{width}d}" for k in range(vms)), series)


def parse_spec(spec: str) -> tuple[str, int] | None:
    """``synthetic:FAMILY:SEED`` -> (family, seed); None for anything else (a path)."""
    parts = str(spec).split(":")
    if len(parts) != 3 or parts[0] != "synthetic":
        return None
    try:
        return parts[1], int(parts[2])
    except ValueError:
        raise TraceError(f"{spec}: the seed must be an integer") from None


def write(trace: Trace, folder: str | Path) -> Path:
    """The trace as a folder of per-VM files (percentages; the memory column when not all 100 %)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in zip(trace.names, trace.series):
        full = bool(np.all(arr[:, 1] >= 1.0))
        lines = (f"{c * 100:.2f}" if full else f"{c * 100:.2f} {m * 100:.2f}" for c, m in arr)
        (folder / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return folder
