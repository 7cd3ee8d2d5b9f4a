"""HA: which hosts are alive, which VMs to restart where and when, what admission allows,
which guests to reset. Pure functions over plain data; the caller (``vcenter ha``, the
scenario runner) owns the clock, Redis, the database and the hosts.

Vocabulary:
- monitor clock: the HA monitor's own monotonic clock, in seconds. Every time here is on it;
  agent clocks are never compared with it. A channel is "seen at" t when the monitor noticed,
  at t, that the channel advanced (a heartbeat key whose sequence changed, a datastore
  heartbeat file whose counter changed as a peer reported it).
- observing since: when the monitor started seeing (its own start or takeover, Redis healthy
  again). Silence counts only while the monitor could see: a channel's age is
  ``now - max(seen_at, observing_since)``, so neither a monitor outage nor a Redis outage ever
  ages a host.
- channels: the network channel (the host's heartbeat key in Redis, renewed every second) and
  the datastore channel (a heartbeat file per host on each shared datastore, renewed every
  second by the host, read by its peers). A host without a shared datastore has only the first.
- host health: ``connected`` (network channel fresh), ``isolated`` (network silent for the
  detection time, datastore channel fresh: the host is alive but cut off), ``failed`` (both
  silent for the detection time; a host without a datastore channel fails on the network one).
- freeze: the monitor declares nothing new and restarts nothing, and says why: Redis (its
  view of the network channel) is unhealthy, or most hosts fell silent at once (then the
  monitor's own network or Redis is the likelier culprit than a mass power loss).
- disk holder: the host that holds a VM's disks (a lease tied to the holder's datastore
  heartbeat, as QEMU's image locks / sanlock leases are tied to the holder's life). A VM is
  restarted only when its holder released it (the isolation response stopped it) or is
  declared failed (both channels silent: its leases lapsed).
- restart priority: high / medium / low / disabled (never restarted); restarts are decided
  together by the placement engine (``place_many``), higher priority first.
- retry: a VM that fits nowhere (or whose start failed) waits ``min(base * 2**(n-1), max)``
  seconds before try n+1; after ``max_attempts`` tries HA gives up on it (an Event says so).
- admission policy: ``host-failures`` (the cluster must absorb N host failures: the N largest
  hosts' capacity is held back), ``percentage`` (a share of CPU and memory held back),
  ``failover-hosts`` (dedicated hosts that take no VM except HA restarts: the host snapshot's
  ``failover`` flag, which placement's FailoverHostFilter and DRS honour and restart planning
  clears), ``disabled``.
  Resources are those placement checks: configured memory (no memory overcommit) and vCPUs
  against cores x vcpu_ratio. Aggregate capacity is checked, not bin packing: fragmentation can
  still leave a VM unplaced, which the restart retries report.
- VM monitoring: a powered-on VM whose guest heartbeat was seen at least once and then stays
  silent for the failure interval is reset, at most ``max_resets`` times per ``window_s``.
- isolation (agent side): a host is isolated when it could reach neither Redis nor any
  isolation address for the isolation delay. Redis alone being down is never isolation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from vcenter.domain.placement import ManyResult, place_many
from vcenter.domain.snapshot import CONNECTED, ClusterSnapshot, HostSnapshot, PendingReservation, VmSnapshot

NEVER = float("-inf")


class HostHealth(str, Enum):
    CONNECTED = "connected"
    ISOLATED = "isolated"
    FAILED = "failed"


class Priority(str, Enum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    DISABLED = "disabled"

    @property
    def rank(self) -> int:
        """placement's ``priority`` (higher decided first); disabled is never placed."""
        return {"high": 3, "medium": 2, "low": 1, "disabled": 0}[self.value]


class IsolationResponse(str, Enum):
    LEAVE_ON = "leave-powered-on"
    POWER_OFF = "power-off"
    SHUTDOWN = "shutdown"


class AdmissionKind(str, Enum):
    DISABLED = "disabled"
    HOST_FAILURES = "host-failures"
    PERCENTAGE = "percentage"
    FAILOVER_HOSTS = "failover-hosts"


