"""Trace replay: real VM demand over a simulated cluster, with the real DRS/DPM engine each interval.

``vcenter sim drs`` (vcenter.sim.cli) and bench/drs.py call this module; it reads no clock for
decisions (time is the interval index) and draws everything random from the seed.

Trace format
    A folder, or a ``.tar.gz`` / ``.tgz`` / ``.tar`` archive, of files, one per VM (any depth;
    hidden files such as ``.DS_Store`` or ``._x`` are ignored). Each non-blank line is one
    5-minute interval: ``cpu_percent [mem_percent]``, separated by spaces, tabs or a comma; ``#``
    starts a comment. Percentages are of the VM's configured size (vCPUs, memory). A missing
    memory column means the VM uses all its configured memory. Values above 100 (the GCD trace
    has memory up to 215 %) are clipped to 100: a VM cannot use more than it has. A negative,
    non-numeric, NaN or infinite value, a third column or an empty file is an error naming the
    file and line (``TraceError``). Files of different lengths are allowed: the replay lasts as
    long as the shortest file drawn.

Scenario (``build_scenario``)
    - VMs: ``vms`` files drawn from the trace with the seed, without replacement while there are
      enough files; beyond that, further shuffled passes over the files (each file used
      ``vms / files`` times, rounded).
    - VM sizes: drawn with the seed from ``SIZE_MIX`` (vCPUs, memory GiB, weight), a mix of
      common cloud flavours::

          1 vCPU  2 GiB  20 %     4 vCPU  8 GiB  20 %     8 vCPU 16 GiB  7 %
          2 vCPU  4 GiB  30 %     4 vCPU 16 GiB  10 %     8 vCPU 32 GiB  3 %
          2 vCPU  8 GiB  10 %

    - hosts: ``hosts`` equal hosts of ``CORE_MHZ`` (2.5 GHz) cores; the CPU capacity of a host
      is set so that the mean CPU demand over the run is ``load`` of the cluster's capacity
      (cores rounded up, the excess reserved for the hypervisor, so the ratio is exact). Memory:
      the VMs' configured memory fills ``MEM_COMMIT`` (75 %) of the cluster (no memory
      overcommit: placement admits configured memory). vCPU ratio ``VCPU_RATIO`` per core.
    - initial placement: ``place_many`` (the product's placement) on the empty cluster, the same
      for every balancer.

Replay (``replay``), for each interval t = 0 .. T-1 (logical time t x 300 s)
    1. decide: the engine gets the demand *measured* up to interval t-1 (for DRS the samples
       up to t-1 smoothed with ``smooth_demands_with_spread`` (alpha ``DRS_SMOOTHING``, 0.5), as
       the product smooths measured demand, with the samples' noise spread (DRS's confidence);
       DRS is given ``demand.level_shift_estimate`` of them: the last sample where it lies more
       than 3 noise spreads off the smoothed value, the smoothed value elsewhere); the last sample for the greedy baseline, which is what Watcher's
       workload_balance averages over its default 300 s period; the last ``off_window`` samples
       for DPM); nothing of t or later. At t = 0 nothing is measured yet and nothing is decided. With ``--dpm``, DPM
       decides first (a power-off evacuates the host with its plan; a power-on makes the host
       usable from the next interval: it boots for ``boot_intervals``, counted as powered on),
       then the balancer runs on the result. Every move is applied at once (a migration takes
       less than an interval), and counts as a migration.
    2. measure on the true demand of interval t: imbalance as the engine defines it (the larger
       of the CPU and memory standard deviations of the hosts' normalised load, over powered-on
       hosts), overloaded host-intervals (a powered-on host whose CPU or memory demand exceeds
       its capacity), powered-on hosts (booting ones included).

Balancers
    - ``drs``: ``vcenter.domain.drs.balance`` with the threshold, fully automated, default
      cooldown / budget / gains, on smoothed demand; its plan applied with ``apply_plan``.
    - ``greedy``: a baseline in the manner of OpenStack Watcher's ``workload_balance``: each pass
      at most one move, of the VM of the most loaded host (larger of CPU and memory load) to the
      least loaded one that most reduces the imbalance, if it reduces it at all; no cooldown, no
      cost, no rules beyond capacity (configured memory, vCPU ratio, the target's CPU demand).
    - ``none``: the initial placement is kept.

Metrics (``ReplayResult.summary``): mean and p95 imbalance over intervals, overload fraction
(overloaded host-intervals / powered-on host-intervals), migrations, powered-on host-hours, and
the time of the engine's pass (DPM + balancer, ``time.perf_counter``; reported, never used to
decide) at the median.
"""

