"""Agent reports: task progress and results, VM lifecycle events, full host state.

The host's reports are the truth about the host: the inventory follows them. A stop nobody
asked for (a lifecycle event "crashed"; a report finding shut off a VM the inventory had
running, with no lifecycle event seen: "unobserved") is only recorded here, on the VM
(``unexpected_stop``); the HA monitor decides whether it restarts it
(vcenter.services.ha.ha_manager). Every report is idempotent (a result for a finished task or
another command id changes nothing), because the agent re-sends until the server answered.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vcenter.core.clock import utcnow
from vcenter.core.release import release
from vcenter.core.settings import Settings
from vcenter.db.models import Cluster, Datastore, DatastoreMount, Event, Host, PortGroup, PortGroupHost, Switch, Task, VirtualMachine, VmStats
from vcenter.domain.cpu import CpuModel, can_join
from vcenter.domain.datastore_roots import DatastorePathRefused, check_datastore_path, check_root
from vcenter.domain.demand import NOISE_WINDOW, cpu_sample_mhz, noise_spread, smoothed_demand
from vcenter.domain.ha import UNEXPECTED_STOPS
from vcenter.domain.states import ConnectionState, TaskState
from vcenter.domain.uplinks import vlan_refusal
from vcenter.messaging.contracts import DomainState, HostState, LifecycleEvent, TaskProgress, TaskResult
from vcenter.services.ha import ha
from vcenter.services.compute import migration
from vcenter.services.tasks.events import record_event
from vcenter.services.operations import AgentResult, operation_for
from vcenter.services.tasks.tasks import mark_running

log = logging.getLogger(__name__)


class StaleReport(Exception):
    """The report names a command the task no longer waits for."""


def _task_for(session: Session, host: Host, task_id: int, command_id: str) -> Task | None:
    task = session.get(Task, task_id)
    if task is None or task.host_id != host.id or task.command_id != command_id:
        return None
    return task


def report_progress(session: Session, host: Host, task_id: int, report: TaskProgress, settings: Settings) -> dict[str, Any]:
    """Returns {"proceed": bool}: False tells the agent to stop (task cancelled or unknown)."""
    task = _task_for(session, host, task_id, report.command_id)
    if task is None:
        return {"proceed": False, "reason": "UNKNOWN_TASK"}
    if TaskState(task.state).finished:
        return {"proceed": False, "reason": task.state}
    operation = operation_for(task.kind)
    if task.cancel_requested and not operation.defers_cancel(task):
        return {"proceed": False, "reason": "CANCEL_REQUESTED"}
    mark_running(session, task, report.step, report.progress, settings)
    if report.details:
        operation.on_progress(task, report.details)
    return {"proceed": True}


def _vm_by_uuid(session: Session, uuid: str) -> VirtualMachine | None:
    return session.scalar(select(VirtualMachine).where(VirtualMachine.libvirt_uuid == uuid))


def report_result(session: Session, host: Host, task_id: int, report: TaskResult) -> dict[str, Any]:
    """Find the task, then hand the result to the operation of its kind."""
    task = _task_for(session, host, task_id, report.command_id)
    if task is None or TaskState(task.state).finished:
        return {"applied": False}
    result = AgentResult(host=host, ok=report.ok, result=report.result, error_code=report.error_code, error_message=report.error_message, domain=report.domain)
    operation_for(task.kind).on_result(session, task, result)
    return {"applied": True}


_EVENT_MESSAGES = {
    "destroyed": "was powered off from outside (destroyed)",
    "shutdown": "shut down from inside the guest",
    "crashed": "stopped unexpectedly: its QEMU process died or the guest crashed",
    "saved": "was suspended (memory saved to disk)",
    "migrated": "migrated away",
}


def report_lifecycle(session: Session, host: Host, events: list[LifecycleEvent]) -> int:
    applied = 0
    for event in events:
        if event.reason == "migrated":
            continue  # the VM moved, it did not stop: the migration's result says where it runs
        vm = _vm_by_uuid(session, event.uuid)
        if vm is None or vm.host_id != host.id:
            continue
        changed = event.power_state is not None and vm.power_state != event.power_state
        if event.power_state is not None:
            vm.power_state = event.power_state
        if event.event == "stopped":
            vm.last_stop_reason = event.reason
            # Recorded, not judged: the HA monitor decides (vcenter.domain.ha.restart_after_stop).
            vm.unexpected_stop = event.reason if event.reason in UNEXPECTED_STOPS else None
        if changed or event.event == "stopped":
            text = _EVENT_MESSAGES.get(event.reason, f"{event.event} ({event.reason})")
            record_event(
                session,
                f"vm.{event.event}",
                f"VM {vm.name} {text}",
                object_type="vm",
                object_id=vm.id,
                object_name=vm.name,
                reason=event.reason,
                data={"host_id": host.id, "at": event.at.isoformat(), "power_state": event.power_state},
            )
            applied += 1
    return applied


def _note_agent_version(session: Session, host: Host, reported: str) -> None:
    """A new agent release on the host (first report, upgrade, downgrade): recorded, with an
    Event that says whether it is older than this server."""
    before, host.agent_version = host.agent_version, reported
    outdated = host.agent_outdated
    text = f"host {host.name}'s agent is release {reported}" + (f" (was {before})" if before else "")
    if outdated:
        text += f", older than this server's {release()}: upgrade it"
    record_event(
        session,
        "host.agent_version",
        text,
        object_type="host",
        object_id=host.id,
        object_name=host.name,
        reason="AGENT_OUTDATED" if outdated else "agent_version",
        data={"agent_version": reported, "previous": before, "server_version": release()},
    )


def report_host_state(session: Session, host: Host, state: HostState) -> dict[str, Any]:
    """Apply a full state report; answer with what the host is expected to provide."""
    facts = state.facts
    if facts.host_uuid and host.host_uuid != facts.host_uuid:
        other = session.scalar(select(Host).where(Host.host_uuid == facts.host_uuid, Host.id != host.id))
        if other is not None:
            record_event(
                session,
                "host.duplicate_uuid",
                f"host {host.name} reports host UUID {facts.host_uuid} already used by {other.name}",
                object_type="host",
                object_id=host.id,
                object_name=host.name,
                reason="DUPLICATE_HOST_UUID",
            )
            return {"accepted": False, "error": "DUPLICATE_HOST_UUID"}
        host.host_uuid = facts.host_uuid
    for field in ("cpu_model", "cpu_cores", "cpu_mhz", "memory_mib", "hypervisor", "cpu_features", "cpu_xml"):
        value = getattr(facts, field)
        if value is not None and getattr(host, field) != value:
            setattr(host, field, value)
    if facts.agent_version is not None and host.agent_version != facts.agent_version:
        _note_agent_version(session, host, facts.agent_version)
    host.last_report_at = utcnow()
    refused = evc_refusal(session, host)
    if refused:
        host.connection_state = ConnectionState.DISCONNECTED.value
        record_event(
            session,
            "host.evc_refused",
            f"host {host.name} cannot join its cluster's EVC mode: missing {', '.join(refused)}",
            object_type="host",
            object_id=host.id,
            object_name=host.name,
            reason="EVC_INCOMPATIBLE",
            data={"missing": refused},
        )
        return {"accepted": False, "error": "EVC_INCOMPATIBLE", "missing": refused}
    if host.connection_state != ConnectionState.CONNECTED.value:
        previous = host.connection_state
        host.connection_state = ConnectionState.CONNECTED.value
        record_event(session, "host.connected", f"host {host.name} connected (was {previous})", object_type="host", object_id=host.id, object_name=host.name, reason="agent_report")

    reconcile_domains(session, host, state.domains)

    for ds_report in state.datastores:
        datastore = session.get(Datastore, ds_report.id)
        if datastore is not None and host.id in {m.host_id for m in datastore.mounts}:
            datastore.capacity_bytes = ds_report.capacity_bytes
            datastore.free_bytes = ds_report.free_bytes
    _note_network_facts(host, facts.nics, facts.vlan_8021q)
    _note_portgroups(session, host, set(state.bridges), {e.bridge: (e.code, e.message) for e in state.portgroup_errors})
    if facts.datastore_roots is not None and host.datastore_roots != list(facts.datastore_roots):
        host.datastore_roots = list(facts.datastore_roots)  # only on a change: a write bumps the host's version
    return {"accepted": True, **expected_host_config(session, host, facts.datastore_roots), "ha": ha.agent_config(session, host)}


def _note_network_facts(host: Host, nics: list[str] | None, vlan_8021q: bool | None) -> None:
    # Only on a change: a write bumps the host's version. An agent that does not report them
    # (an older release) leaves what is known.
    if nics is not None and host.nics != list(nics):
        host.nics = list(nics)
    if vlan_8021q is not None and host.vlan_8021q != vlan_8021q:
        host.vlan_8021q = vlan_8021q


def _note_portgroups(session: Session, host: Host, present: set[str], errors: dict[str, tuple[str, str]]) -> None:
    """Each port group of the host: there (its bridge reported, no error), or why not: the
    agent's error, or the server's own refusal of a tagged port group on a host without 802.1Q
    (not sent to it at all, see expected_host_config). A new error is an Event."""
    for link in session.scalars(select(PortGroupHost).where(PortGroupHost.host_id == host.id)):
        pg = session.get(PortGroup, link.portgroup_id)
        refused = vlan_refusal(pg.vlan_id, host.vlan_8021q) if pg.switch_id is not None else None
        code, message = (refused, "this host's kernel has no 802.1Q: the server does not send it a tagged port group") if refused else errors.get(pg.bridge, (None, None))
        there = pg.bridge in present and code is None
        if link.present != there:
            link.present = there
        if (link.error_code, link.error_message) != (code, message):
            link.error_code, link.error_message = code, message
            if code:
                record_event(
                    session,
                    "portgroup.host_error",
                    f"port group {pg.name} is not on host {host.name}: {code}: {message}",
                    object_type="portgroup",
                    object_id=pg.id,
                    object_name=pg.name,
                    reason=code,
                    data={"host_id": host.id, "code": code, "message": message},
                )


def _sample_cpu(session: Session, vm: VirtualMachine, host: Host, domain: DomainState) -> None:
    """Update the VM's measured CPU demand from the host's CPU-time counter."""
    stats = session.get(VmStats, vm.id)
    if domain.power_state != "poweredOn":
        if stats is not None:
            session.delete(stats)
        return
    if domain.cpu_time_ns is None or not host.cpu_mhz:
        return
    if stats is None:
        stats = VmStats(vm_id=vm.id)
        session.add(stats)
    now = utcnow()
    previous_s = stats.sampled_at.timestamp() if stats.sampled_at else None
    sample = cpu_sample_mhz(stats.cpu_time_ns, previous_s, domain.cpu_time_ns, now.timestamp(), float(host.cpu_mhz))
    if sample is not None:
        window = [*(stats.cpu_demand_window or []), round(sample, 1)][-NOISE_WINDOW:]
        stats.cpu_demand_mhz = round(smoothed_demand(stats.cpu_demand_mhz, sample), 1)
        stats.cpu_demand_window = window  # a new list: the JSON column sees the change
        stats.cpu_demand_spread_mhz = round(noise_spread(window), 1)
    stats.cpu_time_ns = domain.cpu_time_ns
    stats.sampled_at = now


def _migrations_in_flight(session: Session) -> dict[int, int]:
    """VM id -> target host of every VMotion not yet finished."""
    tasks = session.scalars(select(Task).where(Task.kind.in_(migration.SLOT_KINDS), Task.state.in_((TaskState.QUEUED.value, TaskState.RUNNING.value))))
    # A relocation to another host (params.target) moves the VM like a VMotion.
    return {t.object_id: t.params.get("target") for t in tasks if migration.changes_host(t)}


def evc_refusal(session: Session, host: Host) -> list[str]:
    """Features the host lacks for its cluster's EVC mode (empty when it may join)."""
    cluster = session.get(Cluster, host.cluster_id) if host.cluster_id else None
    evc = (cluster.settings or {}).get("evc") if cluster else None
    if not evc or not evc.get("features") or not host.cpu_features:
        return []
    ok, missing = can_join(CpuModel(vendor="", model=evc.get("mode", ""), features=frozenset(evc["features"])), CpuModel(vendor="", model=host.cpu_model or "", features=frozenset(host.cpu_features)))
    return [] if ok else list(missing)


