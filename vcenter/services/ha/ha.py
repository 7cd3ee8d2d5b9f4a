"""HA use cases: configuration (per cluster, per-VM overrides), admission control on power-on
and migration, failover capacity, and the monitor's writes (declarations as Events with their
evidence, restarts as Tasks with their reason, VM-monitoring resets), each fenced by the
monitor's token.

Vocabulary (see vcenter.domain.ha for the decisions):
- configuration: ``cluster.settings["ha"]``, validated by ``vcenter.schemas.ha.HaConfig``;
  per-VM overrides live in it under ``vm_overrides`` {VM id: {restart_priority,
  isolation_response, vm_monitoring}}.
- restart Task: kind ``vm.ha_restart`` on the VM, sent to the target host as ``vm.ha_start``
  (define the domain there if absent, then start it: the disks are on shared datastores).
- fencing: every monitor write starts with ``fence(session, token)``; a token lower than the
  highest one seen raises HA_FENCED and the transaction rolls back, so a monitor that lost its
  lock and comes back cannot act.
- wall clock vs monitor clock: liveness is judged by the monitor on its monotonic clock (in
  the process); retry times and the reset window are stored as UTC times (they are schedules,
  not liveness).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from vcenter.core.clock import as_utc, utcnow
from vcenter.core.errors import Conflict, Invalid, VcError
from vcenter.db.ha_models import HaHostState, HaMonitor, HaRestart
from vcenter.db.models import Cluster, Event, Host, ObjectClaim, Task, VirtualMachine
from vcenter.db.snapshots import cluster_snapshot, vm_snapshot
from vcenter.domain import ha
from vcenter.domain.snapshot import ClusterSnapshot, PendingReservation
from vcenter.domain.states import TaskState
from vcenter.schemas.ha import HaConfig, HaConfigUpdate, VmHaOverride
from vcenter.messaging.commands import HaStartArgs, UuidArgs
from vcenter.services.inventory import inventory
from vcenter.services.inventory import host_power as power_service
from vcenter.services.tasks.events import record_event
from vcenter.services.ha.ha_manager import RestartRow, StaleToken
from vcenter.services.tasks.tasks import finish_task, start_task

RESTART_KIND = "vm.ha_restart"
RESET_KIND = "vm.ha_reset"


class Fenced(VcError, StaleToken):
    status = 409
    code = "HA_FENCED"


class AdmissionRefused(Conflict):
    code = ha.ADMISSION_CODE


# -- configuration ---------------------------------------------------------------------------


def config_of(cluster: Cluster) -> HaConfig:
    try:
        return HaConfig.model_validate((cluster.settings or {}).get("ha") or {})
    except ValidationError as exc:
        raise Invalid(f"cluster {cluster.name}: HA settings: {exc.errors()[0]['msg']}", code="INVALID_HA_SETTINGS") from exc


def get_config(session: Session, cluster_id: int) -> dict[str, Any]:
    return config_of(inventory.get(session, "cluster", cluster_id)).model_dump()


def _store(cluster: Cluster, cfg: HaConfig) -> None:
    cluster.settings = {**(cluster.settings or {}), "ha": cfg.model_dump()}


def update_config(session: Session, user: str, cluster_id: int, data: dict[str, Any]) -> dict[str, Any]:
    cluster: Cluster = inventory.get(session, "cluster", cluster_id)
    change = HaConfigUpdate.model_validate(data)
    current = config_of(cluster).model_dump()
    current.update(change.model_dump(exclude_unset=True))
    try:
        cfg = HaConfig.model_validate(current)
    except ValidationError as exc:
        raise Invalid(f"HA settings: {exc.errors()[0]['msg']}", code="INVALID_HA_SETTINGS") from exc
    for hid in cfg.admission.failover_hosts:
        host = session.get(Host, hid)
        if host is None or host.cluster_id != cluster_id:
            raise Invalid(f"admission.failover_hosts: host {hid} is not in cluster {cluster.name}", code="INVALID_REFERENCE", details={"field": "admission.failover_hosts"})
    if cfg.enabled and not config_of(cluster).enabled:
        # A stop from before HA protected these VMs is not HA's to handle (restart_after_stop
        # would find the cluster enabled by the time the monitor reads it).
        session.execute(
            update(VirtualMachine).where(VirtualMachine.cluster_id == cluster.id, VirtualMachine.unexpected_stop.is_not(None)).values(unexpected_stop=None).execution_options(synchronize_session=False)
        )
    _store(cluster, cfg)
    record_event(
        session,
        "cluster.ha.reconfigured",
        f"HA of cluster {cluster.name} reconfigured: " + ", ".join(sorted(change.model_dump(exclude_unset=True))),
        username=user,
        object_type="cluster",
        object_id=cluster.id,
        object_name=cluster.name,
        data={"ha": cfg.model_dump()},
    )
    return cfg.model_dump()


def vm_override(session: Session, vm_id: int) -> dict[str, Any]:
    vm: VirtualMachine = inventory.get(session, "vm", vm_id)
    if vm.cluster_id is None:
        return VmHaOverride().model_dump()
    cfg = config_of(session.get(Cluster, vm.cluster_id))
    return (cfg.vm_overrides.get(str(vm.id)) or VmHaOverride()).model_dump()


def set_vm_override(session: Session, user: str, vm_id: int, data: dict[str, Any]) -> dict[str, Any]:
    vm: VirtualMachine = inventory.get(session, "vm", vm_id)
    if vm.cluster_id is None:
        raise Invalid(f"VM {vm.name} is not in a cluster: HA settings are per cluster", code="VM_NOT_IN_CLUSTER")
    override = VmHaOverride.model_validate(data)
    cluster = session.get(Cluster, vm.cluster_id)
    cfg = config_of(cluster)
    overrides = dict(cfg.vm_overrides)
    if override == VmHaOverride():
        overrides.pop(str(vm.id), None)
    else:
        overrides[str(vm.id)] = override
    _store(cluster, cfg.model_copy(update={"vm_overrides": overrides}))
    record_event(
        session,
        "vm.ha.reconfigured",
        f"HA overrides of VM {vm.name}: {override.model_dump(exclude_none=True) or 'none (cluster defaults)'}",
        username=user,
        object_type="vm",
        object_id=vm.id,
        object_name=vm.name,
        data=override.model_dump(),
    )
    return override.model_dump()


def priority_of(cfg: HaConfig, vm_id: int) -> ha.Priority:
    o = cfg.vm_overrides.get(str(vm_id))
    return ha.Priority(o.restart_priority if o and o.restart_priority else cfg.default_priority)


def isolation_response_of(cfg: HaConfig, vm_id: int) -> ha.IsolationResponse:
    o = cfg.vm_overrides.get(str(vm_id))
    return ha.IsolationResponse(o.isolation_response if o and o.isolation_response else cfg.isolation_response)


def vm_monitored(cfg: HaConfig, vm_id: int) -> bool:
    o = cfg.vm_overrides.get(str(vm_id))
    return bool(o.vm_monitoring) if o and o.vm_monitoring is not None else cfg.vm_monitoring.enabled


def policy_of(cfg: HaConfig) -> ha.AdmissionPolicy:
    a = cfg.admission
    kind = ha.AdmissionKind(a.kind) if cfg.enabled else ha.AdmissionKind.DISABLED
    return ha.AdmissionPolicy(kind, a.host_failures, a.cpu_percent, a.memory_percent, frozenset(str(h) for h in a.failover_hosts))


def restart_settings(cfg: HaConfig) -> ha.RestartSettings:
    r = cfg.restart
    return ha.RestartSettings(r.retry_base_s, r.retry_max_s, r.max_attempts)


# -- admission control -----------------------------------------------------------------------


def capacity(session: Session, cluster_id: int) -> dict[str, Any]:
    cluster: Cluster = inventory.get(session, "cluster", cluster_id)
    cfg = config_of(cluster)
    cap = ha.failover_capacity(cluster_snapshot(session, cluster_id), policy_of(cfg))
    return {
        "enabled": cfg.enabled,
        **cap.to_dict(),
        "failover_hosts": cfg.admission.failover_hosts,
        "ha_reserve_fraction": ha.ha_reserve_fraction(cluster_snapshot(session, cluster_id), policy_of(cfg)),
    }


def _refuse(vm: VirtualMachine, user: str, decision: ha.AdmissionDecision, what: str) -> AdmissionRefused:
    return AdmissionRefused(
        decision.reason,
        details={"capacity": decision.capacity.to_dict()},
        audit={
            "kind": f"vm.{what}.refused",
            "message": f"{what} of VM {vm.name} refused by HA admission control: {decision.reason}",
            "username": user,
            "object_type": "vm",
            "object_id": vm.id,
            "object_name": vm.name,
            "reason": ha.ADMISSION_CODE,
        },
    )


def admit_power_on(session: Session, vm: VirtualMachine, user: str = "system") -> None:
    """Refuse (409 HA_ADMISSION_REFUSED) a power-on that would break the cluster's policy."""
    if vm.cluster_id is None:
        return
    cfg = config_of(session.get(Cluster, vm.cluster_id))
    policy = policy_of(cfg)
    if policy.kind == ha.AdmissionKind.DISABLED:
        return
    d = ha.admit(cluster_snapshot(session, vm.cluster_id), vm_snapshot(vm, None), str(vm.host_id) if vm.host_id else None, policy)
    if not d.ok:
        raise _refuse(vm, user, d, "powerOn")


