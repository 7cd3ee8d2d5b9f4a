"""Rollup math, tier choice, agent rates and alarm evaluation (pure)."""

from __future__ import annotations

import pytest

from vcenter.domain import alarms as a
from vcenter.domain import metrics as m
from vcenter.messaging.contracts import DomainCounters, HostCounters
from workers.agent.stats import MetricsSampler, compute_sample


# --- tiers and rollups ----------------------------------------------------------------------
def test_tiers_are_vcenters_and_scale():
    tiers = m.tiers()
    assert [(t.name, t.interval_s, t.retention_s) for t in tiers] == [
        ("realtime", 20.0, 3600.0),
        ("day", 300.0, 86400.0),
        ("week", 1800.0, 604800.0),
        ("month", 7200.0, 2592000.0),
        ("year", 86400.0, 31536000.0),
    ]
    fast = m.tiers(sample_period_s=1.0, scale=0.01)
    assert [t.interval_s for t in fast] == [1.0, 3.0, 18.0, 72.0, 864.0]
    assert fast[0].retention_s == 36.0


def test_choose_tier_is_the_finest_reaching_back_to_start():
    tiers = m.tiers()
    now = 1_000_000_000.0
    assert m.choose_tier(tiers, now - 1800, now).name == "realtime"
    assert m.choose_tier(tiers, now - 3601, now).name == "day"
    assert m.choose_tier(tiers, now - 3 * 86400, now).name == "week"
    assert m.choose_tier(tiers, now - 20 * 86400, now).name == "month"
    assert m.choose_tier(tiers, now - 200 * 86400, now).name == "year"
    assert m.choose_tier(tiers, now - 900 * 86400, now).name == "year"


def test_rollup_gives_avg_min_max_per_object_and_bucket():
    rows = [
        ("host", 1, 0.0, {"cpu.usage": 10.0, "mem.usage": 50.0}),
        ("host", 1, 20.0, {"cpu.usage": 30.0}),
        ("host", 1, 299.0, {"cpu.usage": 50.0}),
        ("host", 1, 300.0, {"cpu.usage": 99.0}),
        ("vm", 1, 40.0, {"cpu.usage": 5.0}),
    ]
    out = m.rollup(rows, 300.0)
    assert out[("host", 1, 0.0)] == {"cpu.usage": [30.0, 10.0, 50.0, 3], "mem.usage": [50.0, 50.0, 50.0, 1]}
    assert out[("host", 1, 300.0)] == {"cpu.usage": [99.0, 99.0, 99.0, 1]}
    assert out[("vm", 1, 0.0)] == {"cpu.usage": [5.0, 5.0, 5.0, 1]}


def test_rollup_of_rollups_weighs_by_samples_covered():
    # A full bucket (15 samples, avg 10) and one with a gap (5 samples, avg 50).
    rows = [("vm", 7, 0.0, {"cpu.usage": [10.0, 2.0, 20.0, 15]}), ("vm", 7, 300.0, {"cpu.usage": [50.0, 40.0, 90.0, 5]})]
    ((key, values),) = m.rollup(rows, 1800.0).items()
    assert key == ("vm", 7, 0.0)
    assert values["cpu.usage"] == [20.0, 2.0, 90.0, 20]  # (15*10 + 5*50) / 20, not (10+50)/2


def test_complete_buckets_wait_for_grace_and_resume_after_watermark():
    assert m.complete_buckets(None, now_s=1000.0, interval_s=300.0, grace_s=60.0, oldest_s=10.0) == [0.0, 300.0, 600.0]
    # 900..1200 ended at 1200 > now - grace: not yet
    assert m.complete_buckets(600.0, now_s=1250.0, interval_s=300.0, grace_s=60.0, oldest_s=0) == [600.0]
    assert m.complete_buckets(900.0, now_s=1250.0, interval_s=300.0, grace_s=60.0, oldest_s=0) == []
    assert m.complete_buckets(900.0, now_s=1260.0, interval_s=300.0, grace_s=60.0, oldest_s=0) == [900.0]


