"""The demand DRS is given (vcenter.domain.drs_demand): per-VM samples smoothed, with their
spread. The smoothing test moved from test_drs.py with the functions."""

from __future__ import annotations

import pytest

from vcenter.domain.drs_demand import smooth_demands, smooth_demands_with_spread


def test_smoothing_with_spread_matches_smoothing():
    prev = None
    means = None
    for sample in ({"a": (100.0, 10.0)}, {"a": (300.0, 10.0)}, {"a": (100.0, 10.0)}):
        prev = smooth_demands_with_spread(prev, sample)
        means = smooth_demands(means, sample)
    assert prev[0] == means
    assert prev[1]["a"][0] > 0 and prev[1]["a"][1] == 0.0


def test_a_vm_starts_at_its_sample_and_one_absent_from_the_sample_is_dropped():
    first = smooth_demands(None, {"a": (800.0, 1024.0), "b": (100.0, 512.0)})
    assert first == {"a": (800.0, 1024.0), "b": (100.0, 512.0)}
    second = smooth_demands(first, {"a": (1200.0, 2048.0), "c": (50.0, 256.0)})
    assert second == {"a": (1000.0, 1536.0), "c": (50.0, 256.0)}
    assert smooth_demands(second, {"a": (0.0, 0.0)}, alpha=1.0) == {"a": (0.0, 0.0)}
    with pytest.raises(ValueError):
        smooth_demands(None, {"a": (1.0, 1.0)}, alpha=0)
