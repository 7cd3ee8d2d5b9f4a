"""One HA monitor: production (Redis and the database) and the golden scenarios (a simulated
cluster) supply the same environment interface to the same loop, vcenter.services.ha.ha_manager."""

from __future__ import annotations

import inspect
from pathlib import Path
from types import SimpleNamespace

import pytest

from vcenter.core.settings import Settings
from vcenter.services.ha import ha_manager
from vcenter.services.ha.ha_monitor import (
    DatabaseStore,
    HaMonitorProcess,
    RedisDbEnvironment,
)
from vcenter.sim.ha import SimHaEnvironment
from vcenter.sim.runner import run_scenario

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"


def _members(protocol: type) -> set[str]:
    return {n for n, v in vars(protocol).items() if inspect.isfunction(v) and not n.startswith("_")}


def test_the_interfaces_name_what_the_loop_touches():
    assert {"clock", "acquire_lock", "renew_lock", "release_lock", "take_token", "count_pass", "inventory", "read_heartbeats", "host_key", "writes"} == _members(ha_manager.HaEnvironment)
    assert {"set_frozen", "record_transitions", "add_candidates", "waiting_restarts", "start_restart", "wake", "reset_vm"} <= _members(ha_manager.HaStore)


@pytest.mark.parametrize(
    "env, store",
    [
        (RedisDbEnvironment(SimpleNamespace(settings=Settings(), redis=None), clock=lambda: 0.0), DatabaseStore(None, {})),
        (SimHaEnvironment(None), None),
    ],
    ids=["production", "scenarios"],
)
def test_both_environments_supply_the_whole_interface(env, store):
    store = env if store is None else store  # the simulated environment is its own store
    missing = sorted(n for n in _members(ha_manager.HaEnvironment) if not callable(getattr(env, n, None)))
    missing += sorted(n for n in _members(ha_manager.HaStore) if not callable(getattr(store, n, None)))
    assert missing == []


def test_the_production_process_is_the_monitor():
    assert issubclass(HaMonitorProcess, ha_manager.HaMonitor)
    assert HaMonitorProcess.step is ha_manager.HaMonitor.step and HaMonitorProcess.run_pass is ha_manager.HaMonitor.run_pass


def test_a_golden_scenario_runs_the_production_loop(monkeypatch):
    passes = []
    real = ha_manager.HaMonitor.restart_pass

    def counting(self, store, cluster, holders):
        plan = real(self, store, cluster, holders)
        if plan is not None:
            passes.append([s.vm_id for s in plan.starts])
        return plan

    monkeypatch.setattr(ha_manager.HaMonitor, "restart_pass", counting)
    result = run_scenario(SCENARIOS / "60-ha-detect-host-failure")
    assert result.failures == []
    assert ["a", "b"] in passes  # h1's VMs were restarted by HaMonitor.restart_pass