def reconcile_domains(session: Session, host: Host, domains: list[DomainState]) -> None:
    """Make the inventory agree with what the host reports, deleting nothing:
    inventory VMs missing on the host become inaccessible; domains of the inventory whose
    host was removed are re-attached; domains the inventory never knew become orphaned VMs
    that an operator may import."""
    reported = {d.uuid: d for d in domains}
    moving = _migrations_in_flight(session)
    for vm in session.scalars(select(VirtualMachine).where(VirtualMachine.host_id == host.id)):
        domain = reported.pop(vm.libvirt_uuid, None)
        if vm.id in moving:
            continue  # leaving this host by VMotion: its task's result will say where it runs
        if domain is None:
            if vm.status == "ready":
                vm.status = "inaccessible"
                record_event(session, "vm.inaccessible", f"VM {vm.name} is missing on host {host.name}", object_type="vm", object_id=vm.id, object_name=vm.name, reason="missing_on_host")
            continue
        if vm.status == "inaccessible":
            vm.status = "ready"
            record_event(session, "vm.accessible", f"VM {vm.name} is back on host {host.name}", object_type="vm", object_id=vm.id, object_name=vm.name)
        _sample_cpu(session, vm, host, domain)
        if domain.guest:
            age = float(domain.guest.get("age_s") or 0)
            vm.guest_info = {k: v for k, v in domain.guest.items() if k != "age_s"}
            vm.guest_heartbeat_at = utcnow() - timedelta(seconds=age)
        if vm.status in ("ready", "orphaned") and vm.power_state != domain.power_state:
            record_event(
                session,
                "vm.state_reconciled",
                f"VM {vm.name} is {domain.power_state} on host {host.name} (inventory said {vm.power_state})",
                object_type="vm",
                object_id=vm.id,
                object_name=vm.name,
                reason="reconciled",
            )
            if vm.power_state == "poweredOn" and domain.power_state == "poweredOff":
                # It stopped while no agent watched (no lifecycle event said so: the host
                # rebooted, or its agent was down): a fact the HA monitor handles.
                vm.last_stop_reason = vm.unexpected_stop = "unobserved"
            vm.power_state = domain.power_state
    for uuid, domain in reported.items():
        vm = _vm_by_uuid(session, uuid)
        if vm is not None and vm.id in moving:
            continue  # arriving by VMotion: the inventory moves only when the migration completed
        if vm is not None:
            owner = session.get(Host, vm.host_id) if vm.host_id else None
            arrived = vm.status == "inaccessible"
            if owner is not None and not arrived and domain.power_state == "poweredOff" and vm.power_state == "poweredOn":
                # A leftover definition (the VM was restarted elsewhere by HA while this host was
                # down or isolated): it never takes the VM back from where it runs.
                continue
            if owner is not None and owner.connection_state == ConnectionState.CONNECTED.value and not arrived:
                record_event(
                    session,
                    "vm.seen_twice",
                    f"VM {vm.name} is reported by host {host.name} but belongs to connected host {owner.name}",
                    object_type="vm",
                    object_id=vm.id,
                    object_name=vm.name,
                    reason="seen_on_two_hosts",
                    data={"host_id": host.id},
                )
                continue
            vm.host_id = host.id
            vm.cluster_id = host.cluster_id
            vm.power_state = domain.power_state
            if (vm.status == "orphaned" and owner is None) or vm.status == "inaccessible":
                vm.status = "ready"
            record_event(session, "vm.reattached", f"VM {vm.name} found on host {host.name} and re-attached", object_type="vm", object_id=vm.id, object_name=vm.name, reason="found_on_host")
            continue
        taken = session.scalar(select(VirtualMachine.id).where(VirtualMachine.datacenter_id == host.datacenter_id, VirtualMachine.name == domain.name))
        vm = VirtualMachine(
            name=domain.name if taken is None else f"{domain.name}-{uuid[:8]}",
            datacenter_id=host.datacenter_id,
            cluster_id=host.cluster_id,
            host_id=host.id,
            vcpus=domain.vcpus or 1,
            memory_mib=domain.memory_mib or 64,
            power_state=domain.power_state,
            status="orphaned",
            libvirt_uuid=uuid,
        )
        session.add(vm)
        session.flush()
        record_event(
            session,
            "vm.discovered",
            f"domain {domain.name} found on host {host.name}, unknown to the inventory: orphaned until imported",
            object_type="vm",
            object_id=vm.id,
            object_name=vm.name,
            reason="unknown_domain",
        )


