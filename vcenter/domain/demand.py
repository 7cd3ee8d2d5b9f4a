"""Measured demand of a VM from its host's counters.

A host reports each running VM's cumulative CPU time (ns). Between two samples, the VM used
``delta_cpu / delta_wall`` cores; at the host's core speed that is its CPU demand in MHz.
Samples are smoothed with an exponential moving average so one busy second does not move a
VM (alpha = weight of the newest sample). A counter that went backwards (the VM restarted or
moved) starts over.

Spread: the exponentially weighted standard deviation of the samples around that average
(same alpha; West's incremental form, var' = (1 - alpha) x (var + alpha x (sample - mean)^2)).
It says how far one measurement may be from the next: DRS does not chase a gain smaller than
the spread of the loads it compares (vcenter.domain.drs, "confidence").

Estimate (``level_shift_estimate``): what DRS takes a VM's demand to be. The smoothed average
lags a real change by several samples (a burst's start, a step, a climb), and a lagged estimate
lets a host run overloaded until the average catches up; the last sample alone chases every
up and down of the noise. So: the last sample when it lies further than ``SHIFT_SPREADS``
noise spreads (``noise_spread``, trend removed) from the smoothed average (a level shift or a
trend: the demand has moved), the smoothed average otherwise (noise: wait).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported where used: this module is also read by light callers
    import numpy as np


def cpu_sample_mhz(previous_ns: int | None, previous_s: float | None, current_ns: int, current_s: float, core_mhz: float) -> float | None:
    """The CPU demand over the interval between two counter readings, or None when there is no
    interval (no previous reading, clock or counter went backwards)."""
    if previous_ns is None or previous_s is None or current_s <= previous_s or current_ns < previous_ns:
        return None
    cores = (current_ns - previous_ns) / 1e9 / (current_s - previous_s)
    return max(0.0, cores) * core_mhz


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
    sample = cpu_sample_mhz(previous_ns, previous_s, current_ns, current_s, core_mhz)
    if sample is None:
        return None
    return smoothed_demand(previous_demand, sample, alpha)


def smoothed_demand(previous_demand: float | None, sample: float, alpha: float = 0.5) -> float:
    """The exponentially smoothed demand after a new sample (the sample itself when first)."""
    if not 0 < alpha <= 1:
        raise ValueError(f"smoothing alpha {alpha} not in (0, 1]")
    if previous_demand is None:
        return sample
    return alpha * sample + (1 - alpha) * previous_demand


def smoothed_with_spread(previous: tuple[float, float] | None, sample: float, alpha: float = 0.5) -> tuple[float, float]:
    """(mean, spread) after a new sample, from the previous (mean, spread) or None (a first
    sample has no spread yet)."""
    if not 0 < alpha <= 1:
        raise ValueError(f"smoothing alpha {alpha} not in (0, 1]")
    if previous is None:
        return sample, 0.0
    mean, spread = previous
    diff = sample - mean
    var = (1 - alpha) * (spread * spread + alpha * diff * diff)
    return mean + alpha * diff, math.sqrt(var)


NOISE_WINDOW = 12  # samples the noise of a demand is measured over (an hour of 5-minute samples)
_MAD_TO_SD = 1.4826  # a normal variable's standard deviation / its median absolute deviation


def noise_spread(samples: Sequence[float] | np.ndarray) -> float:
    """The noise of a demand series, told apart from its trend: the spread of one sample around
    the demand's course, from the successive differences of the samples (oldest first).

    A difference of two samples is trend x interval + the difference of two noises. The median of
    the differences is the trend (a climbing demand climbs by about the same every interval); the
    median absolute deviation around it, scaled to a standard deviation and divided by sqrt 2
    (a difference holds two noises), is the noise. Medians make it blind to a few jumps: a step
    or the start and end of a burst shift the level (they are not spread), a steady climb is a
    trend (not spread), and only a demand that goes up and down from one sample to the next has
    a spread. Fewer than three samples: 0 (nothing to tell noise from)."""
    import numpy as np

    x = np.asarray(samples, dtype=float)
    if x.ndim != 1:
        raise ValueError("noise_spread takes one series")
    if x.size < 3:
        return 0.0
    d = np.diff(x)
    return float(_MAD_TO_SD * np.median(np.abs(d - np.median(d))) / math.sqrt(2.0))


def noise_spreads(window: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """``noise_spread`` of many series at once: ``window`` is (samples x ...), oldest first; the
    result has the trailing shape (one spread per series)."""
    import numpy as np

    w = np.asarray(window, dtype=float)
    if w.shape[0] < 3:
        return np.zeros(w.shape[1:])
    d = np.diff(w, axis=0)
    return np.asarray(_MAD_TO_SD * np.median(np.abs(d - np.median(d, axis=0)), axis=0) / math.sqrt(2.0), dtype=float)


SHIFT_SPREADS = 3.0  # a sample this many noise spreads off the smoothed demand is a level shift


def level_shift_estimate(smoothed: Sequence[float] | np.ndarray, last: Sequence[float] | np.ndarray, spread: Sequence[float] | np.ndarray, k: float = SHIFT_SPREADS) -> np.ndarray:
    """The demand estimate, element-wise over arrays of the same shape: ``last`` (the newest
    sample) where it is more than ``k`` x ``spread`` (its noise, ``noise_spread``) away from
    ``smoothed`` (a shift or a trend), ``smoothed`` elsewhere (within the noise). A noiseless
    demand (spread 0) is taken at its last sample: it has moved, or it equals the average."""
    import numpy as np

    s = np.asarray(smoothed, dtype=float)
    x = np.asarray(last, dtype=float)
    return np.asarray(np.where(np.abs(x - s) > k * np.asarray(spread, dtype=float) + 1e-9, x, s), dtype=float)
