import pytest

from vcenter.domain.demand import cpu_demand_mhz


def test_one_busy_core_at_2000_mhz_is_2000_mhz():
    assert cpu_demand_mhz(0, 10.0, 5_000_000_000, 15.0, 2000.0, None) == 2000.0


def test_samples_are_smoothed_and_counters_that_go_back_start_over():
    smoothed = cpu_demand_mhz(0, 0.0, 1_000_000_000, 2.0, 2000.0, 2000.0, alpha=0.5)
    assert smoothed == 0.5 * 1000.0 + 0.5 * 2000.0
    assert cpu_demand_mhz(9_000, 0.0, 1_000, 2.0, 2000.0, 500.0) is None
    assert cpu_demand_mhz(None, None, 1_000, 2.0, 2000.0, None) is None
    assert cpu_demand_mhz(0, 2.0, 1_000, 2.0, 2000.0, None) is None


def test_spread_is_zero_for_steady_samples_and_grows_with_noise():
    from vcenter.domain.demand import smoothed_with_spread

    assert smoothed_with_spread(None, 800.0) == (800.0, 0.0)
    steady = None
    for _ in range(20):
        steady = smoothed_with_spread(steady, 1000.0)
    assert steady == (1000.0, 0.0)
    noisy = None
    for k in range(40):  # 800 / 1200 alternating: mean near 1000, spread of the order of 200
        noisy = smoothed_with_spread(noisy, 800.0 if k % 2 else 1200.0)
    assert 900 < noisy[0] < 1100 and 150 < noisy[1] < 300
    with pytest.raises(ValueError):
        smoothed_with_spread(None, 1.0, alpha=0)


def test_the_sample_is_the_rate_over_the_interval():
    from vcenter.domain.demand import cpu_sample_mhz

    assert cpu_sample_mhz(0, 0.0, 1_000_000_000, 2.0, 2000.0) == 1000.0
    assert cpu_sample_mhz(None, 0.0, 1, 2.0, 2000.0) is None


def test_smoothed_demand_starts_at_the_first_sample_and_follows_by_half():
    from vcenter.domain.demand import smoothed_demand

    assert smoothed_demand(None, 800.0) == 800.0
    assert smoothed_demand(800.0, 1200.0) == 1000.0
    with pytest.raises(ValueError):
        smoothed_demand(1.0, 1.0, alpha=0)
