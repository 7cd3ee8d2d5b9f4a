from vcenter.domain.demand import cpu_demand_mhz


def test_one_busy_core_at_2000_mhz_is_2000_mhz():
    assert cpu_demand_mhz(0, 10.0, 5_000_000_000, 15.0, 2000.0, None) == 2000.0


def test_samples_are_smoothed_and_counters_that_go_back_start_over():
    smoothed = cpu_demand_mhz(0, 0.0, 1_000_000_000, 2.0, 2000.0, 2000.0, alpha=0.5)
    assert smoothed == 0.5 * 1000.0 + 0.5 * 2000.0
    assert cpu_demand_mhz(9_000, 0.0, 1_000, 2.0, 2000.0, 500.0) is None
    assert cpu_demand_mhz(None, None, 1_000, 2.0, 2000.0, None) is None
    assert cpu_demand_mhz(0, 2.0, 1_000, 2.0, 2000.0, None) is None