def admit_migration(session: Session, vm: VirtualMachine, target_id: int, user: str = "system", snapshot: ClusterSnapshot | None = None) -> None:
    """Refuse a VMotion that would leave too little failover capacity; ``snapshot``: the
    cluster as the caller already read it for this request (read here otherwise)."""
    if vm.cluster_id is None:
        return
    cfg = config_of(session.get(Cluster, vm.cluster_id))
    policy = policy_of(cfg)
    if policy.kind == ha.AdmissionKind.DISABLED:
        return
    cluster = snapshot if snapshot is not None else cluster_snapshot(session, vm.cluster_id)
    d = ha.admit(cluster, vm_snapshot(vm, vm.host_id), str(target_id), policy, action="migration")
    if not d.ok:
        raise _refuse(vm, user, d, "migrate")


# -- status ----------------------------------------------------------------------------------


def status(session: Session, cluster_id: int) -> dict[str, Any]:
    cluster: Cluster = inventory.get(session, "cluster", cluster_id)
    hosts = list(session.scalars(select(Host).where(Host.cluster_id == cluster_id).order_by(Host.id)))
    states = {s.host_id: s for s in session.scalars(select(HaHostState).where(HaHostState.host_id.in_([h.id for h in hosts])))}
    vm_ids = list(session.scalars(select(VirtualMachine.id).where(VirtualMachine.cluster_id == cluster_id)))
    restarts = list(session.scalars(select(HaRestart).where(HaRestart.vm_id.in_(vm_ids)).order_by(HaRestart.vm_id)))
    mon = session.get(HaMonitor, 1)
    return {
        "enabled": config_of(cluster).enabled,
        "monitor": {"token": mon.token if mon else 0, "owner": mon.owner if mon else None, "frozen": mon.frozen if mon else None, "updated_at": mon.updated_at if mon else None},
        "hosts": [
            {
                "host_id": h.id,
                "name": h.name,
                "health": states[h.id].health if h.id in states else "connected",
                "since": states[h.id].since if h.id in states else None,
                "reason": states[h.id].reason if h.id in states else "",
                "evidence": states[h.id].evidence if h.id in states else {},
            }
            for h in hosts
        ],
        "restarts": [
            {"vm_id": r.vm_id, "from_host_id": r.from_host_id, "cause": r.cause, "state": r.state, "attempts": r.attempts, "next_try_at": r.next_try_at, "reason": r.reason, "task_id": r.task_id}
            for r in restarts
        ],
    }


