"""DRS and DPM over VM demand traces, per trace and seed: prints tables (not a test). A thin caller
of vcenter.sim.trace (the same replay as ``vcenter sim drs``; the scenario and metrics are
described there), with the engine's defaults (no option set).

Traces: ``gcd`` = ../shared/traces/GCD_VMs.tar.gz (Google cluster-data 2011, as published by the
authors of "Virtual Machine Consolidation with Multiple Usage Prediction for Energy-Efficient
Cloud Data Centers", IEEE TSC), read straight from the archive; ``bursty`` and ``diurnal`` =
synthetic traces of vcenter.sim.synthetic, generated from the seed of the row (trace seed = draw
seed). The defaults were chosen on gcd and bursty; diurnal is the confirmation.

1. Balancers, 16 hosts, 400 VMs, threshold 3, loads 0.7 and 0.85: overload % (overloaded
   host-intervals / powered-on host-intervals) and migrations of none / greedy / drs, the
   ratios drs/greedy side by side, and whether the issue's promise holds on the row (overload
   <= greedy's, < where greedy's is above interval 0's floor; migrations <= half of greedy's).
2. DPM at loads 0.1 and 0.4: host-hours on (DRS + DPM) / host_hours_bound, the overload of DRS
   alone and with DPM.
3. (--timing) time per pass at 8/32/96 hosts.
Run: .venv/bin/python bench/drs.py [--traces gcd,bursty,diurnal] [--seeds 1,2,3,4,5]
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # one core: no BLAS threads either

import argparse  # noqa: E402
from pathlib import Path  # noqa: E402

from vcenter.sim.trace import DEFAULT_TRACE, build_scenario, read_trace, replay, skewed_pass_time  # noqa: E402


def trace_for(name: str, seed: int, gcd: Path, cache: dict):
    if name == "gcd":
        if "gcd" not in cache:
            cache["gcd"] = read_trace(gcd)
        return cache["gcd"]
    return read_trace(f"synthetic:{name}:{seed}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gcd", type=Path, default=DEFAULT_TRACE)
    ap.add_argument("--traces", default="gcd,bursty,diurnal")
    ap.add_argument("--hosts", type=int, default=16)
    ap.add_argument("--vms", type=int, default=400)
    ap.add_argument("--loads", default="0.7,0.85")
    ap.add_argument("--dpm-loads", default="0.1,0.4")
    ap.add_argument("--seeds", default="1,2,3,4,5")
    ap.add_argument("--timing", action="store_true")
    ap.add_argument("--time-intervals", type=int, default=24)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    seeds = [int(x) for x in args.seeds.split(",")]
    names = [x.strip() for x in args.traces.split(",") if x.strip()]
    cache: dict = {}

    print(f"1. balancers: {args.hosts} hosts, {args.vms} VMs, threshold 3, defaults; overload % (floor = interval 0), migrations")
    print(f"{'trace':8} {'load':>5} {'seed':>4} | {'none %':>7} | {'greedy %':>8} {'migr':>5} | {'drs %':>7} {'migr':>5} | {'ovl d/g':>7} {'migr d/g':>8} | {'floor %':>7} {'holds':>5}")
    fails = 0
    for name in names:
        for load in (float(x) for x in args.loads.split(",") if x.strip()):
            for seed in seeds:
                sc = build_scenario(trace_for(name, seed, args.gcd, cache), args.hosts, args.vms, load, seed)
                r = {b: replay(sc, b) for b in ("none", "greedy", "drs")}
                s = {b: x.summary() for b, x in r.items()}
                floor = r["none"].overloaded_at_start / max(1, r["none"].host_intervals_on)
                og, od = s["greedy"]["overload_fraction"], s["drs"]["overload_fraction"]
                mg, md = s["greedy"]["migrations"], s["drs"]["migrations"]
                ok = od <= og + 1e-12 and (od < og or og <= floor + 1e-12) and md <= mg / 2
                fails += not ok
                print(
                    f"{name:8} {load:5.2f} {seed:4d} | {s['none']['overload_fraction'] * 100:7.2f} | {og * 100:8.2f} {mg:5d} | "
                    f"{od * 100:7.2f} {md:5d} | {od / og if og else (1.0 if od == 0 else float('inf')):7.2f} "
                    f"{md / mg if mg else float('inf'):8.2f} | {floor * 100:7.2f} {'yes' if ok else 'NO':>5}",
                    flush=True,
                )
    print(f"   rows where the promise does not hold: {fails}")

    print("\n2. DPM (DRS + DPM, defaults; bound: fewest hosts at the band's top + 1 HA host, per interval)")
    print(f"{'trace':8} {'load':>5} {'seed':>4} | {'host-h on':>9} {'bound':>7} {'on/bound':>8} | {'ovl drs %':>9} {'ovl +dpm %':>10} | {'offs':>4} {'ons':>4} {'migr':>5}")
    for name in names:
        for load in (float(x) for x in args.dpm_loads.split(",") if x.strip()):
            for seed in seeds:
                sc = build_scenario(trace_for(name, seed, args.gcd, cache), args.hosts, args.vms, load, seed)
                a = replay(sc, "drs").summary()
                d = replay(sc, "drs", dpm=True).summary()
                print(
                    f"{name:8} {load:5.2f} {seed:4d} | {d['host_hours_on']:9.1f} {d['host_hours_bound']:7.1f} "
                    f"{d['host_hours_on'] / d['host_hours_bound']:8.2f} | {a['overload_fraction'] * 100:9.2f} "
                    f"{d['overload_fraction'] * 100:10.2f} | {d['power_offs']:4d} {d['power_ons']:4d} {d['migrations']:5d}",
                    flush=True,
                )

    if not args.timing:
        return
    gcd = trace_for("gcd", seeds[0], args.gcd, cache)
    print(f"\n3. time per pass, one core (replay of {args.time_intervals} intervals; skewed start: best of 3, budget spent)")
    print(f"{'hosts':>6} {'VMs':>7} {'DRS p50 s':>10} {'DRS max s':>10} {'+DPM p50 s':>11} {'+DPM max s':>11} {'skewed s':>9} {'moves':>6}")
    for n_hosts, n_vms in ((8, 833), (32, 3333), (96, 10_000)):
        sc = build_scenario(gcd, n_hosts, n_vms, 0.7, seeds[0], args.time_intervals)
        r = replay(sc, "drs").summary()
        sc_low = build_scenario(gcd, n_hosts, n_vms, 0.4, seeds[0], args.time_intervals)
        rd = replay(sc_low, "drs", dpm=True).summary()
        secs, moves = skewed_pass_time(gcd, n_hosts, n_vms, seeds[0])
        print(f"{n_hosts:6d} {n_vms:7d} {r['pass_seconds_p50']:10.3f} {r['pass_seconds_max']:10.3f} {rd['pass_seconds_p50']:11.3f} {rd['pass_seconds_max']:11.3f} {secs:9.3f} {moves:6d}")


if __name__ == "__main__":
    main()
