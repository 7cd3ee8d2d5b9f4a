"""Golden scenario harness: ``python -m vcenter.sim run DIR`` (see vcenter.sim.runner)."""
from vcenter.sim.runner import ScenarioError, ScenarioResult, Sim, diff, run_scenario, scenario_dirs

__all__ = ["ScenarioError", "ScenarioResult", "Sim", "diff", "run_scenario", "scenario_dirs"]