def test_series_decodes_both_forms_in_time_order():
    points = m.series([(40.0, {"cpu.usage": [1.0, 0.5, 2.0, 3]}), (20.0, {"cpu.usage": 4.0}), (60.0, {"mem.usage": 1.0})], "cpu.usage")
    assert [(t, agg.avg, agg.min, agg.max, agg.n) for t, agg in points] == [(20.0, 4.0, 4.0, 4.0, 1), (40.0, 1.0, 0.5, 2.0, 3)]


def test_a_clusters_points_average_percentages_and_sum_quantities_over_hosts():
    rows = [
        (1, 0.0, {"cpu.usage": 20.0, "cpu.usagemhz": 1000.0}),
        (1, 10.0, {"cpu.usage": 40.0, "cpu.usagemhz": 2000.0}),
        (2, 5.0, {"cpu.usage": 90.0, "cpu.usagemhz": 4500.0}),
        (2, 20.0, {"cpu.usage": [10.0, 5.0, 15.0, 3]}),
    ]
    usage = m.across_hosts(rows, "cpu.usage", 20.0)
    assert [(t, a.avg, a.min, a.max, a.n) for t, a in usage] == [(0.0, 60.0, 30.0, 90.0, 2), (20.0, 10.0, 10.0, 10.0, 1)]
    mhz = m.across_hosts(rows, "cpu.usagemhz", 20.0)
    assert [(t, a.avg, a.n) for t, a in mhz] == [(0.0, 6000.0, 2)]  # host 1's 1500 average + host 2's 4500


# --- agent rates ----------------------------------------------------------------------------
def _reading(busy, total, cpu_ns, rd, wr, rx, tx, rss=51200):
    return HostCounters(
        cpus=2,
        cpu_mhz=2000,
        cpu_busy_ns=busy,
        cpu_total_ns=total,
        memory_total_kib=1024 * 1024,
        memory_available_kib=768 * 1024,
        domains=[DomainCounters(uuid="u1", vcpus=2, memory_mib=100, cpu_time_ns=cpu_ns, rss_kib=rss, disk_read_bytes=rd, disk_write_bytes=wr, net_rx_bytes=rx, net_tx_bytes=tx)],
    )


def test_two_readings_make_rates_of_host_and_vm():
    first = _reading(0, 0, 0, 0, 0, 0, 0)
    second = _reading(5 * 10**9, 20 * 10**9, 10 * 10**9, 20_000, 40_000, 2_000, 1_000)
    sample = compute_sample(first, second, 10.0)
    vm = sample.vms[0].values
    assert vm["cpu.usage"] == 50.0  # 1 core of 2 vCPUs
    assert vm["cpu.usagemhz"] == 2000.0
    assert (vm["disk.read"], vm["disk.write"], vm["net.rx"], vm["net.tx"]) == (2000.0, 4000.0, 200.0, 100.0)
    assert vm["mem.consumed"] == 50.0 and vm["mem.usage"] == 50.0
    host = sample.host
    assert host["cpu.usage"] == 25.0 and host["cpu.usagemhz"] == 1000.0
    assert host["mem.consumed"] == 256.0 and host["mem.usage"] == 25.0
    assert host["disk.read"] == 2000.0 and host["net.tx"] == 100.0


def test_vm_memory_usage_prefers_the_guests_own_view():
    reading = _reading(0, 0, 0, 0, 0, 0, 0, rss=150 * 1024)  # QEMU's overhead: more than the 100 MiB configured
    assert compute_sample(None, reading, 0.0).vms[0].values["mem.usage"] == 100.0
    reading.domains[0].guest_available_kib, reading.domains[0].guest_unused_kib = 100 * 1024, 75 * 1024
    values = compute_sample(None, reading, 0.0).vms[0].values
    assert values["mem.usage"] == 25.0 and values["mem.consumed"] == 150.0