def _agent_roots(reported: list[str]) -> tuple[str, ...]:
    """The roots an agent reported, those that are valid roots at all."""
    roots = []
    for root in reported:
        try:
            roots.append(check_root(root))
        except DatastorePathRefused:
            continue
    return tuple(roots)


def _mounts_within_roots(session: Session, host: Host, mounts: list[Any], reported: list[str]) -> list[Any]:
    """The mounts whose path lies below the roots the host's agent reported; the others are
    refused: not sent to the agent (it would refuse them too), and an Event on the host names
    them with the reason (again only when the refused set differs from the last one named)."""
    roots = _agent_roots(reported)
    kept, refused = [], {}
    for ds_id, path in mounts:
        try:
            check_datastore_path(path, roots)
            kept.append((ds_id, path))
        except DatastorePathRefused as exc:
            refused[ds_id] = {"datastore_id": ds_id, "path": path, "reason": exc.reason, "message": exc.message}
    if refused:  # the Event table is read only then: the common case costs nothing
        last = session.scalar(select(Event).where(Event.object_type == "host", Event.object_id == host.id, Event.kind == "datastore.mount_refused").order_by(Event.id.desc()).limit(1))
        if last is None or sorted((last.data or {}).get("datastore_ids", [])) != sorted(refused):
            names = ", ".join(f"{r['path']} ({r['message']})" for r in refused.values())
            record_event(
                session,
                "datastore.mount_refused",
                f"host {host.name} does not mount {names}: its agent's datastore roots are {', '.join(roots) or 'none'}",
                object_type="host",
                object_id=host.id,
                object_name=host.name,
                reason="DATASTORE_PATH_NOT_ALLOWED",
                data={"datastore_ids": sorted(refused), "refused": list(refused.values()), "roots": list(roots)},
            )
    return kept


