"""EVC: a cluster CPU baseline that makes migration safe between CPU generations.

The operator enables it over chosen hosts (default: all of the cluster's); the baseline is
libvirt's CPU baseline of their CPU definitions, computed by one of the cluster's agents (a
Task). Then: hosts that cannot meet it are refused when they join (their report is refused
with EVC_INCOMPATIBLE), VMs created in the cluster get the baseline as their CPU definition,
and placement requires it of every host (ClusterSnapshot.evc).

Vocabulary: mode = the baseline's CPU model name (e.g. "Westmere"); features = the baseline
expanded by libvirt's CPU map (what a host must offer); cpu_xml = the baseline definition.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vcenter.core.errors import Conflict, Invalid
from vcenter.db.models import Cluster, Host, Task, VirtualMachine
from vcenter.domain.states import ConnectionState
from vcenter.messaging.commands import CpuBaselineArgs, CpuCompareArgs
from vcenter.messaging.results import CpuBaselineResult
from vcenter.services.inventory import inventory
from vcenter.services.tasks.events import record_event
from vcenter.services.tasks.tasks import ensure_idle, start_task


def enable(session: Session, user: str, cluster_id: int, host_ids: list[int] | None) -> Task:
    cluster: Cluster = inventory.get(session, "cluster", cluster_id)
    ensure_idle(session, "cluster", cluster.id)
    hosts = list(session.scalars(select(Host).where(Host.cluster_id == cluster_id).order_by(Host.id)))
    chosen = [h for h in hosts if not host_ids or h.id in host_ids]
    if host_ids and len(chosen) != len(set(host_ids)):
        raise Invalid("host_ids: every host must be in the cluster", code="INVALID_REFERENCE", details={"field": "host_ids"})
    unknown = [h.name for h in chosen if not h.cpu_xml]
    if not chosen or unknown:
        raise Conflict(f"no CPU definition reported yet by: {', '.join(unknown) or 'any host'}", code="HOST_CPU_UNKNOWN")
    agent = next((h for h in chosen if h.connection_state == ConnectionState.CONNECTED.value), None)
    if agent is None:
        raise Conflict("no connected host to compute the baseline", code="HOST_NOT_CONNECTED")
    return start_task(
        session,
        kind="cluster.evc",
        object_type="cluster",
        object_id=cluster.id,
        username=user,
        host_id=agent.id,
        params={"hosts": [h.id for h in chosen]},
        command="host.cpu_baseline",
        command_args=CpuBaselineArgs(cpu_xmls=[h.cpu_xml for h in chosen]).args(),
    )


def disable(session: Session, user: str, cluster_id: int) -> Cluster:
    cluster: Cluster = inventory.get(session, "cluster", cluster_id)
    cluster.settings = {**(cluster.settings or {}), "evc": {}}
    record_event(session, "cluster.evc.disabled", f"EVC disabled on cluster {cluster.name}", username=user, object_type="cluster", object_id=cluster.id, object_name=cluster.name)
    return cluster


def apply_baseline(session: Session, task: Task, result: CpuBaselineResult) -> None:
    cluster: Cluster = session.get(Cluster, task.object_id)
    evc = {"mode": result.model, "cpu_xml": result.xml, "features": sorted(result.features), "model_features": sorted(result.model_features), "hosts": task.params.get("hosts", [])}
    cluster.settings = {**(cluster.settings or {}), "evc": evc}
    record_event(
        session,
        "cluster.evc.enabled",
        f"EVC mode {evc['mode']} on cluster {cluster.name} ({len(evc['features'])} CPU features)",
        username=task.username,
        object_type="cluster",
        object_id=cluster.id,
        object_name=cluster.name,
        task_id=task.id,
    )


def vm_cpu_for(cluster: Cluster | None) -> dict[str, Any] | None:
    """The CPU definition a new VM of an EVC cluster gets."""
    evc = (cluster.settings or {}).get("evc") if cluster else None
    if not evc or not evc.get("mode"):
        return None
    return {"model": evc["mode"], "features_require": evc.get("model_features", []), "features_disable": []}


def parse_baseline(xml: str) -> tuple[str, list[str]]:
    """Model name and the features the baseline XML lists beyond its model."""
    root = ET.fromstring(xml)
    model = root.findtext("model") or ""
    features = [f.get("name") for f in root.findall("feature") if f.get("policy", "require") == "require" and f.get("name")]
    return model, features


def cpu_check(session: Session, user: str, vm_id: int, host_id: int) -> Task:
    """Ask the target host's agent whether the VM's CPU definition runs there (libvirt's own
    comparison against the host's real or declared CPU); the answer is the Task's result."""
    vm: VirtualMachine = inventory.get(session, "vm", vm_id)
    host: Host = inventory.get(session, "host", host_id)
    if not vm.cpu:
        raise Conflict(f"VM {vm.name} has no CPU definition: it runs with the hypervisor's default CPU", code="NO_CPU_DEFINITION")
    if host.connection_state != ConnectionState.CONNECTED.value:
        raise Conflict(f"host {host.name} is {host.connection_state}", code="HOST_NOT_CONNECTED")
    # Claims the pair, not the VM: a check runs alongside anything the VM is doing.
    return start_task(
        session,
        kind="vm.cpuCheck",
        object_type="cpucheck",
        object_id=vm.id * 100000 + host.id,
        username=user,
        host_id=host.id,
        params={"vm": vm.id},
        command="host.cpu_compare",
        command_args=CpuCompareArgs(cpu=vm.cpu).args(),
    )