def test_first_reading_and_counters_going_back_give_no_rates():
    first = compute_sample(None, _reading(1, 2, 3, 4, 5, 6, 7), 0.0)
    assert first.interval_s is None and "cpu.usage" not in first.vms[0].values and "mem.consumed" in first.vms[0].values
    restarted = compute_sample(_reading(0, 0, 10**10, 10**6, 0, 0, 0), _reading(10, 20, 10**6, 10, 0, 0, 0), 5.0)
    assert "cpu.usage" not in restarted.vms[0].values and "disk.read" not in restarted.vms[0].values


def test_sampler_measures_the_interval_on_its_clock():
    clock = iter([100.0, 104.0])
    sampler = MetricsSampler(clock=lambda: next(clock))
    assert sampler.sample(_reading(0, 0, 0, 0, 0, 0, 0)).interval_s is None
    assert sampler.sample(_reading(0, 0, 4 * 10**9, 0, 0, 0, 0)).vms[0].values["cpu.usage"] == 50.0


# --- alarms ---------------------------------------------------------------------------------
CPU = a.MetricExpression("cpu.usage", "above", warning=70.0, critical=90.0, for_s=60.0)


def test_metric_alarm_needs_the_condition_for_the_whole_duration():
    now = 1000.0
    high = [(now - 80 + 20 * i, 95.0) for i in range(5)]  # 920..1000, all above 90
    assert a.metric_status(CPU, high, now, 20.0) == ("critical", 95.0)
    dip = [(920.0, 95.0), (940.0, 95.0), (960.0, 75.0), (980.0, 95.0), (1000.0, 95.0)]
    assert a.metric_status(CPU, dip, now, 20.0) == ("warning", 95.0)  # above 70 throughout, not above 90
    short = [(980.0, 95.0), (1000.0, 95.0)]  # only 20 s of history: not yet
    assert a.metric_status(CPU, short, now, 20.0) is None
    assert a.metric_status(CPU, [(980.0, 10.0), (1000.0, 10.0)], now, 20.0) == ("ok", 10.0)
    assert a.metric_status(CPU, [(800.0, 99.0)], now, 20.0) is None  # stale: say nothing
    below = a.MetricExpression("mem.usage", "below", warning=20.0, critical=None, for_s=0.0)
    assert a.metric_status(below, [(1000.0, 5.0)], now, 20.0) == ("warning", 5.0)


def test_state_conditions():
    host = a.StateExpression("host.not_responding", "critical")
    assert a.state_status(host, {"connection_state": "notResponding"}, 0, 60)[0] == "critical"
    assert a.state_status(host, {"connection_state": "connected"}, 0, 60)[0] == "ok"
    beat = a.StateExpression("vm.heartbeat_lost", "warning")
    assert a.state_status(beat, {"power_state": "poweredOn", "guest_heartbeat_s": 900.0}, 1000.0, 60)[0] == "warning"
    assert a.state_status(beat, {"power_state": "poweredOn", "guest_heartbeat_s": 990.0}, 1000.0, 60)[0] == "ok"
    assert a.state_status(beat, {"power_state": "poweredOn", "guest_heartbeat_s": None}, 1000.0, 60)[0] == "ok"
    assert a.state_status(beat, {"power_state": "poweredOff", "guest_heartbeat_s": 1.0}, 1000.0, 60)[0] == "ok"
    # Its host stopped reporting: the VM's heartbeat cannot be judged (the host's alarm says why).
    assert a.state_status(beat, {"power_state": "poweredOn", "guest_heartbeat_s": 1.0, "host_connected": False}, 1000.0, 60)[0] is None
    ds = a.StateExpression("datastore.usage", "critical", warning=80.0, critical=90.0)
    assert a.state_status(ds, {"capacity_bytes": 100, "free_bytes": 5}, 0, 0)[:2] == ("critical", 95.0)
    assert a.state_status(ds, {"capacity_bytes": 100, "free_bytes": 15}, 0, 0)[0] == "warning"
    assert a.state_status(ds, {"capacity_bytes": 0, "free_bytes": 0}, 0, 0)[0] == "ok"