# -- detection -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DetectionSettings:
    detection_s: float = 5.0
    mass_silence_fraction: float = 0.5  # more than this share of the live hosts silent at once
    mass_silence_min: int = 2  # and at least this many: one silent host is never "mass"
    # With stamps: a host is isolated (alive) only if it wrote a datastore heartbeat this much
    # later (its own clock) than its last network heartbeat the monitor saw; None: half the
    # detection time (above the monitor's read lag, below the datastore channel's delivery lag).
    stamp_margin_s: float | None = None

    @property
    def stamp_margin(self) -> float:
        return self.detection_s / 2 if self.stamp_margin_s is None else self.stamp_margin_s

    def __post_init__(self) -> None:
        if self.detection_s <= 0:
            raise ValueError("detection time must be > 0")
        if not 0 < self.mass_silence_fraction < 1:
            raise ValueError("mass_silence_fraction must be in (0, 1)")


@dataclass(frozen=True, slots=True)
class HostObservation:
    host_id: str
    net_seen_at: float | None  # None: never seen since the monitor started observing
    ds_seen_at: float | None = None
    has_datastore_channel: bool = False
    monitored: bool = True  # False: maintenance, standby, operator-disconnected: not judged
    # The host's own clock in its last network heartbeat seen and its last datastore heartbeat
    # seen (both written by the same host, so comparable with each other, never with ours).
    net_stamp: float | None = None
    ds_stamp: float | None = None

    def alive_after_network(self, margin: float) -> bool:
        """Did the host write a datastore heartbeat after its network went silent? (Without
        stamps: assumed, the ages alone decide.) The datastore channel is seen later than the
        network one (files, peers, Redis), so a host that just died may still look fresh there;
        its own clock tells that it wrote nothing after its last network heartbeat."""
        if self.net_stamp is None or self.ds_stamp is None:
            return True
        return self.ds_stamp > self.net_stamp + margin


@dataclass(frozen=True, slots=True)
class MonitorView:
    now: float
    observing_since: float
    redis_ok: bool = True
    redis_error: str = ""


@dataclass(frozen=True, slots=True)
class Transition:
    host_id: str
    before: HostHealth
    after: HostHealth
    reason: str
    evidence: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Judgement:
    health: dict[str, HostHealth]
    transitions: tuple[Transition, ...]
    frozen: str | None  # why nothing new is declared and nothing restarts; None: acting
    evidence: dict[str, dict[str, Any]]  # per host: channel ages


def _age(seen: float | None, view: MonitorView, clamp: bool = True) -> float:
    if not clamp:
        return float("inf") if seen is None else view.now - seen
    return view.now - max(NEVER if seen is None else seen, view.observing_since)


def _r(x: float) -> float | None:
    return None if x == float("inf") else round(x, 3)


def _s(x: float | None) -> str:
    return "never seen" if x is None else f"{x:.1f} s"


def judge(prev: Mapping[str, HostHealth], observations: Sequence[HostObservation], view: MonitorView, settings: DetectionSettings = DetectionSettings()) -> Judgement:
    """One pass of the monitor: every monitored host's health, the transitions with evidence,
    and a freeze with its reason. Hosts not monitored keep no health (they are dropped)."""
    d = settings.detection_s
    evidence: dict[str, dict[str, Any]] = {}
    if not view.redis_ok:
        health = {o.host_id: prev.get(o.host_id, HostHealth.CONNECTED) for o in observations if o.monitored}
        why = "Redis unhealthy" + (f" ({view.redis_error})" if view.redis_error else "") + ": the network channel cannot be read"
        return Judgement(health, (), why, evidence)
    proposed: dict[str, HostHealth] = {}
    for o in observations:
        if not o.monitored:
            continue
        declared = prev.get(o.host_id, HostHealth.CONNECTED) != HostHealth.CONNECTED
        # A declared host returns (to isolated or connected) only on a fresh sighting of a
        # channel: a monitor that just took over, or Redis back, has not "seen it again" merely
        # because its own silence window restarted. So its ages are not clamped.
        net = _age(o.net_seen_at, view, clamp=not declared)
        ds = _age(o.ds_seen_at, view, clamp=not declared) if o.has_datastore_channel else None
        evidence[o.host_id] = {"network_age_s": _r(net), "datastore_age_s": None if ds is None else _r(ds), "detection_s": d}
        if o.net_stamp is not None and o.ds_stamp is not None:
            evidence[o.host_id]["datastore_after_network_s"] = round(o.ds_stamp - o.net_stamp, 3)
        if net <= d:
            proposed[o.host_id] = HostHealth.CONNECTED
        elif ds is not None and ds <= d and o.alive_after_network(settings.stamp_margin):
            proposed[o.host_id] = HostHealth.ISOLATED
        else:
            proposed[o.host_id] = HostHealth.FAILED
    live = [h for h in proposed if prev.get(h, HostHealth.CONNECTED) != HostHealth.FAILED]
    newly = sorted(h for h in live if prev.get(h, HostHealth.CONNECTED) == HostHealth.CONNECTED and proposed[h] != HostHealth.CONNECTED)
    frozen = None
    if len(newly) >= settings.mass_silence_min and len(newly) > settings.mass_silence_fraction * len(live):
        frozen = f"{len(newly)} of {len(live)} live hosts fell silent at once ({', '.join(newly)}): the monitor's own network or Redis is more likely at fault than a mass failure"
        for h in newly:
            proposed[h] = HostHealth.CONNECTED  # judged again when the silence is no longer "most"
    transitions = []
    for h, after in proposed.items():
        before = prev.get(h, HostHealth.CONNECTED)
        if after == before:
            continue
        e = evidence[h]
        if after == HostHealth.CONNECTED:
            reason = f"network heartbeat seen again ({_s(e['network_age_s'])} old)"
        elif after == HostHealth.ISOLATED:
            reason = f"network heartbeat silent for {_s(e['network_age_s'])} (> {d:g} s) while the datastore heartbeat goes on ({_s(e['datastore_age_s'])} old): isolated, not failed"
        else:
            ds_part = (
                "no datastore heartbeat channel"
                if "datastore_age_s" not in e or not any(o.has_datastore_channel for o in observations if o.host_id == h)
                else f"datastore heartbeat silent for {_s(e['datastore_age_s'])}"
                if (e["datastore_age_s"] or 0) > d or e["datastore_age_s"] is None
                else f"no datastore heartbeat written after its last network heartbeat ({e.get('datastore_after_network_s')} s)"
            )
            reason = f"network heartbeat silent for {_s(e['network_age_s'])} and {ds_part} (> {d:g} s): failed"
        transitions.append(Transition(h, before, after, reason, dict(e)))
    return Judgement(proposed, tuple(transitions), frozen, evidence)