from __future__ import annotations

import math
import os
import random
import statistics
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from vcenter.domain.demand import NOISE_WINDOW, level_shift_estimate, noise_spreads
from vcenter.domain.dpm import DpmHistory, DpmSettings, decide
from vcenter.domain.drs import DrsHistory, DrsSettings, apply_plan, balance
from vcenter.domain.drs_demand import smooth_demands_with_spread
from vcenter.domain.placement import place_many
from vcenter.domain.snapshot import ClusterSnapshot, HostSnapshot, VmSnapshot
from vcenter.sim.synthetic import generate, parse_spec
from vcenter.sim.trace_data import Trace, TraceError

INTERVAL_S = 300.0
CORE_MHZ = 2500.0
MEM_COMMIT = 0.75
VCPU_RATIO = 16.0
DRS_SMOOTHING = 0.5  # alpha of the demand DRS sees (1 = the last sample)
SIM_HA_HOSTS = 1  # DPM keeps one host's worth of capacity on for HA failover (and the bound counts it)
SIZE_MIX: tuple[tuple[int, int, float], ...] = (  # (vCPUs, memory GiB, weight)
    (1, 2, 0.20),
    (2, 4, 0.30),
    (2, 8, 0.10),
    (4, 8, 0.20),
    (4, 16, 0.10),
    (8, 16, 0.07),
    (8, 32, 0.03),
)
BALANCERS = ("drs", "greedy", "none")
SUMMARY_KEYS = ("mean_imbalance", "p95_imbalance", "overload_fraction", "migrations", "host_hours_on", "host_hours_bound", "pass_seconds_p50")
DEFAULT_TRACE = Path(__file__).resolve().parents[3] / "shared" / "traces" / "GCD_VMs.tar.gz"


# -- reading ---------------------------------------------------------------------------------


def parse_series(text: str, name: str) -> tuple[np.ndarray, int]:
    """One VM's file: an (intervals x 2) array of fractions and how many values were clipped."""
    rows: list[tuple[float, float]] = []
    clipped = 0
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].replace(",", " ").strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) > 2:
            raise TraceError(f"{name}:{no}: expected 'cpu_percent [mem_percent]', got {len(parts)} columns: {raw.strip()!r}")
        vals = []
        for col, p in zip(("cpu_percent", "mem_percent"), parts):
            try:
                v = float(p)
            except ValueError:
                raise TraceError(f"{name}:{no}: {col} is not a number: {p!r} (line {raw.strip()!r})") from None
            if not math.isfinite(v) or v < 0:
                raise TraceError(f"{name}:{no}: {col} must be a finite percentage >= 0, got {p!r}")
            if v > 100.0:
                clipped += 1
                v = 100.0
            vals.append(v / 100.0)
        rows.append((vals[0], vals[1] if len(vals) == 2 else 1.0))
    if not rows:
        raise TraceError(f"{name}: no samples (empty file)")
    return np.array(rows, dtype=float), clipped


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in Path(rel).parts)