# -- the monitor's writes --------------------------------------------------------------------


def fence(session: Session, token: int, owner: str = "") -> None:
    """Accept this transaction's HA writes only for the highest token seen (refuse otherwise)."""
    row = session.get(HaMonitor, 1, with_for_update=True)
    if row is None:
        session.add(HaMonitor(id=1, token=token, owner=owner))
        session.flush()
        return
    if not ha.fence_ok(token, row.token):
        raise Fenced(f"HA monitor token {token} is stale (highest seen {row.token}, held by {row.owner})")
    if token != row.token or (owner and owner != row.owner):
        # Writes that do not name their monitor keep the owner the lock holder recorded.
        row.token, row.owner, row.updated_at = token, owner or row.owner, utcnow()


def set_frozen(session: Session, token: int, frozen: str | None, owner: str = "") -> None:
    fence(session, token, owner)
    row = session.get(HaMonitor, 1)
    if row.frozen != frozen:
        row.frozen = frozen
        if frozen:
            record_event(session, "ha.frozen", f"HA frozen: {frozen}", reason="HA_FROZEN", data={"why": frozen})
        else:
            record_event(session, "ha.unfrozen", "HA acting again", reason="HA_UNFROZEN")


def load_health(session: Session) -> dict[str, ha.HostHealth]:
    return {str(s.host_id): ha.HostHealth(s.health) for s in session.scalars(select(HaHostState))}


