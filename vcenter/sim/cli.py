"""``vcenter sim``: simulations on real demand traces (mounted as ``app.add_typer(sim_app, name="sim")``).

``vcenter sim drs --trace PATH --hosts N --vms M [--threshold T] [--load L]
[--balancer drs|greedy|none] [--dpm] [--seed S] [--json]`` replays a trace over a simulated
cluster with the real DRS/DPM engine each 5-minute interval; see vcenter.sim.trace for the trace
format, the scenario (VM draw, size mix, host sizing) and the metrics.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

sim_app = typer.Typer(help="Simulations on real VM demand traces.", no_args_is_help=True, add_completion=False)


@sim_app.callback()
def _group() -> None:
    """Simulations on real VM demand traces."""  # a group even with one command: `sim drs ...`


class Balancer(str, Enum):
    drs = "drs"
    greedy = "greedy"
    none = "none"


@sim_app.command("drs")
def drs(
    trace: Path = typer.Option(..., "--trace", help="a folder or .tar.gz of files, one per VM, each line 'cpu_percent [mem_percent]' per 5 min; or synthetic:FAMILY:SEED (bursty, diurnal)"),
    hosts: int = typer.Option(..., "--hosts", min=1, help="equal hosts in the simulated cluster"),
    vms: int = typer.Option(..., "--vms", min=1, help="VMs drawn from the trace with the seed"),
    threshold: int = typer.Option(3, "--threshold", min=1, max=5, help="DRS migration threshold 1-5"),
    confidence: Optional[float] = typer.Option(
        None, "--confidence", min=0.0, max=5.0, help="DRS: noise spreads of the demand a move's gain must survive (default: the engine's, 2; 0: loads taken as exact)"
    ),
    load: float = typer.Option(0.7, "--load", min=0.01, max=10.0, help="mean CPU demand over the run / cluster CPU capacity"),
    balancer: Balancer = typer.Option(Balancer.drs, "--balancer", help="drs (the engine), greedy (one best move per pass), none"),
    dpm: bool = typer.Option(False, "--dpm", help="DPM powers hosts off and on (before the balancer, each interval)"),
    seed: int = typer.Option(1, "--seed", help="seed of the VM draw and the size mix"),
    intervals: Optional[int] = typer.Option(None, "--intervals", min=1, help="replay only the first N intervals"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Replay VM demand from a trace over a simulated cluster with DRS (and DPM) each interval."""
    from vcenter.sim.trace import SUMMARY_KEYS, TraceError, build_scenario, format_summary, read_trace, replay, scenario_header

    try:
        tr = read_trace(trace)
        scenario = build_scenario(tr, hosts, vms, load, seed, intervals)
        from vcenter.domain.drs import DrsSettings

        result = replay(scenario, balancer.value, threshold, dpm, drs_settings=DrsSettings(threshold=threshold, **({} if confidence is None else {"confidence": confidence})))
    except TraceError as e:
        typer.echo(f"trace error: {e}", err=True)
        raise typer.Exit(2) from None
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    s = result.summary()
    if as_json:
        out = {k: s[k] for k in SUMMARY_KEYS}
        out.update({k: v for k, v in s.items() if k not in out})
        typer.echo(json.dumps(out))
        return
    typer.echo(f"trace {trace}: {len(tr)} VM files ({tr.clipped} values above 100 % clipped); {scenario_header(scenario)}; seed {seed}")
    typer.echo(format_summary(s))