def _files(path: Path) -> Iterator[tuple[str, bytes]]:
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            rel = p.relative_to(path).as_posix()
            if p.is_file() and not _hidden(rel):
                yield rel, p.read_bytes()
        return
    if not path.exists():
        raise TraceError(f"{path}: no such file or folder")
    try:
        with tarfile.open(path) as tar:  # one sequential pass over the archive
            for m in tar:
                if m.isfile() and not _hidden(m.name):
                    f = tar.extractfile(m)
                    if f is not None:
                        yield m.name, f.read()
    except tarfile.TarError as e:
        raise TraceError(f"{path}: not a folder nor a readable tar archive ({e})") from None


def read_trace(path: str | os.PathLike) -> Trace:
    """Every VM of a trace folder or archive, in name order (each file validated); or a
    synthetic trace named ``synthetic:FAMILY:SEED`` (vcenter.sim.synthetic, 400 VMs, 24 h)."""
    spec = parse_spec(str(path))
    if spec is not None:
        return generate(*spec)
    path = Path(path)
    items: list[tuple[str, np.ndarray]] = []
    clipped = 0
    for name, data in _files(path):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise TraceError(f"{path}/{name}: not a text file") from None
        arr, c = parse_series(text, f"{path.name}/{name}" if not path.is_dir() else name)
        clipped += c
        items.append((name, arr))
    if not items:
        raise TraceError(f"{path}: no trace files")
    items.sort(key=lambda x: x[0])
    return Trace(str(path), tuple(n for n, _ in items), tuple(a for _, a in items), clipped)


# -- the scenario ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """A simulated cluster and the true demand of its VMs over the run."""

    snapshot: ClusterSnapshot  # hosts and the initial placement
    demand: np.ndarray  # (intervals x VMs x 2): CPU MHz, memory MiB, in snapshot.vms order
    files: tuple[str, ...]  # the trace file behind each VM
    load: float

    @property
    def intervals(self) -> int:
        return int(self.demand.shape[0])

    def with_demand(self, demand: np.ndarray) -> Scenario:
        if demand.shape != self.demand.shape:
            raise ValueError(f"demand shape {demand.shape} != {self.demand.shape}")
        return replace(self, demand=demand)


def draw_files(n_files: int, n: int, seed: int) -> list[int]:
    """``n`` file indexes drawn with the seed: without replacement, then further shuffled passes."""
    rnd = random.Random(f"virtcenter-trace-vms:{seed}")
    out: list[int] = []
    while len(out) < n:
        take = min(n - len(out), n_files)
        out.extend(rnd.sample(range(n_files), take))
    return out


def draw_sizes(n: int, seed: int) -> list[tuple[int, int]]:
    """(vCPUs, memory MiB) of ``n`` VMs drawn with the seed from ``SIZE_MIX``."""
    rnd = random.Random(f"virtcenter-trace-sizes:{seed}")
    picks = rnd.choices(SIZE_MIX, weights=[w for _, _, w in SIZE_MIX], k=n)
    return [(v, g * 1024) for v, g, _ in picks]


