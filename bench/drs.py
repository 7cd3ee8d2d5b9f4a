"""DRS and DPM over real VM demand traces: prints tables (not a test).

Trace: ../shared/traces/GCD_VMs.tar.gz (Google cluster-data 2011, as published by the authors of
"Virtual Machine Consolidation with Multiple Usage Prediction for Energy-Efficient Cloud Data
Centers", IEEE TSC): one file per VM, 288 lines of "cpu_percent mem_percent", one per 5 minutes.
It is read straight from the archive (nothing extracted into the repository).

1. Replay: 16 hosts, 400 VMs drawn from the trace with the seed, VM sizes from a fixed mix
   (vCPUs 1/2/4/8, memory 2/4/8/16 GiB), equal hosts sized so that the mean CPU demand over the
   run is --load (0.7) of the cluster. Initial placement with place_many. Each 5-minute interval
   the engine sees the demand measured at the previous interval only (never the future); the
   imbalance and overload are measured on the true demand of the interval. Modes: DRS off,
   DRS on (threshold 3), DRS on + DPM; then the same VMs on hosts sized for half the load, where
   DPM has room to power hosts off (host-hours on vs. all-on).
2. Time per pass at 8/32/96 hosts (~104 VMs per host, 10,000 VMs at 96), trace demand.
Run: .venv/bin/python bench/drs.py [--trace PATH] [--hosts 16] [--vms 400] [--seed 1]
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import tarfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from vcenter.domain.dpm import DpmHistory, DpmSettings, decide
from vcenter.domain.drs import DrsHistory, DrsSettings, balance, vm_entitlements
from vcenter.domain.placement import place_many
from vcenter.domain.snapshot import ClusterSnapshot, HostSnapshot, VmSnapshot

TRACE = Path(__file__).resolve().parents[1].parent / "shared" / "traces" / "GCD_VMs.tar.gz"
CORE_MHZ = 2500.0
CORES = 32
INTERVAL_S = 300.0


def load_trace(path: Path, n: int, seed: int) -> list[np.ndarray]:
    """n VMs drawn with the seed; each an array (intervals x 2) of fractions (cpu, mem)."""
    with tarfile.open(path) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name)
        chosen = random.Random(seed).sample(members, n)
        out = []
        for m in chosen:
            rows = [line.split() for line in tar.extractfile(m).read().decode().splitlines() if line.strip()]
            arr = np.array([[float(r[0]), float(r[1]) if len(r) > 1 else float(r[0])] for r in rows]) / 100.0
            out.append(np.clip(arr, 0.0, 1.0))
    return out


def build(traces: list[np.ndarray], n_hosts: int, load: float, seed: int):
    rnd = random.Random(seed + 1)
    sizes = [(rnd.choice((1, 2, 2, 4, 4, 8)), rnd.choice((2048, 4096, 4096, 8192, 16384))) for _ in traces]
    mean_cpu = sum(float(t[:, 0].mean()) * v * CORE_MHZ for t, (v, _) in zip(traces, sizes))
    host_mhz = mean_cpu / load / n_hosts
    cores = max(1, round(host_mhz / CORE_MHZ))
    mem_total = sum(m for _, m in sizes)
    host_mem = int(mem_total / n_hosts / 0.75)
    hosts = tuple(HostSnapshot(f"h{i:02d}", cores=cores, cpu_mhz=cores * CORE_MHZ, memory_mib=host_mem, vcpu_ratio=16.0)
                  for i in range(n_hosts))
    vms = [VmSnapshot(f"vm{k:04d}", vcpus=v, memory_mib=m) for k, (v, m) in enumerate(sizes)]
    snap = ClusterSnapshot(hosts, ())
    placed = place_many(snap, vms).placed
    vms = tuple(replace(vm, host=placed.get(vm.id)) for vm in vms)
    return ClusterSnapshot(hosts, vms), sizes


def demand_at(traces, sizes, t: int) -> dict[str, tuple[float, float]]:
    return {f"vm{k:04d}": (float(tr[t % len(tr), 0]) * v * CORE_MHZ, float(tr[t % len(tr), 1]) * m)
            for k, (tr, (v, m)) in enumerate(zip(traces, sizes))}


def measure(snap: ClusterSnapshot, demand) -> tuple[float, int, int]:
    """Imbalance (max of CPU/mem std of demand/capacity over powered-on hosts), overloaded hosts, hosts on."""
    on = [h for h in snap.hosts if h.usable]
    idx = {h.id: i for i, h in enumerate(on)}
    load = np.zeros((len(on), 2))
    for vm in snap.vms:
        if vm.host in idx:
            load[idx[vm.host]] += demand[vm.id]
    cap = np.array([[h.cpu_mhz, h.memory_mib] for h in on], dtype=float)
    x = load / cap
    return float(max(x[:, 0].std(), x[:, 1].std())), int((x > 1.0).any(axis=1).sum()), len(on)


def replay(snap0, traces, sizes, mode: str, threshold: int):
    snap = snap0
    steps = min(len(t) for t in traces)
    moved_at: dict[str, float] = {}
    power_at: dict[str, float] = {}
    samples: list[dict] = []
    imb, overloaded, host_intervals, migrations, on_hours, pass_s = [], 0, 0, 0, 0.0, []
    drs_settings = DrsSettings(threshold=threshold)
    dpm_settings = DpmSettings()
    for t in range(steps):
        now = t * INTERVAL_S
        truth = demand_at(traces, sizes, t)
        i, over, on = measure(snap, truth)
        imb.append(i)
        overloaded += over
        host_intervals += on
        on_hours += on * INTERVAL_S / 3600.0
        if t == 0:
            samples.append(truth)
            continue
        seen = samples[-1]  # the engine sees demand up to the previous interval only
        if mode in ("drs", "drs+dpm"):
            t0 = time.perf_counter()
            plan = balance(snap, drs_settings, seen, DrsHistory(recent={v: now - a for v, a in moved_at.items()}))
            pass_s.append(time.perf_counter() - t0)
            where = {r.vm_id: r.target for r in plan.recommendations}
            migrations += len(where)
            for v in where:
                moved_at[v] = now
            snap = replace(snap, vms=tuple(replace(vm, host=where.get(vm.id, vm.host)) for vm in snap.vms))
        if mode == "drs+dpm":
            dplan = decide(snap, dpm_settings, samples[-12:], DpmHistory({h: now - a for h, a in power_at.items()}))
            for r in dplan.recommendations:
                power_at[r.host] = now
                if r.action == "power-off":
                    moves = dict(r.evacuation)
                    migrations += len(moves)
                    snap = replace(snap, hosts=tuple(replace(h, standby=True) if h.id == r.host else h for h in snap.hosts),
                                   vms=tuple(replace(vm, host=moves.get(vm.id, vm.host)) for vm in snap.vms))
                else:
                    snap = replace(snap, hosts=tuple(replace(h, standby=False) if h.id == r.host else h for h in snap.hosts))
        samples.append(truth)
    hours = steps * INTERVAL_S / 3600.0
    return {
        "mean_imbalance": statistics.fmean(imb), "p95_imbalance": float(np.percentile(imb, 95)),
        "overload_fraction": overloaded / max(1, host_intervals), "migrations": migrations,
        "migrations_per_hour": migrations / hours, "host_hours_on": on_hours,
        "pass_seconds_p50": statistics.median(pass_s) if pass_s else 0.0,
    }


def pass_time(traces, n_hosts: int, n_vms: int, seed: int, repeat: int = 3) -> tuple[float, int]:
    rnd = random.Random(seed)
    pick = [traces[rnd.randrange(len(traces))] for _ in range(n_vms)]
    sizes = [(rnd.choice((1, 2, 4)), rnd.choice((1024, 2048, 4096, 8192))) for _ in range(n_vms)]
    hosts = tuple(HostSnapshot(f"h{i:03d}", cores=48, cpu_mhz=48 * CORE_MHZ, memory_mib=1024 * 1024, vcpu_ratio=16.0) for i in range(n_hosts))
    # a deliberately skewed start: a third of the VMs crowd the first quarter of the hosts
    vms = tuple(VmSnapshot(f"vm{k:05d}", vcpus=v, memory_mib=m,
                           host=hosts[k % max(1, n_hosts // 4)].id if k % 3 == 0 else hosts[k % n_hosts].id)
                for k, (v, m) in enumerate(sizes))
    snap = ClusterSnapshot(hosts, vms)
    t = rnd.randrange(200)
    demand = {f"vm{k:05d}": (float(tr[t, 0]) * v * CORE_MHZ, float(tr[t, 1]) * m) for k, (tr, (v, m)) in enumerate(zip(pick, sizes))}
    best, moves = float("inf"), 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        plan = balance(snap, DrsSettings(), demand)
        best = min(best, time.perf_counter() - t0)
        moves = len(plan.recommendations)
    return best, moves


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", type=Path, default=TRACE)
    ap.add_argument("--hosts", type=int, default=16)
    ap.add_argument("--vms", type=int, default=400)
    ap.add_argument("--load", type=float, default=0.7)
    ap.add_argument("--threshold", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    traces = load_trace(args.trace, args.vms, args.seed)
    snap, sizes = build(traces, args.hosts, args.load, args.seed)
    h = snap.hosts[0]
    print(f"trace {args.trace.name}: {args.vms} VMs x {min(len(t) for t in traces)} intervals of 5 min; "
          f"{args.hosts} hosts of {h.cores} cores x {CORE_MHZ:.0f} MHz, {h.memory_mib} MiB; load {args.load}; seed {args.seed}")
    print(f"\n{'mode':10} {'mean imb':>9} {'p95 imb':>8} {'overload':>9} {'migr':>6} {'migr/h':>7} {'host-h on':>10} {'pass p50 s':>11}")
    for mode in ("off", "drs", "drs+dpm"):
        r = replay(snap, traces, sizes, mode, args.threshold)
        print(f"{mode:10} {r['mean_imbalance']:9.4f} {r['p95_imbalance']:8.4f} {r['overload_fraction']:9.4f} "
              f"{r['migrations']:6d} {r['migrations_per_hour']:7.2f} {r['host_hours_on']:10.1f} {r['pass_seconds_p50']:11.4f}")
    low = args.load / 2
    snap_low, sizes_low = build(traces, args.hosts, low, args.seed)
    print(f"\nsame VMs, hosts sized for load {low:.2f} (DPM has room to act):")
    for mode in ("drs", "drs+dpm"):
        r = replay(snap_low, traces, sizes_low, mode, args.threshold)
        print(f"{mode:10} {r['mean_imbalance']:9.4f} {r['p95_imbalance']:8.4f} {r['overload_fraction']:9.4f} "
              f"{r['migrations']:6d} {r['migrations_per_hour']:7.2f} {r['host_hours_on']:10.1f} {r['pass_seconds_p50']:11.4f}")
    all_traces = load_trace(args.trace, 1600, args.seed)
    print(f"\n{'hosts':>6} {'VMs':>7} {'pass (s)':>9} {'moves':>6}   (one core, best of 3, skewed start, trace demand)")
    for n_hosts, n_vms in ((8, 833), (32, 3333), (96, 10_000)):
        secs, moves = pass_time(all_traces, n_hosts, n_vms, args.seed)
        print(f"{n_hosts:6d} {n_vms:7d} {secs:9.3f} {moves:6d}")


if __name__ == "__main__":
    main()
