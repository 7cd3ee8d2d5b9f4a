"""Placement at scale: prints a table (not a test).

Cluster: 96 hosts (48 cores, 512 GiB, 4 shared datastores, 8 port groups, two CPU generations),
10,000 running VMs, 500 anti-affinity rules (must and should) and 20 VM-host rules, one pool
tree. Measured on one core, wall time of the whole call (snapshot -> aggregates -> decision):
  1. place one VM                  (goal < 1 s)
  2. place_many 1,000 VMs at once  (goal < 1 s)
Run: .venv/bin/python bench/placement.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import random
import time

from vcenter.domain.cpu import CpuModel, CpuRequirement
from vcenter.domain.placement import place, place_many
from vcenter.domain.snapshot import Alloc, ClusterSnapshot, HostSnapshot, PoolNode, Rule, RuleKind, VmSnapshot

GOAL = 1.0


def build(n_hosts: int = 96, n_vms: int = 10_000, seed: int = 7) -> ClusterSnapshot:
    rnd = random.Random(seed)  # the bench's data only; the domain never sees randomness
    old = CpuModel("GenuineIntel", "Cascadelake", frozenset({"sse4_2", "avx", "avx2", "avx512f"}))
    new = CpuModel("GenuineIntel", "Sapphirerapids", old.features | {"amx_tile", "avx512_fp16"})
    hosts = tuple(
        HostSnapshot(
            f"h{i:03d}",
            cores=48,
            cpu_mhz=48 * 2600.0,
            memory_mib=512 * 1024,
            reserved_memory_mib=8 * 1024,
            vcpu_ratio=8.0,
            datastores=frozenset({f"ds{i % 4}", f"ds{(i + 1) % 4}"}),
            port_groups=frozenset(f"pg{j}" for j in range(8) if (i + j) % 5 != 0),
            cpu=new if i % 3 == 0 else old,
        )
        for i in range(n_hosts)
    )
    vms = []
    per_host_mem = [0] * n_hosts
    for k in range(n_vms):
        mem = rnd.choice((1024, 2048, 4096, 8192))
        i = k % n_hosts
        if per_host_mem[i] + mem > 400 * 1024:
            mem = 1024
        per_host_mem[i] += mem
        h = hosts[i]
        vms.append(
            VmSnapshot(
                f"vm{k:05d}",
                vcpus=rnd.choice((1, 2, 4)),
                memory_mib=mem,
                host=h.id,
                datastores=frozenset({sorted(h.datastores)[0]}),
                port_groups=frozenset({sorted(h.port_groups)[0]}),
                pool=f"p{k % 4}" if k % 2 else None,
            )
        )
    rules = [Rule(f"aa{r}", RuleKind.ANTI_AFFINITY, r % 2 == 0, frozenset(f"vm{(r * 20 + j):05d}" for j in range(0, 20, 5))) for r in range(500)]
    rules += [
        Rule(f"vh{r}", RuleKind.RUN_ON if r % 2 else RuleKind.NOT_RUN_ON, r % 4 < 2, frozenset(f"vm{(5000 + r * 7 + j):05d}" for j in range(7)), frozenset(h.id for h in hosts[r::5]))
        for r in range(20)
    ]
    pools = tuple(PoolNode(f"p{j}", mem=Alloc(0, None, 163840.0, True), cpu=Alloc(0, None, 4000.0, True)) for j in range(4))
    return ClusterSnapshot(hosts, tuple(vms), tuple(rules), pools)


def new_vms(n: int, seed: int = 11) -> list[VmSnapshot]:
    rnd = random.Random(seed)
    return [
        VmSnapshot(
            f"new{k:04d}",
            vcpus=rnd.choice((1, 2, 4, 8)),
            memory_mib=rnd.choice((1024, 2048, 4096, 8192, 16384)),
            memory_reservation_mib=rnd.choice((0, 0, 1024)),
            datastores=frozenset({f"ds{k % 4}"}),
            port_groups=frozenset({f"pg{k % 8}"}),
            cpu=CpuRequirement(None, frozenset({"avx512f"})),
            pool=f"p{k % 4}",
        )
        for k in range(n)
    ]


def timed(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    t0 = time.perf_counter()
    snap = build()
    build_s = time.perf_counter() - t0
    one = new_vms(1)[0]
    batch = new_vms(1000)
    r1 = place(snap, one)
    rm = place_many(snap, batch)
    rows = [
        ("place 1 VM (96 hosts, 10,000 VMs)", timed(lambda: place(snap, one), args.repeat), f"-> {r1.host}, {len(r1.candidates)} candidates, {len(r1.rejected)} rejected"),
        ("place_many 1,000 VMs (96 hosts, 10,000 VMs)", timed(lambda: place_many(snap, batch), args.repeat), f"{len(rm.placed)} placed, {len(rm.unplaced)} unplaced"),
    ]
    print(f"cluster built in {build_s:.2f} s (not measured): {len(snap.hosts)} hosts, {len(snap.vms)} VMs, {len(snap.rules)} rules, {len(snap.pools)} pools")
    print(f"{'case':46} {'time (s)':>9} {'goal (s)':>9} {'time/goal':>10}  result")
    for name, secs, note in rows:
        print(f"{name:46} {secs:9.3f} {GOAL:9.1f} {secs / GOAL:10.2f}  {note}")


if __name__ == "__main__":
    main()
