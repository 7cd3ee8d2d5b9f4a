"""Maintenance mode and standby entry: a host's evacuation, then the host marked in maintenance
(or powered off into standby for DPM), and the way out of maintenance.

Maintenance (a Task of kind ``host.enterMaintenance``): every running VM is placed together
(domain.evacuation over placement, excluding the host), each move is a child VMotion; with
the cluster setting ``maintenance.powered_off`` = ``move`` the powered-off VMs follow as child
cold moves (services.compute.relocation without copies: defined on a target mounting their
datastores, undefined here). The host enters maintenance only when the children all
succeeded and nothing runs (with ``move``: nothing is registered) there any more. A VM that
cannot leave is named with its reason and code up front and the host stays out of
maintenance.

Standby (a Task of kind ``host.enterStandby``, DPM's power-off) is the same evacuation, after
which the host is powered off through its power driver (services.inventory.host_power) instead of
being marked in maintenance; powered-off VMs never move for it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vcenter.core.errors import Conflict, InvalidState
from vcenter.core.settings import Settings
from vcenter.db.models import Cluster, Datastore, Host, Task, VirtualMachine, VmSnapshotRow
from vcenter.db.snapshots import cluster_snapshot, vm_snapshot
from vcenter.domain import evacuation
from vcenter.domain.states import PowerState, TaskState
from vcenter.services.compute import relocation
from vcenter.services.compute.migration import FILTER_CODES, dispatch_waiting, migrate
from vcenter.services.inventory import host_power, inventory
from vcenter.services.inventory.cluster_settings import maintenance_settings
from vcenter.services.tasks.events import record_event
from vcenter.services.tasks.tasks import ensure_idle, finish_task, start_task


def maintenance_policy(cluster: Cluster | None) -> str:
    if cluster is None:
        return evacuation.DEFAULT_POLICY
    return maintenance_settings((cluster.settings or {}).get("maintenance"))["powered_off"]


def _blocked_reason(session: Session, blocked: evacuation.Blocked) -> str:
    """A blocked VM's reason; for datastores no other host mounts, their names and the way out."""
    if blocked.filter != "DatastoreFilter":
        return blocked.reason
    vm = session.get(VirtualMachine, int(blocked.vm_id))
    names = sorted({session.get(Datastore, d.datastore_id).name for d in vm.disks})
    return f"its disks are on datastore(s) {', '.join(names)}, which no other host able to take it mounts (move the disks with a relocation first); {blocked.reason}"