def build_scenario(trace: Trace, hosts: int, vms: int, load: float = 0.7, seed: int = 1, intervals: int | None = None) -> Scenario:
    if hosts < 1 or vms < 1:
        raise ValueError("need at least one host and one VM")
    if not 0 < load <= 10:
        raise ValueError(f"load {load} must be in (0, 10]")
    idx = draw_files(len(trace), vms, seed)
    sizes = draw_sizes(vms, seed)
    steps = min(len(trace.series[i]) for i in idx)
    if intervals is not None:
        steps = min(steps, max(1, intervals))
    frac = np.stack([trace.series[i][:steps] for i in idx], axis=1)  # T x M x 2
    size = np.array([(v * CORE_MHZ, float(m)) for v, m in sizes])  # M x 2
    demand = frac * size[None, :, :]
    mean_cpu = float(demand[:, :, 0].sum(axis=1).mean())
    host_mhz = max(mean_cpu / load / hosts, CORE_MHZ * 0.01)
    cores = max(1, math.ceil(host_mhz / CORE_MHZ - 1e-9))
    mem_total = sum(m for _, m in sizes)
    host_mem = max(math.ceil(mem_total / hosts / MEM_COMMIT), max(m for _, m in sizes))
    width = len(str(hosts - 1))
    host_list = tuple(
        HostSnapshot(f"h{i:0{width}d}", cores=cores, cpu_mhz=cores * CORE_MHZ, reserved_cpu_mhz=cores * CORE_MHZ - host_mhz, memory_mib=host_mem, vcpu_ratio=VCPU_RATIO) for i in range(hosts)
    )
    vwidth = len(str(vms - 1))
    vm_list = [VmSnapshot(f"vm{k:0{vwidth}d}", vcpus=v, memory_mib=m) for k, (v, m) in enumerate(sizes)]
    result = place_many(ClusterSnapshot(host_list, ()), vm_list)
    if result.unplaced:
        vid, why = sorted(result.unplaced.items())[0]
        raise ValueError(f"initial placement: {len(result.unplaced)} of {vms} VMs fit on no host, e.g. {vid}: {why}")
    placed = result.placed
    snap = ClusterSnapshot(host_list, tuple(replace(vm, host=placed[vm.id]) for vm in vm_list))
    return Scenario(snap, demand, tuple(trace.names[i] for i in idx), load)


# -- balancers -------------------------------------------------------------------------------