# -- restarts --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RestartSettings:
    retry_base_s: float = 2.0
    retry_max_s: float = 60.0
    max_attempts: int = 5

    def backoff(self, attempts: int) -> float:
        """Wait after the ``attempts``-th failed try (1-based)."""
        return min(self.retry_base_s * float(2 ** max(0, attempts - 1)), self.retry_max_s)


@dataclass(frozen=True, slots=True)
class RestartCandidate:
    vm: VmSnapshot  # host None: not running anywhere
    priority: Priority
    from_host: str  # where it ran
    holder: str | None  # host holding its disks; None: released
    attempts: int = 0  # failed tries so far
    next_try_at: float | None = None
    # why it runs nowhere: "failed" (its host declared failed), "released" (the isolation
    # response of its host stopped it and released its disks: acted on once the monitor sees
    # that host isolated or failed), "fenced" (its host lost its datastores and killed it: that
    # host is not a target), "crashed" (it stopped unexpectedly: its QEMU process died, or its
    # host, rebooted, reports it not running: restart_after_stop),
    # "stopped" (its host, reachable again, reports it stopped by the isolation response)
    cause: str = "failed"


@dataclass(frozen=True, slots=True)
class Start:
    vm_id: str
    host_id: str
    attempt: int
    reason: str


@dataclass(frozen=True, slots=True)
class Wait:
    vm_id: str
    until: float | None  # None: until something changes (a holder, a freeze, a woken host)
    attempts: int
    reason: str


@dataclass(frozen=True, slots=True)
class RestartPlan:
    starts: tuple[Start, ...] = ()
    waits: tuple[Wait, ...] = ()
    gave_up: tuple[Wait, ...] = ()
    skipped: tuple[Wait, ...] = ()  # restart priority disabled
    wake: tuple[str, ...] = ()  # standby hosts to power on
    placement: ManyResult | None = None

    def reason_for(self, vm_id: str) -> str | None:
        for group in (self.starts, self.waits, self.gave_up, self.skipped):
            for item in group:
                if item.vm_id == vm_id:
                    return item.reason
        return None


def may_restart(c: RestartCandidate, health: Mapping[str, HostHealth]) -> str | None:
    """None when the VM's disks are free to take; otherwise why not (the no-split-brain rule)."""
    if c.cause == "released" and health.get(c.from_host, HostHealth.CONNECTED) == HostHealth.CONNECTED:
        return f"released by {c.from_host}, which the monitor does not see isolated yet"
    if c.holder is None:
        return None
    if health.get(c.holder) == HostHealth.FAILED:
        return None
    state = health.get(c.holder, HostHealth.CONNECTED).value
    return f"disks held by {c.holder} ({state}): not released, holder not declared failed"


