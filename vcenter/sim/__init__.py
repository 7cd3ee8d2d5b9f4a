"""Golden scenario harness: ``python -m vcenter.sim run DIR`` (see vcenter.sim.runner)."""

from vcenter.sim.runner import ScenarioResult, Sim, diff, run_scenario, scenario_dirs
from vcenter.sim.values import ScenarioError

__all__ = ["ScenarioError", "ScenarioResult", "Sim", "diff", "run_scenario", "scenario_dirs"]