def ha_clusters(session: Session) -> list[tuple[Cluster, HaConfig]]:
    out = []
    for c in session.scalars(select(Cluster).order_by(Cluster.id)):
        cfg = config_of(c)
        if cfg.enabled:
            out.append((c, cfg))
    return out


def record_transitions(session: Session, token: int, transitions: Iterable[ha.Transition]) -> list[int]:
    """Persist each verdict with an Event carrying its evidence; returns the hosts newly failed."""
    failed = []
    for t in transitions:
        hid = int(t.host_id)
        host = session.get(Host, hid)
        if host is None:
            continue
        row = session.get(HaHostState, hid)
        if row is None:
            row = HaHostState(host_id=hid)
            session.add(row)
        row.health, row.since, row.reason, row.evidence = t.after.value, utcnow(), t.reason, t.evidence
        record_event(
            session,
            f"ha.host.{t.after.value}",
            f"host {host.name}: {t.before.value} -> {t.after.value}: {t.reason}",
            object_type="host",
            object_id=hid,
            object_name=host.name,
            reason=f"HA_{t.after.value.upper()}",
            data={"before": t.before.value, "after": t.after.value, "evidence": t.evidence, "token": token},
        )
        if t.after == ha.HostHealth.FAILED:
            failed.append(hid)
    return failed


def add_candidates(session: Session, host_id: int, cause: str, vm_uuids: Iterable[str] | None = None, power_state: str = "poweredOn") -> list[int]:
    """VMs of ``host_id`` HA must restart (all its powered-on VMs, or the named ones). Cause
    "stopped": the host, reachable again, lists them as stopped by its isolation response while
    its report already marked them powered off (``power_state`` poweredOff)."""
    q = select(VirtualMachine).where(VirtualMachine.host_id == host_id, VirtualMachine.power_state == power_state)
    if vm_uuids is not None:
        q = q.where(VirtualMachine.libvirt_uuid.in_(list(vm_uuids)))
    added = []
    for vm in session.scalars(q):
        if vm.cluster_id is None or session.get(HaRestart, vm.id) is not None:
            continue
        cfg = config_of(session.get(Cluster, vm.cluster_id))
        if not cfg.enabled:
            continue
        session.add(HaRestart(vm_id=vm.id, from_host_id=host_id, cause=cause, state="waiting"))
        why = f"stopped unexpectedly on host {host_id}" if cause == "crashed" else f"runs nowhere: host {host_id} {cause}"
        record_event(
            session,
            "ha.vm.down",
            f"VM {vm.name} {why}; HA will restart it (priority {priority_of(cfg, vm.id).value})",
            object_type="vm",
            object_id=vm.id,
            object_name=vm.name,
            reason=f"HA_{cause.upper()}",
            data={"from_host_id": host_id, "cause": cause},
        )
        added.append(vm.id)
    return added


def unexpected_stops(session: Session) -> list[tuple[VirtualMachine, ha.StoppedVm]]:
    """The stops nobody asked for that the reports recorded (``vms.unexpected_stop``) and the
    monitor has not handled yet, with what the inventory says of each VM now."""
    out = []
    for vm in session.scalars(select(VirtualMachine).where(VirtualMachine.unexpected_stop.is_not(None)).order_by(VirtualMachine.id)):
        cluster = session.get(Cluster, vm.cluster_id) if vm.cluster_id is not None else None
        enabled = cluster is not None and config_of(cluster).enabled
        out.append(
            (
                vm,
                ha.StoppedVm(
                    str(vm.id),
                    str(vm.host_id) if vm.host_id is not None else None,
                    vm.unexpected_stop or "",
                    vm.power_state,
                    enabled,
                    session.get(HaRestart, vm.id) is not None,
                    session.get(ObjectClaim, ("vm", vm.id)) is not None,
                ),
            )
        )
    return out