def _with_pending(snap: ClusterSnapshot, placed: Mapping[str, str], vms: Mapping[str, VmSnapshot]) -> ClusterSnapshot:
    extra = tuple(PendingReservation(v, h, vms[v].memory_mib, vms[v].vcpus, vms[v].cpu_reservation_mhz) for v, h in placed.items())
    return replace(snap, pending=snap.pending + extra)


def plan_restarts(
    snapshot: ClusterSnapshot,
    candidates: Sequence[RestartCandidate],
    health: Mapping[str, HostHealth],
    now: float,
    settings: RestartSettings = RestartSettings(),
    *,
    frozen: str | None = None,
    failover_hosts: Iterable[str] = (),
) -> RestartPlan:
    """Which candidates start where now; the others wait (with when and why) or are given up.

    Placement is one batch (``place_many``): higher restart priority first, each decision
    consuming capacity for the next; dedicated failover hosts are tried first. Hosts in
    standby are not placed on, but when VMs fit nowhere, the standby hosts that would take
    them are returned in ``wake`` (DPM's power drivers wake them; the VMs wait for them).
    """
    starts: list[Start] = []
    waits: list[Wait] = []
    gave_up: list[Wait] = []
    skipped: list[Wait] = []
    ready: list[RestartCandidate] = []
    for c in sorted(candidates, key=lambda c: (-c.priority.rank, c.vm.id)):
        if c.priority == Priority.DISABLED:
            skipped.append(Wait(c.vm.id, None, c.attempts, "restart priority disabled"))
        elif frozen:
            waits.append(Wait(c.vm.id, None, c.attempts, f"HA frozen: {frozen}"))
        elif (why := may_restart(c, health)) is not None:
            waits.append(Wait(c.vm.id, None, c.attempts, why))
        elif c.next_try_at is not None and c.next_try_at > now:
            waits.append(Wait(c.vm.id, c.next_try_at, c.attempts, f"retry {c.attempts + 1} at t={c.next_try_at:g}"))
        else:
            ready.append(c)
    if not ready:
        return RestartPlan((), tuple(waits), (), tuple(skipped))
    # Dedicated failover hosts exist for exactly these placements: placement's
    # FailoverHostFilter keeps everything else off them.
    snapshot = with_failover_flags(snapshot, ())
    by_id = {c.vm.id: c for c in ready}
    vms = {c.vm.id: replace(c.vm, host=None, priority=c.priority.rank) for c in ready}
    failover = [h for h in failover_hosts if any(x.id == h for x in snapshot.hosts)]
    placed: dict[str, str] = {}
    if failover:
        only_failover = {h.id: "not a failover host (failover hosts first)" for h in snapshot.hosts if h.id not in failover}
        first = place_many(snapshot, list(vms.values()), exclude=only_failover)
        placed.update(first.placed)
    rest = [v for k, v in vms.items() if k not in placed]
    fenced = {c.from_host: "lost its datastores (killed the VM)" for c in ready if c.cause == "fenced"}
    result = place_many(_with_pending(snapshot, placed, vms), rest, exclude=fenced) if rest else ManyResult(())
    placed.update(result.placed)
    unplaced = [vms[k] for k in result.unplaced]
    wake: list[str] = []
    woken_for: dict[str, str] = {}
    standby = [h for h in snapshot.hosts if h.standby and not h.maintenance]
    if unplaced and standby:
        awake = replace(snapshot, hosts=tuple(replace(h, standby=False, connection=CONNECTED) if h.standby else h for h in snapshot.hosts))
        others = {h.id: "not in standby" for h in snapshot.hosts if not h.standby}
        trial = place_many(_with_pending(awake, placed, vms), unplaced, exclude=others)
        for vid, h in trial.placed.items():
            woken_for[vid] = h
            if h not in wake:
                wake.append(h)
    for vid in [v.id for v in sorted(vms.values(), key=lambda v: (-v.priority, v.id))]:
        c = by_id[vid]
        if vid in placed:
            why = {
                "failed": f"{c.from_host} failed",
                "released": f"{c.from_host} isolated, released it",
                "fenced": f"{c.from_host} lost its datastores",
                "crashed": f"stopped unexpectedly on {c.from_host}",
                "stopped": f"{c.from_host} stopped it (isolation response)",
            }.get(c.cause, c.cause)
            if c.cause != "failed" and health.get(c.from_host) == HostHealth.FAILED:
                why = f"{c.from_host} failed"
            why += f"; restart priority {c.priority.value}"
            starts.append(Start(vid, placed[vid], c.attempts + 1, why))
        elif vid in woken_for:
            waits.append(Wait(vid, None, c.attempts, f"waiting for standby host {woken_for[vid]} to power on"))
        else:
            n = c.attempts + 1
            why = result.unplaced.get(vid, "no host fits")
            if n >= settings.max_attempts:
                gave_up.append(Wait(vid, None, n, f"gave up after {n} tries: {why}"))
            else:
                until = now + settings.backoff(n)
                waits.append(Wait(vid, until, n, f"try {n} failed, retry at t={until:g}: {why}"))
    return RestartPlan(tuple(starts), tuple(waits), tuple(gave_up), tuple(skipped), tuple(wake), result)


