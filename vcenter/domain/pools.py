"""Resource pools with vCenter's meaning: admission control and entitlements.

Vocabulary (per resource: CPU in MHz, memory in MiB):
- reservation: the amount guaranteed to a pool or VM. A VM powers on only if its reservation
  can be guaranteed ("admission control"); a pool's reservation is taken from its parent when
  the pool is created, whatever its VMs use.
- limit: the most a pool or VM may ever get (None: unlimited). A pool's reserved total (its own
  reservation or what its children hold, whichever is more) never exceeds its limit.
- shares: relative weight among siblings when they compete. vCenter's levels: low / normal /
  high = 1 : 2 : 4 (``pool_shares``, ``vm_shares``); custom values are plain numbers.
- expandable reservation: a pool whose children need more than its own reservation may borrow
  the difference from its parent (and so on upwards while pools are expandable).
- used (reserved by children) of a pool: the reservations of its running VMs plus, for every
  child pool, max(child reservation, child used). Unreserved = reservation - used.
- root: the cluster's implicit root pool (id ``ROOT``); its reservation is the cluster's
  capacity (usable hosts minus what the hypervisors keep), it is not expandable.
- entitlement: what a running VM should get now, given the capacity, the tree, and every VM's
  demand (``entitlements``). DRS balances entitlements, not configured sizes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from vcenter.domain.snapshot import Alloc, ClusterSnapshot, PoolNode, VmSnapshot

ROOT = "__root__"
RESOURCES = ("cpu", "mem")
UNITS = {"cpu": "MHz", "mem": "MiB"}
NAMES = {"cpu": "CPU", "mem": "memory"}
EPS = 1e-6

SHARE_LEVELS = {"low": 0.5, "normal": 1.0, "high": 2.0}
POOL_NORMAL_SHARES = {"cpu": 4000.0, "mem": 163840.0}
VM_NORMAL_CPU_SHARES_PER_VCPU = 1000.0
VM_NORMAL_MEM_SHARES_PER_MIB = 10.0


def _level(level: str) -> float:
    try:
        return SHARE_LEVELS[level]
    except KeyError:
        raise ValueError(f"unknown shares level {level!r} (low, normal, high or a number)") from None


def pool_shares(level: str | float, resource: str) -> float:
    """Shares of a pool for ``resource`` ('cpu' or 'mem'): a level name or a custom number."""
    if not isinstance(level, str):
        return float(level)
    return POOL_NORMAL_SHARES[resource] * _level(level)


def vm_shares(level: str | float, resource: str, vcpus: int, memory_mib: float) -> float:
    """Shares of a VM: 1000 per vCPU and 10 per MiB at 'normal' (vCenter's values)."""
    if not isinstance(level, str):
        return float(level)
    base = VM_NORMAL_CPU_SHARES_PER_VCPU * vcpus if resource == "cpu" else VM_NORMAL_MEM_SHARES_PER_MIB * memory_mib
    return base * _level(level)


@dataclass(frozen=True, slots=True)
class Amount:
    cpu_mhz: float = 0.0
    mem_mib: float = 0.0

    def get(self, resource: str) -> float:
        return self.cpu_mhz if resource == "cpu" else self.mem_mib


@dataclass(frozen=True, slots=True)
class Admission:
    ok: bool
    reason: str = ""
    pool: str | None = None  # the pool that refused (where the walk up stopped)


@dataclass(frozen=True, slots=True)
class VmAlloc:
    """A VM as the pool tree sees it. ``*_max`` is its configured size (vCPUs x core MHz, memory)."""

    id: str
    pool: str
    cpu: Alloc
    mem: Alloc
    cpu_max: float
    mem_max: float
    running: bool = True


def _num(x: float) -> str:
    return f"{x:.0f}" if abs(x - round(x)) < 1e-6 else f"{x:.1f}"


def vm_alloc(vm: VmSnapshot, core_mhz: float, running: bool | None = None) -> VmAlloc:
    cpu_shares = vm.cpu_shares if vm.cpu_shares is not None else vm_shares("normal", "cpu", vm.vcpus, vm.memory_mib)
    mem_shares = vm.memory_shares if vm.memory_shares is not None else vm_shares("normal", "mem", vm.vcpus, vm.memory_mib)
    return VmAlloc(
        id=vm.id,
        pool=vm.pool or ROOT,
        cpu=Alloc(vm.cpu_reservation_mhz, vm.cpu_limit_mhz, cpu_shares, False),
        mem=Alloc(float(vm.memory_reservation_mib), None if vm.memory_limit_mib is None else float(vm.memory_limit_mib), mem_shares, False),
        cpu_max=vm.vcpus * core_mhz,
        mem_max=float(vm.memory_mib),
        running=vm.host is not None if running is None else running,
    )


def cluster_capacity(snapshot: ClusterSnapshot) -> Amount:
    """What the root pool holds: usable hosts' capacity minus what is kept from VMs."""
    cpu = mem = 0.0
    for h in snapshot.hosts:
        if h.usable:
            cpu += h.cpu_mhz - h.reserved_cpu_mhz - h.used_cpu_mhz
            mem += h.memory_mib - h.reserved_memory_mib - h.used_memory_mib
    return Amount(cpu, mem)


class PoolTree:
    """A pool hierarchy with the reservations its running VMs hold; ``reserve`` updates it in place."""

    def __init__(self, pools: Iterable[PoolNode], capacity: Amount, vms: Iterable[VmAlloc] = ()) -> None:
        self.capacity = capacity
        root = PoolNode(ROOT, "cluster", None, Alloc(capacity.cpu_mhz, None, 1.0, False), Alloc(capacity.mem_mib, None, 1.0, False))
        self.nodes: dict[str, PoolNode] = {ROOT: root}
        self.parent: dict[str, str | None] = {ROOT: None}
        self.children: dict[str, list[str]] = {ROOT: []}
        for p in pools:
            self.nodes[p.id] = p
            self.children.setdefault(p.id, [])
        for p in pools:
            parent = p.parent if p.parent is not None else ROOT
            if parent not in self.nodes:
                raise ValueError(f"pool '{p.label}' has unknown parent '{parent}'")
            self.parent[p.id] = parent
            self.children[parent].append(p.id)
        self.vms: dict[str, list[VmAlloc]] = {pid: [] for pid in self.nodes}
        self.direct: dict[str, list[float]] = {pid: [0.0, 0.0] for pid in self.nodes}
        for vm in vms:
            if vm.pool not in self.nodes:
                raise ValueError(f"VM {vm.id} is in unknown pool '{vm.pool}'")
            self.vms[vm.pool].append(vm)
            if vm.running:
                self.direct[vm.pool][0] += vm.cpu.reservation
                self.direct[vm.pool][1] += vm.mem.reservation

    @classmethod
    def from_snapshot(cls, snapshot: ClusterSnapshot) -> "PoolTree":
        cores = [(h.cpu_mhz / h.cores) for h in snapshot.hosts if h.cores]
        core_mhz = max(cores) if cores else 0.0
        pending = {p.vm_id for p in snapshot.pending}
        vms = [vm_alloc(vm, core_mhz, vm.host is not None or vm.id in pending) for vm in snapshot.vms]
        return cls(snapshot.pools, cluster_capacity(snapshot), vms)

    # -- accounting ------------------------------------------------------------------------
    def alloc(self, pool: str, resource: str) -> Alloc:
        node = self.nodes[pool]
        return node.cpu if resource == "cpu" else node.mem

    def label(self, pool: str) -> str:
        return self.nodes[pool].label

    def used(self, pool: str, resource: str) -> float:
        """Reservation held below ``pool``: its running VMs' plus max(reservation, used) of each child pool."""
        k = 0 if resource == "cpu" else 1
        total = self.direct[pool][k]
        for child in self.children[pool]:
            total += max(self.alloc(child, resource).reservation, self.used(child, resource))
        return total

    def unreserved(self, pool: str) -> Amount:
        return Amount(*(self.alloc(pool, r).reservation - self.used(pool, r) for r in RESOURCES))

    def reserve(self, pool: str | None, amount: Amount) -> None:
        """Count a powered-on VM's reservation in ``pool`` (after a successful ``admit``)."""
        d = self.direct[pool or ROOT]
        d[0] += amount.cpu_mhz
        d[1] += amount.mem_mib

    def release(self, pool: str | None, amount: Amount) -> None:
        d = self.direct[pool or ROOT]
        d[0] -= amount.cpu_mhz
        d[1] -= amount.mem_mib

    # -- admission -------------------------------------------------------------------------
    def _refusal(self, pool: str, resource: str, x: float, path: list[str]) -> tuple[str, str] | None:
        a = self.alloc(pool, resource)
        used = self.used(pool, resource)
        unit = UNITS[resource]
        path = path + [self.label(pool)]
        if a.limit is not None and max(a.reservation, used + x) > a.limit + EPS:
            return pool, (f"pool '{self.label(pool)}' {NAMES[resource]} limit {_num(a.limit)} {unit} would be exceeded ({_num(used)} {unit} reserved + {_num(x)} {unit})")
        free = a.reservation - used
        if free >= x - EPS:
            return None
        if pool == ROOT or not a.expandable:
            what = "cluster capacity" if pool == ROOT else "reservation"
            tail = "" if pool == ROOT else ", not expandable"
            via = f" (reached through expandable {' -> '.join(path[:-1])})" if len(path) > 1 else ""
            return pool, (
                f"pool '{self.label(pool)}' short by {_num(x - max(free, 0.0))} {unit} {NAMES[resource]}: {what} {_num(a.reservation)} {unit}, {_num(used)} {unit} already reserved{tail}{via}"
            )
        growth = max(a.reservation, used + x) - max(a.reservation, used)
        parent = self.parent[pool]
        assert parent is not None
        return self._refusal(parent, resource, growth, path)

    def admit(self, pool: str | None, reservation: Amount) -> Admission:
        pool = pool or ROOT
        if pool not in self.nodes:
            return Admission(False, f"pool '{pool}' does not exist", pool)
        reasons: list[str] = []
        refusing: str | None = None
        for r in RESOURCES:
            x = reservation.get(r)
            if x <= 0:
                continue
            refusal = self._refusal(pool, r, x, [])
            if refusal is not None:
                refusing = refusing or refusal[0]
                reasons.append(f"{NAMES[r]} reservation {_num(x)} {UNITS[r]} cannot be met: {refusal[1]}")
        if reasons:
            return Admission(False, "; ".join(reasons), refusing)
        return Admission(True, "", None)


def admit(pool_tree: PoolTree, pool_id: str | None, vm_reservation: Amount | tuple[float, float]) -> Admission:
    """May a VM reserving ``vm_reservation`` (CPU MHz, memory MiB) power on in ``pool_id``?

    The pool's unreserved amount must cover it; an expandable pool borrows the shortfall from its
    parent, walking up while pools are expandable, until the root (the cluster's capacity). A
    limit on the way caps what a pool may hold. The refusal names the pool where it stopped and
    the numbers. Does not reserve: call ``pool_tree.reserve`` once the VM is really placed.
    """
    if not isinstance(vm_reservation, Amount):
        vm_reservation = Amount(*vm_reservation)
    return pool_tree.admit(pool_id, vm_reservation)


# -- entitlements ----------------------------------------------------------------------------


def water_fill(amount: float, floors: list[float], caps: list[float], shares: list[float]) -> list[float]:
    """Divide ``amount`` among siblings by shares, each kept within [floor, cap].

    Finds the water level L such that sum(clip(L * shares_i, floor_i, cap_i)) = amount (exact,
    over the sorted breakpoints floor_i/shares_i and cap_i/shares_i). When every cap fits, each
    gets its cap and the rest stays unallocated; when the floors alone exceed ``amount`` (a
    capacity loss after admission), floors are scaled down proportionally.
    """
    n = len(floors)
    if n == 0:
        return []
    caps = [max(c, f) for c, f in zip(caps, floors)]
    if sum(caps) <= amount + EPS:
        return caps
    total_floor = sum(floors)
    if total_floor >= amount - EPS:
        return [f * amount / total_floor for f in floors] if total_floor > 0 else [0.0] * n

    def at(level: float) -> list[float]:
        return [f if s <= 0 else min(c, max(f, level * s)) for f, c, s in zip(floors, caps, shares)]

    points = sorted({v for f, c, s in zip(floors, caps, shares) if s > 0 for v in (f / s, c / s)})
    lo = 0.0
    for hi in points:
        if sum(at(hi)) >= amount - EPS:
            base = sum(at(lo))
            slope = sum(s for f, c, s in zip(floors, caps, shares) if s > 0 and f <= lo * s + EPS and c >= hi * s - EPS)
            level = hi if slope <= 0 else lo + (amount - base) / slope
            return at(level)
        lo = hi
    return at(lo)


def entitlements(
    pool_tree: PoolTree,
    cluster_capacity: Amount | tuple[float, float] | None,
    vm_demands: Mapping[str, tuple[float, float]],
) -> dict[str, tuple[float, float]]:
    """Entitlement (CPU MHz, memory MiB) of every running VM of the tree.

    Algorithm (per resource, the "divvy" of vSphere's resource management, done as water-filling):
    1. bottom-up, each node gets a floor and a cap. A VM: floor = its reservation, cap =
       max(floor, min(limit, demand)) where demand defaults to its configured size and never
       exceeds it. A pool: floor = min(limit, max(reservation, sum of children's floors)),
       cap = min(limit, max(floor, sum of children's caps)).
    2. top-down, the root gets ``cluster_capacity`` (default: the tree's capacity) and every pool
       divides what it got among its children (child pools and VMs) with ``water_fill``: in
       proportion to shares, never below a floor nor above a cap. Capacity nobody demands stays
       unallocated.
    """
    if cluster_capacity is None:
        cap_amount = pool_tree.capacity
    elif isinstance(cluster_capacity, Amount):
        cap_amount = cluster_capacity
    else:
        cap_amount = Amount(*cluster_capacity)
    out: dict[str, list[float]] = {}
    for ri, r in enumerate(RESOURCES):
        floor: dict[str, float] = {}
        cap: dict[str, float] = {}

        def vm_key(vm: VmAlloc) -> str:
            return "vm:" + vm.id

        def bottom_up(pool: str) -> None:
            fsum = csum = 0.0
            for child in pool_tree.children[pool]:
                bottom_up(child)
                fsum += floor[child]
                csum += cap[child]
            for vm in pool_tree.vms[pool]:
                if not vm.running:
                    continue
                a = vm.cpu if r == "cpu" else vm.mem
                size = vm.cpu_max if r == "cpu" else vm.mem_max
                demand = vm_demands.get(vm.id, (vm.cpu_max, vm.mem_max))[ri]
                demand = min(demand, size)
                if a.limit is not None:
                    demand = min(demand, a.limit)
                k = vm_key(vm)
                floor[k] = a.reservation
                cap[k] = max(a.reservation, demand)
                fsum += floor[k]
                csum += cap[k]
            a = pool_tree.alloc(pool, r)
            lim = float("inf") if a.limit is None else a.limit
            floor[pool] = min(lim, max(a.reservation if pool != ROOT else 0.0, fsum))
            cap[pool] = min(lim, max(floor[pool], csum))

        def top_down(pool: str, amount: float) -> None:
            keys: list[str] = []
            shares: list[float] = []
            for child in pool_tree.children[pool]:
                keys.append(child)
                shares.append(pool_tree.alloc(child, r).shares)
            for vm in pool_tree.vms[pool]:
                if vm.running:
                    keys.append(vm_key(vm))
                    shares.append((vm.cpu if r == "cpu" else vm.mem).shares)
            got = water_fill(amount, [floor[k] for k in keys], [cap[k] for k in keys], shares)
            for k, g in zip(keys, got):
                if k.startswith("vm:"):
                    out.setdefault(k[3:], [0.0, 0.0])[ri] = g
                else:
                    top_down(k, g)

        bottom_up(ROOT)
        top_down(ROOT, cap_amount.get(r))
    return {vm: (v[0], v[1]) for vm, v in out.items()}