def stops_handled(session: Session, token: int, handled: Iterable[tuple[int, str]]) -> None:
    """The monitor decided on these (VM id, recorded reason): cleared in its fenced transaction.
    A fact recorded again meanwhile (another reason) stays for the next pass. A plain UPDATE:
    the VM's version is not bumped (an operator's edit does not go stale for it)."""
    fence(session, token)
    for vm_id, reason in handled:
        session.execute(update(VirtualMachine).where(VirtualMachine.id == vm_id, VirtualMachine.unexpected_stop == reason).values(unexpected_stop=None).execution_options(synchronize_session=False))


def _snapshot_for_restarts(session: Session, cluster_id: int, health: Mapping[str, ha.HostHealth]) -> ClusterSnapshot:
    snap = cluster_snapshot(session, cluster_id)
    hosts = tuple(replace(h, connection="notResponding") if health.get(h.id, ha.HostHealth.CONNECTED) != ha.HostHealth.CONNECTED else h for h in snap.hosts)
    # Restarts in flight hold their target's capacity (a pending reservation).
    starting = []
    for r in session.scalars(select(HaRestart).where(HaRestart.state == "starting")):
        task = session.get(Task, r.task_id) if r.task_id else None
        vm = session.get(VirtualMachine, r.vm_id)
        if task is not None and vm is not None and vm.cluster_id == cluster_id and task.host_id:
            starting.append(PendingReservation(str(vm.id), str(task.host_id), vm.memory_mib, vm.vcpus, float(vm.cpu_reservation_mhz or 0)))
    return replace(snap, hosts=hosts, pending=snap.pending + tuple(starting))


def waiting_restarts(session: Session, token: int, cluster_id: int) -> list[HaRestart]:
    """The cluster's VMs waiting for a restart (fenced: the restart pass starts here)."""
    fence(session, token)
    vm_ids = set(session.scalars(select(VirtualMachine.id).where(VirtualMachine.cluster_id == cluster_id)))
    return [r for r in session.scalars(select(HaRestart).where(HaRestart.state == "waiting").order_by(HaRestart.vm_id)) if r.vm_id in vm_ids]


def restart_inputs(session: Session, cluster_id: int, cfg: HaConfig, rows: list[HaRestart], health: Mapping[str, ha.HostHealth]) -> tuple[ClusterSnapshot, list[RestartRow], datetime]:
    """What restart planning reads: the cluster as restarts see it, the waiting VMs, the time."""
    # A standby host woken for these restarts leaves standby as soon as its agent reported
    # (as the orchestrator's pass would do): the restarts need not wait for it.
    power_service.advance_power_on(session)
    now = utcnow()
    snap = _snapshot_for_restarts(session, cluster_id, health)
    by_id = {v.id: v for v in snap.vms}
    out = []
    for r in rows:
        vm = session.get(VirtualMachine, r.vm_id)
        out.append(RestartRow(vm.id, r.from_host_id, r.cause, r.attempts, r.next_try_at.timestamp() if r.next_try_at else None, replace(by_id[str(vm.id)], host=None), priority_of(cfg, vm.id)))
    return snap, out, now


