"""The demand DRS is given: each VM's demand samples smoothed, and their spread.

One sample of a VM's demand is noisy; DRS balances on an exponentially smoothed demand so that
one busy interval does not move a VM (``smooth_demands``), and judges a move's gain against the
spread of the samples around it (``smooth_demands_with_spread``; vcenter.domain.drs,
"confidence"). These work on maps of VM id -> ``Demand`` (CPU MHz, memory MiB), per pass: the
trace replay (vcenter.sim.trace) smooths its 5-minute samples with them. The product smooths
each VM's measured CPU demand on its own, per sample, with the scalar forms in
vcenter.domain.demand, which these apply per resource.
"""

from __future__ import annotations

from collections.abc import Mapping

from vcenter.domain.demand import smoothed_with_spread
from vcenter.domain.drs import Demand


def smooth_demands(previous: Mapping[str, Demand] | None, sample: Mapping[str, Demand], alpha: float = 0.5) -> dict[str, Demand]:
    """Exponentially smoothed demand: ``alpha`` x the new sample + (1 - alpha) x the previous
    smoothed value, per VM (a VM without a previous value starts at its sample; VMs absent from
    the sample are dropped). alpha = 1 is the last sample; smaller alphas forget a burst more
    slowly and chase it less. The product smooths measured CPU demand the same way
    (vcenter.domain.demand); the trace replay smooths its 5-minute samples with this."""
    if not 0 < alpha <= 1:
        raise ValueError(f"smoothing alpha {alpha} not in (0, 1]")
    prev = previous or {}
    out: dict[str, Demand] = {}
    for vm_id, (c, m) in sample.items():
        p = prev.get(vm_id)
        out[vm_id] = (c, m) if p is None else (alpha * c + (1 - alpha) * p[0], alpha * m + (1 - alpha) * p[1])
    return out


def smooth_demands_with_spread(
    previous: tuple[Mapping[str, Demand], Mapping[str, Demand]] | None,
    sample: Mapping[str, Demand],
    alpha: float = 0.5,
) -> tuple[dict[str, Demand], dict[str, Demand]]:
    """``smooth_demands`` and the spread of the samples around it (vcenter.domain.demand), per
    VM and resource: (smoothed demands, spreads) from the previous pair and a new sample."""
    means, spreads = previous if previous is not None else ({}, {})
    out_m: dict[str, Demand] = {}
    out_s: dict[str, Demand] = {}
    for vm_id, d in sample.items():
        m0, s0 = means.get(vm_id), spreads.get(vm_id, (0.0, 0.0))
        pairs = [smoothed_with_spread(None if m0 is None else (m0[r], s0[r]), d[r], alpha) for r in (0, 1)]
        out_m[vm_id] = (pairs[0][0], pairs[1][0])
        out_s[vm_id] = (pairs[0][1], pairs[1][1])
    return out_m, out_s