# -- unexpected stops --------------------------------------------------------------------------

# The stop reasons that mean nobody asked: QEMU died ("crashed", a libvirt lifecycle event), or
# a host report found the VM shut off while the inventory had it running and no lifecycle
# event had said so ("unobserved": it stopped while no agent watched, e.g. its host rebooted).
# A user's Task, a guest shutdown ("shutdown"), a destroy from outside ("destroyed") or a
# suspend ("saved") are asked for: never restarted.
UNEXPECTED_STOPS = frozenset({"crashed", "unobserved"})


@dataclass(frozen=True, slots=True)
class StoppedVm:
    """A VM found stopped without anyone asking, as the store recorded it, with what the
    inventory says of it now (when the monitor handles the fact)."""

    vm_id: str
    host: str | None  # where it stopped (its host in the inventory)
    reason: str  # the recorded stop reason (UNEXPECTED_STOPS)
    power_state: str  # now
    ha_enabled: bool  # its cluster has HA on
    restart_pending: bool  # HA already has it (an ha_restart row: failed, released, stopped...)
    busy: bool = False  # a Task holds it (a migration, a user's power operation)


def restart_after_stop(s: StoppedVm) -> str | None:
    """None when HA restarts the VM (cause "crashed": it stopped unexpectedly); otherwise why not.
    vSphere HA restarts a protected VM that stopped unexpectedly, never one someone stopped."""
    if s.reason not in UNEXPECTED_STOPS:
        return f"stopped on purpose ({s.reason})"
    if not s.ha_enabled:
        return "its cluster has no HA"
    if s.restart_pending:
        return "HA already restarts it"
    if s.busy:
        return "a task holds it"
    if s.power_state != "poweredOff":
        return f"it is {s.power_state} now"
    if s.host is None:
        return "it has no host"
    return None


def after_failed_start(c: RestartCandidate, now: float, settings: RestartSettings = RestartSettings()) -> tuple[int, float | None]:
    """A restart Task ended in error: (attempts, next try time), next None when HA gives up."""
    n = c.attempts + 1
    return (n, None) if n >= settings.max_attempts else (n, now + settings.backoff(n))


def fence_ok(token: int, highest_seen: int) -> bool:
    """Fencing: an HA action is accepted only with the highest lock token seen so far, so a
    monitor that lost its lock (paused, partitioned) and comes back can no longer act."""
    return token >= highest_seen


# -- reconciliation --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reconciled:
    vm_id: str
    verdict: str  # ok | moved | stopped | unknown | duplicate | restart
    hosts: tuple[str, ...]
    reason: str


def reconcile(desired: Mapping[str, str | None], actual: Mapping[str, Iterable[str]], known_hosts: Iterable[str], health: Mapping[str, HostHealth]) -> list[Reconciled]:
    """After an outage of the monitor: what each protected VM really does before any restart.

    ``desired``: VM -> the host the inventory says it runs on (None: it should run, no host).
    ``actual``: VM -> hosts whose fresh report (made after the monitor came back) lists it running.
    ``known_hosts``: hosts with such a fresh report. A VM is a restart candidate only when it runs
    nowhere and its recorded host is declared failed (or it has none); a VM whose host has not
    reported yet is ``unknown`` (not restarted); a VM on two hosts is ``duplicate`` (never
    restarted, an alarm).
    """
    known = set(known_hosts)
    out = []
    for vm_id in sorted(desired):
        where = tuple(sorted(set(actual.get(vm_id, ()))))
        rec = desired[vm_id]
        if len(where) > 1:
            out.append(Reconciled(vm_id, "duplicate", where, f"runs on {len(where)} hosts"))
        elif len(where) == 1:
            if where[0] == rec:
                out.append(Reconciled(vm_id, "ok", where, f"runs on {rec} as recorded"))
            else:
                out.append(Reconciled(vm_id, "moved", where, f"runs on {where[0]}, recorded on {rec}"))
        elif rec is None or health.get(rec) == HostHealth.FAILED:
            out.append(Reconciled(vm_id, "restart", (), "runs nowhere and " + ("has no host" if rec is None else f"{rec} is declared failed")))
        elif rec in known:
            out.append(Reconciled(vm_id, "stopped", (), f"{rec} reports it not running (stopped while the monitor was away)"))
        else:
            out.append(Reconciled(vm_id, "unknown", (), f"{rec} has not reported since the monitor came back"))
    return out