def start_restart(session: Session, token: int, s: ha.Start, placement: dict[str, Any] | None, holder: int | None, spec_for: Any) -> bool:
    """A restart Task on the target (``vm.ha_start``), unless another task holds the VM.
    ``spec_for(session, vm, host_id)`` builds the VmSpec for the target."""
    vm = session.get(VirtualMachine, int(s.vm_id))
    row = session.get(HaRestart, vm.id)
    claim = session.get(ObjectClaim, ("vm", vm.id))
    if claim is not None:
        row.reason = f"busy with task {claim.task_id}; retried next pass"
        return False
    target = int(s.host_id)
    task = start_task(
        session,
        kind=RESTART_KIND,
        object_type="vm",
        object_id=vm.id,
        username="ha",
        host_id=target,
        params={"target": target, "from_host": row.from_host_id, "cause": row.cause, "attempt": s.attempt, "reason": s.reason, "token": token, "placement": placement},
        command="vm.ha_start",
        command_args=HaStartArgs(spec=spec_for(session, vm, target)).args(),
    )
    row.state, row.task_id, row.reason = "starting", task.id, s.reason
    target_host = session.get(Host, target)
    record_event(
        session,
        "ha.vm.restart",
        f"HA restarts VM {vm.name} on {target_host.name} (try {s.attempt}): {s.reason}",
        object_type="vm",
        object_id=vm.id,
        object_name=vm.name,
        task_id=task.id,
        reason="HA_RESTART",
        data={"target": target, "holder": holder, "from_host": row.from_host_id, "token": token},
    )
    return True


def note_wait(session: Session, w: ha.Wait, now: datetime) -> None:
    """A VM keeps waiting: its reason (an Event when it changed), its tries, its next try."""
    row = session.get(HaRestart, int(w.vm_id))
    if row.reason != w.reason:
        vm = session.get(VirtualMachine, row.vm_id)
        record_event(
            session, "ha.vm.waiting", f"VM {vm.name} waits: {w.reason}", object_type="vm", object_id=vm.id, object_name=vm.name, reason="HA_WAITING", data={"until": w.until, "attempts": w.attempts}
        )
    row.reason, row.attempts = w.reason, w.attempts
    row.next_try_at = datetime.fromtimestamp(w.until, tz=now.tzinfo) if w.until is not None else row.next_try_at if w.attempts else None


def give_up(session: Session, w: ha.Wait) -> None:
    row = session.get(HaRestart, int(w.vm_id))
    vm = session.get(VirtualMachine, row.vm_id)
    row.state, row.reason, row.attempts = "gave_up", w.reason, w.attempts
    record_event(session, "ha.vm.gave_up", f"HA gave up on VM {vm.name}: {w.reason}", object_type="vm", object_id=vm.id, object_name=vm.name, reason="HA_GAVE_UP")


def wake_standby_hosts(session: Session, cfg: HaConfig, plan: ha.RestartPlan) -> list[Task]:
    """Power on the standby hosts restart planning asked for (``plan.wake``: the survivors
    cannot hold the VMs), through DPM's power drivers (services.inventory.host_power: IPMI, Redfish,
    Wake-on-LAN, the lab's): a ``host.exitStandby`` Task that ends when the host's agent
    reported again; the VMs wait for it (their reason says so) and are placed on the next pass
    after it left standby. A host already waking is left alone; after a failed wake (an Event
    with the driver's code) the next try waits ``restart.retry_base_s``."""
    started = []
    for h in plan.wake:
        host = session.get(Host, int(h))
        if host is None:
            continue
        last = session.scalar(select(Task).where(Task.kind == "host.exitStandby", Task.object_type == "host", Task.object_id == host.id).order_by(Task.id.desc()).limit(1))
        if last is not None and not TaskState(last.state).finished:
            continue  # waking: its agent has not reported yet
        if last is not None and last.state == TaskState.ERROR.value and last.finished_at is not None and (utcnow() - as_utc(last.finished_at)).total_seconds() < cfg.restart.retry_base_s:
            continue
        waiting = [w.vm_id for w in plan.waits if w.reason.endswith(f"standby host {h} to power on")]
        record_event(
            session,
            "ha.host.wake",
            f"capacity short: HA wakes standby host {host.name} for {len(waiting)} VM(s)",
            object_type="host",
            object_id=host.id,
            object_name=host.name,
            reason="HA_WAKE",
            data={"vms": waiting},
        )
        try:
            task = power_service.power_on_host(session, "ha", host.id, reason="HA: capacity short for restarts")
        except VcError as exc:
            record_event(session, "ha.host.wake_failed", f"HA could not wake {host.name}: {exc.message}", object_type="host", object_id=host.id, object_name=host.name, reason=exc.code)
            continue
        if task.state == TaskState.ERROR.value:
            record_event(
                session,
                "ha.host.wake_failed",
                f"HA could not wake {host.name}: {task.error_code}: {task.error_message}",
                object_type="host",
                object_id=host.id,
                object_name=host.name,
                task_id=task.id,
                reason=task.error_code,
            )
        started.append(task)
    return started