def expected_host_config(session: Session, host: Host, agent_roots: list[str] | None = None) -> dict[str, Any]:
    """What the host is expected to provide. ``agent_roots``: the datastore roots its agent
    reported (None: an agent that reports none; its own check still refuses)."""
    mounts = session.execute(select(DatastoreMount.datastore_id, DatastoreMount.path).where(DatastoreMount.host_id == host.id)).all()
    if agent_roots is not None:
        mounts = _mounts_within_roots(session, host, list(mounts), agent_roots)
    portgroups: list[dict[str, Any]] = []
    for pg in session.scalars(select(PortGroup).join(PortGroupHost).where(PortGroupHost.host_id == host.id).order_by(PortGroup.id)):
        if pg.switch_id is not None:
            if vlan_refusal(pg.vlan_id, host.vlan_8021q):
                continue  # refused here already (VLAN_UNSUPPORTED on the port group); never made untagged
            switch = session.get(Switch, pg.switch_id)
            pg_config = {"bridge": pg.bridge, "vlan_id": pg.vlan_id, "peers": [], "switch": switch.name, "uplinks": list(switch.uplinks)}
            if pg_config not in portgroups:  # untagged port groups of one switch are one bridge
                portgroups.append(pg_config)
            continue
        peers = sorted(session.get(Host, link.host_id).address for link in pg.hosts if link.host_id != host.id and session.get(Host, link.host_id).address)
        portgroups.append({"bridge": pg.bridge, "vlan_id": pg.vlan_id, "peers": peers})
    return {"datastores": [{"id": ds_id, "path": path} for ds_id, path in mounts], "bridges": portgroups}


def mark_host_heartbeat(session: Session, host: Host, alive: bool) -> None:
    """The host monitor's verdict from the Redis heartbeat key."""
    if host.standby:
        return  # powered off by DPM: its silence is expected
    if alive and host.connection_state == ConnectionState.NOT_RESPONDING.value:
        host.connection_state = ConnectionState.CONNECTED.value
        record_event(session, "host.connected", f"host {host.name} is sending heartbeats again", object_type="host", object_id=host.id, object_name=host.name, reason="heartbeat_back")
        return
    if alive or host.connection_state != ConnectionState.CONNECTED.value:
        return
    host.connection_state = ConnectionState.NOT_RESPONDING.value
    record_event(session, "host.not_responding", f"host {host.name} stopped sending heartbeats", object_type="host", object_id=host.id, object_name=host.name, reason="heartbeat_lost")