# -- admission control -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdmissionPolicy:
    kind: AdmissionKind = AdmissionKind.HOST_FAILURES
    host_failures: int = 1
    cpu_percent: float = 25.0
    memory_percent: float = 25.0
    failover_hosts: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.host_failures < 0:
            raise ValueError("host_failures must be >= 0")
        for p in (self.cpu_percent, self.memory_percent):
            if not 0 <= p <= 100:
                raise ValueError("percentages must be in 0..100")


@dataclass(frozen=True, slots=True)
class FailoverCapacity:
    policy: str
    hosts: int
    total_memory_mib: float
    total_vcpus: float
    used_memory_mib: float
    used_vcpus: float
    reserved_memory_mib: float  # held back for failover by the policy
    reserved_vcpus: float
    tolerated_host_failures: int  # how many of the largest hosts could fail now with every VM restarted (aggregate)
    free_memory_percent: float  # of the total, after use
    free_vcpu_percent: float
    ok: bool  # the policy holds now
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


@dataclass(frozen=True, slots=True)
class AdmissionDecision:
    ok: bool
    code: str | None
    reason: str
    capacity: FailoverCapacity


ADMISSION_CODE = "HA_ADMISSION_REFUSED"


def _active(h: HostSnapshot) -> bool:
    return h.connection == CONNECTED and not h.maintenance and not h.standby


def _cap(h: HostSnapshot) -> tuple[float, float]:
    return float(h.memory_mib - h.reserved_memory_mib - h.used_memory_mib), float(h.cores * h.vcpu_ratio)


def _use(vms: Iterable[VmSnapshot], hosts: set[str]) -> tuple[float, float]:
    mem = cpu = 0.0
    for v in vms:
        if v.host in hosts:
            mem += v.memory_mib
            cpu += v.vcpus
    return mem, cpu


def _tolerated(caps: list[tuple[float, float]], used: tuple[float, float], limit: int) -> int:
    """Largest k (<= limit) such that use fits after removing the k largest hosts per resource."""
    mems = sorted((c[0] for c in caps), reverse=True)
    cpus = sorted((c[1] for c in caps), reverse=True)
    k = 0
    while k < min(limit, len(caps)):
        if used[0] <= sum(mems[k + 1 :]) + 1e-6 and used[1] <= sum(cpus[k + 1 :]) + 1e-6:
            k += 1
        else:
            break
    return k