def on_result(session: Session, task: Task, ok: bool, error_code: str | None, error_message: str | None) -> bool:
    """A restart or reset Task ended (the agent's report). True when handled here."""
    if task.kind not in (RESTART_KIND, RESET_KIND):
        return False
    vm = session.get(VirtualMachine, task.object_id)
    if task.kind == RESET_KIND:
        if ok:
            finish_task(session, task, TaskState.SUCCESS, object_name=vm.name if vm else None)
        else:
            finish_task(session, task, TaskState.ERROR, error_code=error_code or "AGENT_ERROR", error_message=error_message)
        return True
    row = session.get(HaRestart, task.object_id)
    if ok and vm is not None:
        target = session.get(Host, task.params["target"])
        vm.host_id, vm.power_state = target.id, "poweredOn"
        vm.cluster_id = target.cluster_id
        if vm.status == "inaccessible":
            vm.status = "ready"
        finish_task(session, task, TaskState.SUCCESS, result={"host_id": target.id}, object_name=vm.name)
        if row is not None:
            session.delete(row)
        record_event(session, "ha.vm.restarted", f"VM {vm.name} restarted by HA on {target.name}", object_type="vm", object_id=vm.id, object_name=vm.name, task_id=task.id, reason="HA_RESTARTED")
        return True
    finish_task(session, task, TaskState.ERROR, error_code=error_code or "AGENT_ERROR", error_message=error_message)
    if row is not None and vm is not None:
        cfg = config_of(session.get(Cluster, vm.cluster_id)) if vm.cluster_id else HaConfig()
        c = ha.RestartCandidate(vm_snapshot(vm, None), priority_of(cfg, vm.id), str(row.from_host_id), None, row.attempts)
        n, nxt = ha.after_failed_start(c, utcnow().timestamp(), restart_settings(cfg))
        row.attempts, row.task_id = n, None
        if nxt is None:
            row.state, row.reason = "gave_up", f"gave up after {n} tries: {error_code}: {error_message}"
            record_event(session, "ha.vm.gave_up", f"HA gave up on VM {vm.name}: {row.reason}", object_type="vm", object_id=vm.id, object_name=vm.name, task_id=task.id, reason="HA_GAVE_UP")
        else:
            row.state, row.next_try_at = "waiting", datetime.fromtimestamp(nxt, tz=utcnow().tzinfo)
            row.reason = f"try {n} failed ({error_code}), retry at {row.next_try_at.isoformat()}"
            record_event(
                session,
                "ha.vm.restart_failed",
                f"HA restart of VM {vm.name} failed: {error_code}: {error_message}; retry at {row.next_try_at.isoformat()}",
                object_type="vm",
                object_id=vm.id,
                object_name=vm.name,
                task_id=task.id,
                reason=error_code or "AGENT_ERROR",
            )
    return True


def reconcile_restarts(session: Session, token: int) -> list[ha.Reconciled]:
    """After the monitor's own outage: restarts whose Task ended meanwhile are settled (a Task
    that succeeded is not started again); restarts whose VM runs are dropped."""
    fence(session, token)
    out = []
    for r in list(session.scalars(select(HaRestart))):
        vm = session.get(VirtualMachine, r.vm_id)
        task = session.get(Task, r.task_id) if r.task_id else None
        if r.state == "starting" and task is not None and TaskState(task.state).finished:
            if task.state == TaskState.SUCCESS.value:
                session.delete(r)
                out.append(ha.Reconciled(str(r.vm_id), "ok", (str(task.host_id),), "its restart Task succeeded while the monitor was away"))
                continue
            r.state, r.task_id = "waiting", None
        if vm is not None and vm.power_state == "poweredOn" and vm.host_id != r.from_host_id and r.state != "starting":
            session.delete(r)
            out.append(ha.Reconciled(str(r.vm_id), "moved", (str(vm.host_id),), "runs elsewhere already"))
    return out