def _loads(snap: ClusterSnapshot, demand: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-host (demand sums n x 2, capacity n x 2, usable mask, VM host index)."""
    index = {h.id: i for i, h in enumerate(snap.hosts)}
    where = np.array([index.get(vm.host, -1) if vm.host is not None else -1 for vm in snap.vms])
    n = len(snap.hosts)
    ok = where >= 0
    load = np.zeros((n, 2))
    np.add.at(load, where[ok], demand[ok])
    cap = np.array([(h.cpu_mhz - h.reserved_cpu_mhz - h.used_cpu_mhz, h.memory_mib - h.reserved_memory_mib - h.used_memory_mib) for h in snap.hosts], dtype=float)
    usable = np.array([h.usable for h in snap.hosts], dtype=bool)
    return load, cap, usable, where


def _imbalance(x: np.ndarray) -> float:
    return float(max(x[:, 0].std(), x[:, 1].std())) if x.shape[0] else 0.0


def greedy_move(snap: ClusterSnapshot, demand: np.ndarray) -> tuple[str, str, str] | None:
    """The greedy baseline's one move (VM id, source, target) on the observed ``demand`` (VMs x 2,
    snapshot order), or None when no VM of the most loaded host lowers the imbalance."""
    load, cap, usable, where = _loads(snap, demand)
    act = np.flatnonzero(usable)
    if act.size < 2:
        return None
    x = load / cap
    score = x.max(axis=1)
    src = int(act[np.argmax(score[act])])
    others = act[act != src]
    dst = int(others[np.argmin(score[others])])
    on_src = np.flatnonzero(where == src)
    if on_src.size == 0:
        return None
    mem = np.array([snap.vms[k].memory_mib for k in on_src], dtype=float)
    vcpu = np.array([snap.vms[k].vcpus for k in on_src], dtype=float)
    mem_used = np.zeros(len(snap.hosts))
    vcpu_used = np.zeros(len(snap.hosts))
    all_where = where >= 0
    np.add.at(mem_used, where[all_where], [vm.memory_mib for vm, w in zip(snap.vms, all_where) if w])
    np.add.at(vcpu_used, where[all_where], [vm.vcpus for vm, w in zip(snap.vms, all_where) if w])
    h = snap.hosts[dst]
    d = demand[on_src]
    fits = (mem_used[dst] + mem <= cap[dst, 1] + 1e-6) & (vcpu_used[dst] + vcpu <= h.cores * h.vcpu_ratio) & (load[dst, 0] + d[:, 0] <= cap[dst, 0] + 1e-6)
    if not fits.any():
        return None
    before = _imbalance(x[act])
    best, best_after = None, before - 1e-12
    for j in np.flatnonzero(fits).tolist():
        x2 = x.copy()
        x2[src] -= d[j] / cap[src]
        x2[dst] += d[j] / cap[dst]
        after = _imbalance(x2[act])
        if after < best_after:
            best, best_after = j, after
    if best is None:
        return None
    vm = snap.vms[int(on_src[best])]
    return vm.id, snap.hosts[src].id, snap.hosts[dst].id


# -- replay ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    t: int  # the interval at whose start it took effect (decided on demand up to t-1)
    kind: str  # "move" (balancer), "evacuate" (DPM power-off), "power-off", "power-on"
    subject: str  # VM id or host id
    source: str = ""
    target: str = ""


@dataclass
class ReplayResult:
    balancer: str
    dpm: bool
    threshold: int
    imbalance: np.ndarray  # per interval
    overloaded: int  # host-intervals
    host_intervals_on: int
    migrations: int
    power_offs: int
    power_ons: int
    pass_seconds: list[float]
    decisions: list[Decision] = field(default_factory=list)
    hosts: int = 0
    vms: int = 0
    cpu_std: np.ndarray | None = None  # per interval, each resource's part of ``imbalance``
    mem_std: np.ndarray | None = None
    bound_host_intervals: int = 0  # sum over intervals of DPM's bound (``host_bound``)
    overloaded_at_start: int = 0  # hosts overloaded at interval 0 (the initial placement, nothing measured yet)

    @property
    def intervals(self) -> int:
        return int(self.imbalance.size)

    def summary(self) -> dict:
        ps = self.pass_seconds
        return {
            "mean_imbalance": float(self.imbalance.mean()) if self.imbalance.size else 0.0,
            "p95_imbalance": float(np.percentile(self.imbalance, 95)) if self.imbalance.size else 0.0,
            "overload_fraction": self.overloaded / self.host_intervals_on if self.host_intervals_on else 0.0,
            "migrations": self.migrations,
            "host_hours_on": self.host_intervals_on * INTERVAL_S / 3600.0,
            "host_hours_bound": self.bound_host_intervals * INTERVAL_S / 3600.0,
            "pass_seconds_p50": statistics.median(ps) if ps else 0.0,
            "pass_seconds_max": max(ps) if ps else 0.0,
            "mean_cpu_imbalance": float(self.cpu_std.mean()) if self.cpu_std is not None and self.cpu_std.size else 0.0,
            "mean_mem_imbalance": float(self.mem_std.mean()) if self.mem_std is not None and self.mem_std.size else 0.0,
            "overloaded_host_intervals": self.overloaded,
            "overloaded_at_start": self.overloaded_at_start,
            "host_intervals_on": self.host_intervals_on,
            "power_offs": self.power_offs,
            "power_ons": self.power_ons,
            "intervals": self.intervals,
            "hosts": self.hosts,
            "vms": self.vms,
            "balancer": self.balancer,
            "dpm": self.dpm,
            "threshold": self.threshold,
        }


def host_bound(totals: np.ndarray, caps: np.ndarray, high: float, ha_hosts: int = 0) -> np.ndarray:
    """DPM's bound, per interval: the fewest hosts whose capacity at utilisation ``high`` (the
    band's upper edge) holds that interval's demand on CPU and on memory, plus ``ha_hosts``
    (hosts kept on for HA failover); never more than there are hosts. ``totals`` is (T x 2) true
    demand (CPU MHz, memory MiB), ``caps`` (hosts x 2) capacities; the largest hosts are counted
    first (fewest hosts)."""
    totals = np.asarray(totals, dtype=float).reshape(-1, 2)
    caps = np.asarray(caps, dtype=float).reshape(-1, 2)
    n = caps.shape[0]
    need = np.zeros(totals.shape[0], dtype=int)
    for r in (0, 1):
        cum = np.cumsum(np.sort(caps[:, r])[::-1]) * high  # capacity of the k largest, k = 1..n
        k = np.searchsorted(cum, totals[:, r] - 1e-6, side="left") + 1  # fewest k with cum >= demand
        need = np.maximum(need, np.where(totals[:, r] <= 1e-9, 0, k))
    return np.minimum(need + max(0, ha_hosts), n)


def _set_host_state(snap: ClusterSnapshot, host: str, **kw) -> ClusterSnapshot:
    return replace(snap, hosts=tuple(replace(h, **kw) if h.id == host else h for h in snap.hosts))


def _move(snap: ClusterSnapshot, moves: dict[str, str]) -> ClusterSnapshot:
    if not moves:
        return snap
    return replace(snap, vms=tuple(replace(vm, host=moves[vm.id]) if vm.id in moves else vm for vm in snap.vms))


def replay(
    scenario: Scenario,
    balancer: str = "drs",
    threshold: int = 3,
    dpm: bool = False,
    drs_settings: DrsSettings | None = None,
    dpm_settings: DpmSettings | None = None,
    boot_intervals: int | None = None,
    on_pass: Callable[[int, dict[str, tuple[float, float]]], None] | None = None,
    smoothing: float = DRS_SMOOTHING,
    spread_kind: str = "noise",
) -> ReplayResult:
    """Replay the scenario's demand with ``balancer`` (drs, greedy, none) and optionally DPM.

    ``on_pass(t, observed)``, if given, is called with what the engine is shown at interval t
    (for tests). Decisions at t use ``scenario.demand[:t]`` only.
    """
    if balancer not in BALANCERS:
        raise ValueError(f"balancer {balancer!r} not in {', '.join(BALANCERS)}")
    drs_s = drs_settings or DrsSettings(threshold=threshold)
    dpm_s = dpm_settings or DpmSettings(ha_hosts=SIM_HA_HOSTS)
    if boot_intervals is None:
        boot_intervals = math.ceil(dpm_s.wake_s / INTERVAL_S - 1e-9)
    n_samples = dpm_s.samples_for(max(dpm_s.off_window_s, dpm_s.on_window_s))
    snap = scenario.snapshot
    ids = [vm.id for vm in snap.vms]
    truth_all = scenario.demand
    T = scenario.intervals
    imb = np.zeros(T)
    cpu_std = np.zeros(T)
    mem_std = np.zeros(T)
    overloaded = on_count = migrations = offs = ons = at_start = 0
    pass_s: list[float] = []
    decisions: list[Decision] = []
    moved_at: dict[str, int] = {}
    power_at: dict[str, int] = {}
    booting: dict[str, int] = {}  # host -> interval from which it is usable
    samples: list[dict[str, tuple[float, float]]] = []
    smoothed: dict[str, tuple[float, float]] | None = None  # what DRS sees
    spread: dict[str, tuple[float, float]] = {}  # how far the samples stray from it

    for t in range(T):
        for h, ready in list(booting.items()):
            if ready <= t:
                snap = _set_host_state(snap, h, standby=False, maintenance=False)
                del booting[h]
        # 1. decide on what was measured up to t-1 (never truth_all[t:]).
        if t > 0:
            observed = truth_all[t - 1]
            seen = {vid: (float(observed[k, 0]), float(observed[k, 1])) for k, vid in enumerate(ids)}
            samples.append(seen)
            del samples[:-n_samples]
            smoothed, spread = smooth_demands_with_spread(None if smoothed is None else (smoothed, spread), seen, smoothing)
            estimate = smoothed
            if spread_kind == "noise":
                nz = noise_spreads(truth_all[max(0, t - NOISE_WINDOW) : t])
                spread = {vid: (float(nz[k, 0]), float(nz[k, 1])) for k, vid in enumerate(ids)}
                # What DRS takes the demand to be: the last sample where it shifted beyond the
                # noise, the smoothed demand where it did not (demand.level_shift_estimate).
                est = level_shift_estimate(np.array([smoothed[v] for v in ids]), observed, nz)
                estimate = {vid: (float(est[k, 0]), float(est[k, 1])) for k, vid in enumerate(ids)}
            if on_pass is not None:
                on_pass(t, seen)
            t0 = time.perf_counter()
            if dpm:
                plan = decide(snap, dpm_s, samples, DpmHistory({h: (t - a) * INTERVAL_S for h, a in power_at.items()}))
                for r in plan.recommendations:
                    if r.action == "power-off":
                        moves = dict(r.evacuation)
                        for vid, dst in r.evacuation:
                            decisions.append(Decision(t, "evacuate", vid, r.host, dst))
                            moved_at[vid] = t
                        migrations += len(moves)
                        snap = _set_host_state(_move(snap, moves), r.host, standby=True)
                        offs += 1
                    elif r.host not in booting:
                        # Booting: not usable yet; marked in maintenance so DPM does not pick it again.
                        if boot_intervals > 0:
                            snap = _set_host_state(snap, r.host, standby=True, maintenance=True)
                            booting[r.host] = t + boot_intervals
                        else:
                            snap = _set_host_state(snap, r.host, standby=False)
                        ons += 1
                    else:
                        continue
                    power_at[r.host] = t
                    decisions.append(Decision(t, r.action, r.host))
            if balancer == "drs":
                hist = DrsHistory(recent={v: (t - a) * INTERVAL_S for v, a in moved_at.items()})
                dplan = balance(snap, drs_s, estimate, hist, spread)
                for r in dplan.recommendations:
                    decisions.append(Decision(t, "move", r.vm_id, r.source, r.target))
                    moved_at[r.vm_id] = t
                migrations += len(dplan.recommendations)
                snap = apply_plan(snap, dplan)
            elif balancer == "greedy":
                mv = greedy_move(snap, observed)
                if mv is not None:
                    vid, src, dst = mv
                    decisions.append(Decision(t, "move", vid, src, dst))
                    moved_at[vid] = t
                    migrations += 1
                    snap = _move(snap, {vid: dst})
            if dpm or balancer != "none":
                pass_s.append(time.perf_counter() - t0)
        # 2. measure interval t on its true demand.
        load, cap, usable, _ = _loads(snap, truth_all[t])
        x = load[usable] / cap[usable]
        imb[t] = _imbalance(x)
        if x.shape[0]:
            cpu_std[t], mem_std[t] = float(x[:, 0].std()), float(x[:, 1].std())
        over_now = int((load[usable] > cap[usable] + 1e-6).any(axis=1).sum())
        overloaded += over_now
        if t == 0:
            at_start = over_now
        on_count += int(usable.sum()) + len(booting)
    caps = np.array([(h.cpu_mhz - h.reserved_cpu_mhz - h.used_cpu_mhz, h.memory_mib - h.reserved_memory_mib - h.used_memory_mib) for h in scenario.snapshot.hosts], dtype=float)
    bound = int(host_bound(truth_all.sum(axis=1), caps, dpm_s.high, dpm_s.ha_hosts).sum())
    return ReplayResult(
        balancer, dpm, drs_s.threshold, imb, overloaded, on_count, migrations, offs, ons, pass_s, decisions, len(snap.hosts), len(snap.vms), cpu_std, mem_std, bound, at_start if T else 0
    )


def run(
    trace: str | os.PathLike | Trace, hosts: int, vms: int, threshold: int = 3, load: float = 0.7, balancer: str = "drs", dpm: bool = False, seed: int = 1, intervals: int | None = None
) -> ReplayResult:
    """What ``vcenter sim drs`` runs: read (or take) the trace, build the scenario, replay it."""
    tr = trace if isinstance(trace, Trace) else read_trace(trace)
    DrsSettings(threshold=threshold)  # validate before the work
    return replay(build_scenario(tr, hosts, vms, load, seed, intervals), balancer, threshold, dpm)


# -- time of one pass at scale ---------------------------------------------------------------


def skewed_pass_time(trace: Trace, hosts: int, vms: int, seed: int = 1, repeat: int = 3) -> tuple[float, int]:
    """Best-of-``repeat`` seconds of one DRS pass on a deliberately skewed start (a third of the
    VMs crowd the first quarter of the hosts; the budget is spent), demand from the trace at one
    interval, hosts of 48 cores and 1 TiB. Returns (seconds, moves)."""
    rnd = random.Random(f"virtcenter-trace-skew:{seed}")
    idx = draw_files(len(trace), vms, seed)
    sizes = draw_sizes(vms, seed)
    hs = tuple(HostSnapshot(f"h{i:03d}", cores=48, cpu_mhz=48 * CORE_MHZ, memory_mib=1024 * 1024, vcpu_ratio=VCPU_RATIO) for i in range(hosts))
    crowd = max(1, hosts // 4)
    vm_list = tuple(VmSnapshot(f"vm{k:05d}", vcpus=v, memory_mib=m, host=hs[k % crowd].id if k % 3 == 0 else hs[k % hosts].id) for k, (v, m) in enumerate(sizes))
    snap = ClusterSnapshot(hs, vm_list)
    steps = min(len(trace.series[i]) for i in idx)
    t = rnd.randrange(steps)
    demand = {vm.id: (float(trace.series[i][t, 0]) * vm.vcpus * CORE_MHZ, float(trace.series[i][t, 1]) * vm.memory_mib) for vm, i in zip(vm_list, idx)}
    best, moves = math.inf, 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        plan = balance(snap, DrsSettings(), demand)
        best = min(best, time.perf_counter() - t0)
        moves = len(plan.recommendations)
    return best, moves


def format_summary(s: dict) -> str:
    """The human-readable report of one replay."""
    lines = [
        f"replay: {s['vms']} VMs on {s['hosts']} hosts, {s['intervals']} intervals of 5 min; balancer {s['balancer']}"
        + (f" (threshold {s['threshold']})" if s["balancer"] == "drs" else "")
        + (", DPM on" if s["dpm"] else ""),
        f"  imbalance           mean {s['mean_imbalance']:.4f}   p95 {s['p95_imbalance']:.4f}",
        f"  overloaded          {s['overload_fraction']:.4f} of host-intervals ({s['overloaded_host_intervals']} of {s['host_intervals_on']})",
        f"  migrations          {s['migrations']}",
        f"  host-hours on       {s['host_hours_on']:.1f}" + (f"   (power-offs {s['power_offs']}, power-ons {s['power_ons']})" if s["dpm"] else ""),
        f"  engine pass         p50 {s['pass_seconds_p50'] * 1000:.1f} ms   max {s['pass_seconds_max'] * 1000:.1f} ms",
    ]
    return "\n".join(lines)


def scenario_header(scenario: Scenario) -> str:
    h = scenario.snapshot.hosts[0]
    cap = h.cpu_mhz - h.reserved_cpu_mhz
    return f"hosts: {len(scenario.snapshot.hosts)} x {cap / 1000:.1f} GHz usable ({h.cores} cores x {CORE_MHZ / 1000:.1f} GHz), {h.memory_mib / 1024:.0f} GiB; load {scenario.load}"


__all__: Sequence[str] = (
    "BALANCERS",
    "CORE_MHZ",
    "DEFAULT_TRACE",
    "DRS_SMOOTHING",
    "Decision",
    "INTERVAL_S",
    "MEM_COMMIT",
    "ReplayResult",
    "SIZE_MIX",
    "SUMMARY_KEYS",
    "Scenario",
    "Trace",
    "TraceError",
    "build_scenario",
    "draw_files",
    "draw_sizes",
    "format_summary",
    "greedy_move",
    "host_bound",
    "parse_series",
    "read_trace",
    "replay",
    "run",
    "scenario_header",
    "skewed_pass_time",
)