def test_transitions_acknowledgement_and_actions():
    up = a.transition("ok", "warning", False)
    assert (up.status, up.changed, up.fire, up.acknowledged) == ("warning", True, True, False)
    same = a.transition("warning", "warning", True)
    assert not same.changed and same.acknowledged
    worse = a.transition("warning", "critical", True)
    assert worse.fire and not worse.acknowledged  # getting worse drops the acknowledgement
    easing = a.transition("critical", "warning", True)
    assert easing.changed and easing.acknowledged and not easing.fire  # acknowledged: quiet
    cleared = a.transition("critical", "ok", True)
    assert cleared.fire and not cleared.acknowledged
    assert not a.transition("critical", None, False).changed


def test_expression_scope_and_action_validation():
    assert a.parse_expression({"type": "metric", "counter": "cpu.usage", "warning": 80, "for_s": 300}, "host") == a.MetricExpression("cpu.usage", "above", 80.0, None, 300.0)
    for raw, target, field in (
        ({"type": "metric", "counter": "cpu.bogus", "warning": 1}, "host", "expression.counter"),
        ({"type": "metric", "counter": "cpu.usage"}, "host", "expression.warning"),
        ({"type": "metric", "counter": "cpu.usage", "warning": 90, "critical": 80}, "host", "expression.critical"),
        ({"type": "metric", "counter": "cpu.usage", "warning": 90, "for_s": 7200}, "host", "expression.for_s"),
        ({"type": "metric", "counter": "cpu.usage", "warning": "high"}, "host", "expression.warning"),
        ({"type": "metric", "counter": "cpu.usage", "warning": float("nan")}, "host", "expression.warning"),
        ({"type": "state", "condition": "host.not_responding"}, "vm", "expression.condition"),
        ({"type": "state", "condition": "datastore.usage", "critical": 190}, "datastore", "expression.warning"),
        ({"type": "nope"}, "host", "expression.type"),
    ):
        with pytest.raises(a.AlarmInvalid) as info:
            a.parse_expression(raw, target)
        assert info.value.field == field, raw
    a.validate_scope("vm", "host", 3)
    with pytest.raises(a.AlarmInvalid):
        a.validate_scope("datastore", "cluster", 1)
    with pytest.raises(a.AlarmInvalid):
        a.validate_scope("host", "root", 5)
    assert a.in_scope("cluster", 2, [("vm", 9), ("host", 1), ("cluster", 2), ("datacenter", 1), ("root", None)])
    assert not a.in_scope("cluster", 3, [("vm", 9), ("host", 1), ("cluster", 2), ("datacenter", 1), ("root", None)])
    assert a.parse_actions([{"type": "webhook", "url": "https://hooks.example.com/x?y=1"}, {"type": "event"}])[0]["url"].startswith("https://")
    for bad in ("ftp://x/y", "http://user:pw@host/", "https:///nohost", "http://host:99999/", "javascript:alert(1)", "http://a b/", "x" * 3000):
        with pytest.raises(a.AlarmInvalid):
            a.parse_actions([{"type": "webhook", "url": bad}])
    assert a.webhook_delay(1, 10.0) == 10.0 and a.webhook_delay(3, 10.0) == 40.0


@pytest.mark.parametrize(
    "address,refused",
    [
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("169.254.169.254", True),
        ("fe80::1%eth0", True),
        ("0.0.0.0", True),
        ("224.0.0.1", True),
        ("240.0.0.1", True),
        ("10.0.0.5", False),
        ("192.168.1.20", False),
        ("203.0.113.9", False),
        ("2001:db8::5", False),
    ],
)
def test_webhook_addresses_only_the_server_reaches_are_refused(address, refused):
    assert (a.webhook_address_refusal(address) is not None) is refused
    # An operator may allow one (a receiver on the server's own machine).
    assert a.webhook_address_refusal(address, ["127.0.0.0/8", "169.254.169.254/32", "::1/128", "fe80::/10", "0.0.0.0/32", "224.0.0.0/4", "240.0.0.0/4"]) is None