def resets_in_window(session: Session, vm_id: int, window_s: float) -> list[datetime]:
    since = utcnow() - timedelta(seconds=window_s)
    return list(session.scalars(select(Event.at).where(Event.kind == "ha.vm.reset", Event.object_type == "vm", Event.object_id == vm_id, Event.at >= since)))


def reset_vm(session: Session, token: int, vm: VirtualMachine, verdict: ha.VmVerdict) -> Task | None:
    fence(session, token)
    if session.get(ObjectClaim, ("vm", vm.id)) is not None:
        return None
    task = start_task(
        session,
        kind=RESET_KIND,
        object_type="vm",
        object_id=vm.id,
        username="ha",
        host_id=vm.host_id,
        params={"reason": verdict.reason, "evidence": verdict.evidence, "token": token},
        command="vm.reset",
        command_args=UuidArgs(uuid=vm.libvirt_uuid).args(),
    )
    record_event(
        session,
        "ha.vm.reset",
        f"VM monitoring resets VM {vm.name}: {verdict.reason}",
        object_type="vm",
        object_id=vm.id,
        object_name=vm.name,
        task_id=task.id,
        reason="HA_VM_RESET",
        data=verdict.evidence,
    )
    return task


def record_reset_limit(session: Session, vm: VirtualMachine, verdict: ha.VmVerdict) -> None:
    record_event(session, "ha.vm.reset_limit", f"VM {vm.name}: {verdict.reason}", object_type="vm", object_id=vm.id, object_name=vm.name, reason="HA_RESET_LIMIT", data=verdict.evidence)


def clear_stale_states(session: Session, token: int, hosts: Iterable[int]) -> None:
    fence(session, token)
    for hid in hosts:
        row = session.get(HaHostState, hid)
        if row is not None:
            session.delete(row)


def monitored_hosts(session: Session) -> list[Host]:
    """Hosts of HA-enabled clusters that HA judges (not in maintenance, not in standby)."""
    ids = [c.id for c, _ in ha_clusters(session)]
    if not ids:
        return []
    return list(session.scalars(select(Host).where(Host.cluster_id.in_(ids)).order_by(Host.id)))


def update_monitor_row(session: Session, token: int, owner: str) -> None:
    session.execute(update(HaMonitor).where(HaMonitor.id == 1, HaMonitor.token <= token).values(token=token, owner=owner, updated_at=utcnow()))


PEER_PROBE_PORT = 16509  # libvirtd's TCP port: every peer host answers a connect on it


def agent_config(session: Session, host: Host) -> dict[str, Any]:
    """What a host's agent needs of its cluster's HA configuration (sent with every answer to
    its state report): isolation delay, addresses to probe (default: its peers' libvirtd
    ports), the isolation response and the per-VM ones (by uuid)."""
    if host.cluster_id is None:
        return {"enabled": False}
    cfg = config_of(session.get(Cluster, host.cluster_id))
    if not cfg.enabled:
        return {"enabled": False}
    addresses = list(cfg.isolation_addresses)
    if not addresses:
        peers = session.scalars(select(Host.address).where(Host.cluster_id == host.cluster_id, Host.id != host.id, Host.address != ""))
        addresses = [f"{a}:{PEER_PROBE_PORT}" for a in peers]
    overrides = {}
    for vm_id, o in cfg.vm_overrides.items():
        if o.isolation_response:
            uuid = session.scalar(select(VirtualMachine.libvirt_uuid).where(VirtualMachine.id == int(vm_id)))
            if uuid:
                overrides[uuid] = o.isolation_response
    return {"enabled": True, "isolation_delay_s": cfg.isolation_delay_s, "isolation_addresses": addresses, "isolation_response": cfg.isolation_response, "overrides": overrides}


def reserve_fraction(cluster: Cluster) -> float:
    """The per-host share of capacity DRS and DPM keep free for failover, derived from the HA
    admission policy (0 when HA or admission control is off): the reserve they respect."""
    from sqlalchemy.orm import object_session

    session = object_session(cluster)
    cfg = config_of(cluster)
    policy = policy_of(cfg)
    if session is None or policy.kind in (ha.AdmissionKind.DISABLED, ha.AdmissionKind.FAILOVER_HOSTS):
        return 0.0
    return ha.ha_reserve_fraction(cluster_snapshot(session, cluster.id), policy)