def failover_capacity(snapshot: ClusterSnapshot, policy: AdmissionPolicy, extra: Sequence[VmSnapshot] = ()) -> FailoverCapacity:
    """The cluster's failover capacity under ``policy`` (``extra``: VMs to count as running too,
    with their ``host`` set: a power-on or a migration being admitted)."""
    active = [h for h in snapshot.hosts if _active(h)]
    failover = policy.failover_hosts if policy.kind == AdmissionKind.FAILOVER_HOSTS else frozenset()
    normal = [h for h in active if h.id not in failover]
    spare = [h for h in active if h.id in failover]
    extra_ids = {v.id for v in extra}
    vms = [v for v in snapshot.vms if v.id not in extra_ids] + list(extra)
    caps = [_cap(h) for h in normal]
    tot = (sum(c[0] for c in caps), sum(c[1] for c in caps))
    used = _use(vms, {h.id for h in active})
    tolerated = _tolerated(caps, used, len(caps))
    kind = policy.kind
    res = (0.0, 0.0)
    ok, reason = True, "admission control disabled"
    if kind == AdmissionKind.HOST_FAILURES:
        n = policy.host_failures
        mems = sorted((c[0] for c in caps), reverse=True)
        cpus = sorted((c[1] for c in caps), reverse=True)
        res = (sum(mems[:n]), sum(cpus[:n]))
        ok = tolerated >= n and len(caps) > n
        reason = f"tolerates {tolerated} host failure(s), policy needs {n}" if len(caps) > n else f"{len(caps)} active host(s) cannot tolerate {n} failure(s)"
    elif kind == AdmissionKind.PERCENTAGE:
        res = (tot[0] * policy.memory_percent / 100, tot[1] * policy.cpu_percent / 100)
        free_m = tot[0] - used[0]
        free_c = tot[1] - used[1]
        ok = free_m + 1e-6 >= res[0] and free_c + 1e-6 >= res[1]
        reason = f"free memory {free_m:.0f} MiB (needs {res[0]:.0f} reserved), free vCPUs {free_c:.0f} (needs {res[1]:.0f} reserved)"
    elif kind == AdmissionKind.FAILOVER_HOSTS:
        spare_caps = [_cap(h) for h in spare]
        res = (sum(c[0] for c in spare_caps), sum(c[1] for c in spare_caps))
        on_spare = _use(vms, {h.id for h in spare})
        # how many of the fullest normal hosts the failover hosts absorb
        loads = sorted((_use(vms, {h.id}) for h in normal), reverse=True)
        k = 0
        acc = [0.0, 0.0]
        for m, c in loads:
            if acc[0] + m <= res[0] - on_spare[0] + 1e-6 and acc[1] + c <= res[1] - on_spare[1] + 1e-6:
                acc[0] += m
                acc[1] += c
                k += 1
            else:
                break
        tolerated = k
        ok = bool(spare) and on_spare == (0.0, 0.0) and k >= 1
        reason = f"{len(spare)} failover host(s) active, absorbing the {k} fullest host(s)" if spare else "no failover host is active"
    pm = 100.0 * (tot[0] - used[0]) / tot[0] if tot[0] else 0.0
    pc = 100.0 * (tot[1] - used[1]) / tot[1] if tot[1] else 0.0
    return FailoverCapacity(kind.value, len(active), tot[0], tot[1], used[0], used[1], res[0], res[1], tolerated, round(pm, 2), round(pc, 2), ok, reason)


def admit(snapshot: ClusterSnapshot, vm: VmSnapshot, target: str | None, policy: AdmissionPolicy, *, action: str = "power-on") -> AdmissionDecision:
    """May ``vm`` run on ``target`` (a power-on, or a migration when ``vm.host`` is set) under the
    policy? Refused with ``HA_ADMISSION_REFUSED`` when it would break it; a policy already broken
    refuses only what makes it worse (a migration within the cluster is judged on its target)."""
    before = failover_capacity(snapshot, policy)
    if policy.kind == AdmissionKind.DISABLED:
        return AdmissionDecision(True, None, "admission control disabled", before)
    if policy.kind == AdmissionKind.FAILOVER_HOSTS and target in policy.failover_hosts:
        return AdmissionDecision(False, ADMISSION_CODE, f"{target} is a dedicated failover host: only HA restarts run there", before)
    moving_within = vm.host is not None and any(h.id == vm.host and _active(h) for h in snapshot.hosts)
    if moving_within:
        return AdmissionDecision(True, None, "a migration within the cluster does not change its failover capacity", before)
    host = target or next((h.id for h in snapshot.hosts if _active(h) and h.id not in policy.failover_hosts), None)
    after = failover_capacity(snapshot, policy, [replace(vm, host=host)])
    if after.ok:
        return AdmissionDecision(True, None, f"{action} keeps the policy: {after.reason}", after)
    return AdmissionDecision(False, ADMISSION_CODE, f"{action} of {vm.label} would break the HA admission policy ({policy.kind.value}): {after.reason}", after)


def reserved_hosts(policy: AdmissionPolicy) -> frozenset[str]:
    """Hosts placement must not use for anything but HA restarts."""
    return policy.failover_hosts if policy.kind == AdmissionKind.FAILOVER_HOSTS else frozenset()


def with_failover_flags(snapshot: ClusterSnapshot, reserved: Iterable[str]) -> ClusterSnapshot:
    """``snapshot`` whose hosts carry ``failover`` exactly for ``reserved`` (placement's
    FailoverHostFilter and DRS keep them empty); an empty ``reserved`` clears every flag (HA's
    own restart placement)."""
    keep = frozenset(reserved)
    if all(h.failover == (h.id in keep) for h in snapshot.hosts):
        return snapshot
    return replace(snapshot, hosts=tuple(replace(h, failover=h.id in keep) for h in snapshot.hosts))


