"""DRS and DPM over real VM demand traces: prints tables (not a test). A thin caller of
vcenter.sim.trace (the same replay as ``vcenter sim drs``; the scenario and metrics are described
there).

Trace: ../shared/traces/GCD_VMs.tar.gz (Google cluster-data 2011, as published by the authors of
"Virtual Machine Consolidation with Multiple Usage Prediction for Energy-Efficient Cloud Data
Centers", IEEE TSC): one file per VM, 288 lines of "cpu_percent mem_percent", one per 5 minutes.
It is read straight from the archive (nothing extracted into the repository).

1. Side by side: 16 hosts, 400 VMs, threshold 3, load 0.7: none / greedy / drs (and DRS at
   thresholds 4 and 5 for reference), on seed 1 and as the mean over --seeds; again at
   --more-loads (0.85: a tighter cluster, where overload matters).
2. DPM: DRS with and without DPM at load 0.7 and at --dpm-load (hosts sized for a lighter
   load, where DPM has room): host-hours saved against all-on, overload ratio.
3. Time per pass at 8/32/96 hosts (~104 VMs per host, 10,000 VMs at 96), one core: the median
   and max over a replay of --time-intervals intervals (DRS; DRS + DPM at --dpm-load), and one
   pass on a deliberately skewed start (the budget spent), best of 3.
Run: .venv/bin/python bench/drs.py [--trace PATH] [--hosts 16] [--vms 400] [--seeds 1,2,3,4,5]
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # one core: no BLAS threads either

import argparse  # noqa: E402
import statistics  # noqa: E402
from pathlib import Path  # noqa: E402

from vcenter.sim.trace import DEFAULT_TRACE, build_scenario, read_trace, replay, scenario_header, skewed_pass_time  # noqa: E402

HEAD = (f"{'run':16} {'mean imb':>9} {'p95 imb':>8} {'overload':>9} {'(host-int)':>10} {'migr':>6} {'host-h on':>10} "
        f"{'pass p50 ms':>12}")


def row(name: str, s: dict) -> str:
    return (f"{name:16} {s['mean_imbalance']:9.4f} {s['p95_imbalance']:8.4f} {s['overload_fraction']:9.5f} "
            f"{s['overloaded_host_intervals']:10.1f} {s['migrations']:6.0f} {s['host_hours_on']:10.1f} {s['pass_seconds_p50'] * 1000:12.2f}")


def mean_of(summaries: list[dict]) -> dict:
    return {k: statistics.fmean(s[k] for s in summaries) for k in
            ("mean_imbalance", "p95_imbalance", "overload_fraction", "overloaded_host_intervals", "migrations",
             "host_hours_on", "pass_seconds_p50")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    ap.add_argument("--hosts", type=int, default=16)
    ap.add_argument("--vms", type=int, default=400)
    ap.add_argument("--load", type=float, default=0.7)
    ap.add_argument("--more-loads", default="0.85", help="section 1 again at these loads (comma-separated; '' for none)")
    ap.add_argument("--dpm-load", type=float, default=0.4)
    ap.add_argument("--threshold", type=int, default=3)
    ap.add_argument("--seeds", default="1,2,3,4,5")
    ap.add_argument("--time-intervals", type=int, default=24)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    seeds = [int(x) for x in args.seeds.split(",")]
    trace = read_trace(args.trace)
    print(f"trace {args.trace.name}: {len(trace)} VM files ({trace.clipped} values above 100 % clipped)")

    runs = [("none", "none", args.threshold), ("greedy", "greedy", args.threshold), (f"drs t{args.threshold}", "drs", args.threshold)]
    runs += [(f"drs t{t}", "drs", t) for t in (4, 5) if t != args.threshold]
    for load in [args.load] + [float(x) for x in args.more_loads.split(",") if x.strip()]:
        per: dict[str, list[dict]] = {name: [] for name, _, _ in runs}
        for seed in seeds:
            sc = build_scenario(trace, args.hosts, args.vms, load, seed)
            if seed == seeds[0]:
                print(f"\n1. {args.vms} VMs, {sc.intervals} intervals; {scenario_header(sc)}; seed {seed}")
                print(HEAD)
            for name, bal, th in runs:
                s = replay(sc, bal, th).summary()
                per[name].append(s)
                if seed == seeds[0]:
                    print(row(name, s))
        if len(seeds) > 1:
            print(f"   mean over seeds {args.seeds}:")
            for name, _, _ in runs:
                print(row(name, mean_of(per[name])))

    print(f"\n2. DPM (DRS threshold {args.threshold}); overload ratio = overload with DPM / overload all-on")
    print(f"{'load':>5} {'seed':>4} {'host-h all-on':>13} {'host-h DPM':>11} {'saved':>7} {'overload on':>12} {'overload DPM':>13} "
          f"{'ratio':>6} {'migr':>5} {'offs':>5} {'ons':>4}")
    for load in (args.load, args.dpm_load):
        for seed in seeds:
            sc = build_scenario(trace, args.hosts, args.vms, load, seed)
            a = replay(sc, "drs", args.threshold).summary()
            d = replay(sc, "drs", args.threshold, dpm=True).summary()
            ratio = (d["overload_fraction"] / a["overload_fraction"] if a["overload_fraction"] > 0
                     else (1.0 if d["overload_fraction"] == 0 else float("inf")))
            saved = 1 - d["host_hours_on"] / a["host_hours_on"]
            print(f"{load:5.2f} {seed:4d} {a['host_hours_on']:13.1f} {d['host_hours_on']:11.1f} {saved:7.1%} {a['overload_fraction']:12.4f} "
                  f"{d['overload_fraction']:13.4f} {ratio:6.2f} {d['migrations']:5d} {d['power_offs']:5d} {d['power_ons']:4d}")

    print(f"\n3. time per pass, one core (replay of {args.time_intervals} intervals; skewed start: best of 3, budget spent)")
    print(f"{'hosts':>6} {'VMs':>7} {'DRS p50 s':>10} {'DRS max s':>10} {'+DPM p50 s':>11} {'+DPM max s':>11} {'skewed s':>9} {'moves':>6}")
    for n_hosts, n_vms in ((8, 833), (32, 3333), (96, 10_000)):
        sc = build_scenario(trace, n_hosts, n_vms, args.load, seeds[0], args.time_intervals)
        r = replay(sc, "drs", args.threshold).summary()
        sc_low = build_scenario(trace, n_hosts, n_vms, args.dpm_load, seeds[0], args.time_intervals)
        rd = replay(sc_low, "drs", args.threshold, dpm=True).summary()
        secs, moves = skewed_pass_time(trace, n_hosts, n_vms, seeds[0])
        print(f"{n_hosts:6d} {n_vms:7d} {r['pass_seconds_p50']:10.3f} {r['pass_seconds_max']:10.3f} {rd['pass_seconds_p50']:11.3f} "
              f"{rd['pass_seconds_max']:11.3f} {secs:9.3f} {moves:6d}")


if __name__ == "__main__":
    main()