def enter_maintenance(session: Session, user: str, host_id: int, config: Settings, standby: bool = False) -> Task:
    """Evacuate the host, then mark it in maintenance — or, with ``standby``, power it off
    through its power driver and mark it in standby (DPM's power-off). Powered-off VMs are
    left, refuse maintenance or move as the cluster's ``maintenance.powered_off`` says
    (domain.evacuation decides; a standby never moves them, "move" leaves them there)."""
    host: Host = inventory.get(session, "host", host_id)
    ensure_idle(session, "host", host.id)
    if standby and host.standby:
        raise InvalidState(f"host {host.name} is already in standby", code="ALREADY_IN_STANDBY")
    if standby and not host.power:
        raise Conflict(f"host {host.name} has no power settings: DPM cannot power it", code="NO_POWER_DRIVER")
    if not standby and host.maintenance:
        raise InvalidState(f"host {host.name} is already in maintenance", code="ALREADY_IN_MAINTENANCE")
    cluster = session.get(Cluster, host.cluster_id) if host.cluster_id else None
    policy = maintenance_policy(cluster)
    if standby and policy == "move":
        policy = "leave"
    on_host = list(session.scalars(select(VirtualMachine).where(VirtualMachine.host_id == host.id).order_by(VirtualMachine.id)))
    running = [v for v in on_host if v.power_state == PowerState.POWERED_ON.value]
    stopped = [v for v in on_host if v.power_state != PowerState.POWERED_ON.value]
    leaving = running + (stopped if policy == "move" else [])
    if leaving and cluster is None:
        raise Conflict(f"host {host.name} runs VMs and is in no cluster: nowhere to move them", code="CANNOT_EVACUATE", details={"vms": [v.name for v in leaving]})
    plan: dict[int, int] = {}
    cold: dict[int, int] = {}
    decisions: list[dict[str, Any]] = []
    cold_decisions: list[dict[str, Any]] = []
    if cluster is not None and (running or stopped):
        snapshot = cluster_snapshot(session, cluster.id)
        known = {v.id: v for v in snapshot.vms}
        counts = (
            dict(session.execute(select(VmSnapshotRow.vm_id, func.count()).where(VmSnapshotRow.vm_id.in_([v.id for v in stopped])).group_by(VmSnapshotRow.vm_id)).all())
            if stopped and policy == "move"
            else {}
        )
        decided = evacuation.plan(
            snapshot,
            str(host.id),
            [known.get(str(v.id)) or vm_snapshot(v, v.host_id) for v in running],
            [evacuation.StoppedVm(known.get(str(v.id)) or vm_snapshot(v, None), v.power_state, v.status == "ready", counts.get(v.id, 0)) for v in stopped],
            policy,
        )
        if decided.blocked and decided.blocked[0].code == "POWERED_OFF_VMS_PRESENT":
            off = [b.name for b in decided.blocked]
            raise Conflict(f"host {host.name} has powered-off VMs and the cluster refuses to leave them: {', '.join(off)}", code="POWERED_OFF_VMS_PRESENT", details={"vms": off})
        if decided.blocked:
            codes = {b.name: (FILTER_CODES.get(b.filter, "PLACEMENT_FAILED") if b.code == "NO_HOST" else b.code) for b in decided.blocked}
            reasons = {b.name: _blocked_reason(session, b) for b in decided.blocked}
            raise Conflict(f"host {host.name} cannot be evacuated: " + "; ".join(f"{n}: {r}" for n, r in reasons.items()), code="CANNOT_EVACUATE", details={"vms": reasons, "codes": codes})
        plan = {int(v): int(h) for v, h in decided.moves.items()}
        cold = {int(v): int(h) for v, h in decided.cold_moves.items()}
        decisions = [r.to_dict() for r in decided.running]
        cold_decisions = [r.to_dict() for r in decided.stopped]
    kind = "host.enterStandby" if standby else "host.enterMaintenance"
    # The evacuation's placement, every VM with every host's reason, is kept in the Task.
    task = start_task(
        session,
        kind=kind,
        object_type="host",
        object_id=host.id,
        username=user,
        params={
            "plan": {str(k): v for k, v in plan.items()},
            "cold": {str(k): v for k, v in cold.items()},
            "powered_off": policy,
            "placement": {"evacuation": decisions, "powered_off": cold_decisions},
        },
    )
    task.state = TaskState.RUNNING.value
    task.step = "evacuating"
    children = []
    for vm_id, target_id in plan.items():
        children.append(migrate(session, user, vm_id, target_id, config, parent_task_id=task.id).id)
    for vm_id, target_id in cold.items():
        # A cold move without disk copies: defined on the target (it mounts the datastores), undefined here.
        child = relocation.relocate_offline(session, user, session.get(VirtualMachine, vm_id), session.get(Host, target_id), [])
        child.params = {**child.params, "parent": task.id}
        dispatch_waiting(session)
        children.append(child.id)
    task.params = {**task.params, "children": children}
    record_event(
        session,
        "host.maintenance.requested",
        f"host {host.name} entering maintenance: {len(plan)} running and {len(cold)} powered-off VMs to move",
        username=user,
        object_type="host",
        object_id=host.id,
        object_name=host.name,
        task_id=task.id,
    )
    advance_maintenance(session, task)
    return task


def advance_maintenance(session: Session, task: Task) -> None:
    """Finish an evacuation when its children are done (called after each child and by the
    orchestrator's periodic pass)."""
    if TaskState(task.state).finished:
        return
    children = [session.get(Task, i) for i in task.params.get("children", [])]
    if any(not TaskState(c.state).finished for c in children):
        done = sum(1 for c in children if TaskState(c.state).finished)
        task.progress = int(100 * done / max(len(children), 1))
        return
    host = session.get(Host, task.object_id)
    failed = [c for c in children if c.state != TaskState.SUCCESS.value]
    left = select(VirtualMachine.name).where(VirtualMachine.host_id == host.id)
    if task.params.get("powered_off") != "move":
        left = left.where(VirtualMachine.power_state == PowerState.POWERED_ON.value)
    still = session.scalars(left).all()  # with "move", nothing may stay registered there
    if failed or still:
        names = {c.id: session.get(VirtualMachine, c.object_id).name for c in failed if session.get(VirtualMachine, c.object_id)}
        detail = "; ".join(f"{names.get(c.id, c.object_id)}: {c.error_code}" for c in failed) or f"still on the host: {', '.join(still)}"
        finish_task(session, task, TaskState.ERROR, error_code="EVACUATION_FAILED", error_message=detail, object_name=host.name)
        return
    if task.kind == "host.enterStandby":
        host_power.power_off_host(session, task, host, moved=len(children))
        return
    host.maintenance = True
    finish_task(session, task, TaskState.SUCCESS, result={"moved": len(children), "powered_off_moved": len(task.params.get("cold") or {})}, object_name=host.name)
    record_event(session, "host.maintenance.entered", f"host {host.name} entered maintenance", username=task.username, object_type="host", object_id=host.id, object_name=host.name, task_id=task.id)


def exit_maintenance(session: Session, user: str, host_id: int) -> Host:
    host: Host = inventory.get(session, "host", host_id)
    ensure_idle(session, "host", host.id)
    if not host.maintenance:
        raise InvalidState(f"host {host.name} is not in maintenance", code="NOT_IN_MAINTENANCE")
    host.maintenance = False
    record_event(session, "host.maintenance.exited", f"host {host.name} left maintenance", username=user, object_type="host", object_id=host.id, object_name=host.name)
    return host