def ha_reserve_fraction(snapshot: ClusterSnapshot, policy: AdmissionPolicy) -> float:
    """The per-host fraction DRS/DPM keep free (their ``HaReserve``) so the policy holds."""
    cap = failover_capacity(snapshot, policy)
    if policy.kind == AdmissionKind.PERCENTAGE:
        return max(policy.cpu_percent, policy.memory_percent) / 100.0
    if policy.kind == AdmissionKind.HOST_FAILURES and cap.total_memory_mib > 0:
        return min(1.0, max(cap.reserved_memory_mib / cap.total_memory_mib, cap.reserved_vcpus / max(cap.total_vcpus, 1)))
    return 0.0


# -- VM monitoring ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VmMonitoringSettings:
    enabled: bool = True
    failure_interval_s: float = 30.0
    min_uptime_s: float = 30.0  # a freshly started guest gets this long before it is judged
    max_resets: int = 3
    window_s: float = 3600.0


@dataclass(frozen=True, slots=True)
class VmWatch:
    vm_id: str
    powered_on: bool
    host_connected: bool
    started_at: float | None  # monitor clock: when the monitor saw it start (or first saw it running)
    heartbeat_seen_at: float | None  # when the guest heartbeat was last seen advancing
    resets: tuple[float, ...] = ()  # monitor clock of past resets by VM monitoring


@dataclass(frozen=True, slots=True)
class VmVerdict:
    vm_id: str
    action: str  # none | reset | limit
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


def watch_vm(w: VmWatch, now: float, observing_since: float, s: VmMonitoringSettings = VmMonitoringSettings()) -> VmVerdict:
    if not s.enabled:
        return VmVerdict(w.vm_id, "none", "VM monitoring disabled")
    if not w.powered_on or not w.host_connected:
        return VmVerdict(w.vm_id, "none", "not powered on on a connected host")
    if w.heartbeat_seen_at is None:
        return VmVerdict(w.vm_id, "none", "no guest heartbeat seen yet: not monitored")
    last_reset = max(w.resets, default=NEVER)
    start = max(NEVER if w.started_at is None else w.started_at, last_reset)
    if now - start < s.min_uptime_s:
        return VmVerdict(w.vm_id, "none", f"up {now - start:.1f} s (< {s.min_uptime_s:g} s)")
    age = now - max(w.heartbeat_seen_at, observing_since, start)
    if age <= s.failure_interval_s:
        return VmVerdict(w.vm_id, "none", f"guest heartbeat {age:.1f} s old")
    recent = [t for t in w.resets if now - t < s.window_s]
    ev = {"heartbeat_age_s": _r(age), "failure_interval_s": s.failure_interval_s, "resets_in_window": len(recent), "max_resets": s.max_resets, "window_s": s.window_s}
    if len(recent) >= s.max_resets:
        return VmVerdict(w.vm_id, "limit", f"guest heartbeat silent {age:.1f} s, but {len(recent)} resets in the last {s.window_s:g} s (max {s.max_resets}): not reset", ev)
    return VmVerdict(w.vm_id, "reset", f"guest heartbeat silent for {age:.1f} s (> {s.failure_interval_s:g} s): reset {len(recent) + 1} of {s.max_resets} in the window", ev)


# -- isolation (agent side) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IsolationView:
    now: float  # the agent's monotonic clock
    since: float  # the agent started watching
    redis_ok_at: float | None  # last successful Redis round trip
    probe_ok_at: float | None  # last time any isolation address answered a TCP probe


def isolated(v: IsolationView, delay_s: float) -> tuple[bool, str]:
    """Isolated only when neither Redis nor any isolation address answered for ``delay_s``:
    a Redis restart alone (the gateway and the peers still answer) never isolates a host."""
    r = v.now - max(NEVER if v.redis_ok_at is None else v.redis_ok_at, v.since)
    p = v.now - max(NEVER if v.probe_ok_at is None else v.probe_ok_at, v.since)
    if r <= delay_s:
        return False, f"Redis answered {r:.1f} s ago"
    if p <= delay_s:
        return False, f"Redis silent {r:.1f} s but an isolation address answered {p:.1f} s ago"
    return True, f"Redis silent {r:.1f} s and no isolation address answered for {p:.1f} s (> {delay_s:g} s)"


def isolation_actions(response: IsolationResponse, running: Sequence[str]) -> list[tuple[str, str]]:
    """What an isolated host does to each running VM: (vm, action) with action stop|shutdown."""
    if response == IsolationResponse.LEAVE_ON:
        return []
    act = "stop" if response == IsolationResponse.POWER_OFF else "shutdown"
    return [(v, act) for v in sorted(running)]


def priority_of(value: str | None, default: Priority = Priority.MEDIUM) -> Priority:
    return Priority(value) if value else default
