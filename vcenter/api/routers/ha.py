"""HA routes: a cluster's HA configuration, its failover capacity and status (host verdicts,
pending restarts, the monitor), and a VM's HA overrides."""

from typing import Annotated, Any


from vcenter.api import v1
from vcenter.api.deps import CurrentUserInfo, DbDep, requires
from vcenter.core.object_ids import ObjectIdPath
from vcenter.schemas.ha import HaCapacity, HaConfig, HaConfigUpdate, HaStatus, VmHaOverride
from vcenter.services.ha import ha

router = v1.router(prefix="/api/v1", tags=["ha"])


@router.get("/clusters/{cluster_id}/ha", response_model=HaConfig, summary="The cluster's HA configuration (with per-VM overrides)")
def get_ha(cluster_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("System.View", on="cluster")]) -> Any:
    return ha.get_config(db, cluster_id)


@router.patch(
    "/clusters/{cluster_id}/ha",
    response_model=HaConfig,
    summary="Change the cluster's HA configuration: enable, detection time, isolation response and delay, isolation addresses, admission policy, default restart priority, VM monitoring",
)
def patch_ha(cluster_id: ObjectIdPath, body: HaConfigUpdate, db: DbDep, user: Annotated[CurrentUserInfo, requires("Cluster.HA", on="cluster")]) -> Any:
    return ha.update_config(db, user.username, cluster_id, body.model_dump(exclude_unset=True))


@router.get("/clusters/{cluster_id}/ha/capacity", response_model=HaCapacity, summary="Current failover capacity under the admission policy: use, reserve, host failures tolerated")
def ha_capacity(cluster_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("System.View", on="cluster")]) -> Any:
    return ha.capacity(db, cluster_id)


@router.get("/clusters/{cluster_id}/ha/status", response_model=HaStatus, summary="HA's verdict on each host (with evidence), VMs waiting for a restart (with reasons), the monitor")
def ha_status(cluster_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("System.View", on="cluster")]) -> Any:
    return ha.status(db, cluster_id)


@router.get("/vms/{vm_id}/ha", response_model=VmHaOverride, summary="The VM's HA overrides (null: the cluster's default)")
def get_vm_ha(vm_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("System.View", on="vm")]) -> Any:
    return ha.vm_override(db, vm_id)


@router.put("/vms/{vm_id}/ha", response_model=VmHaOverride, summary="Set the VM's HA overrides: restart priority, isolation response, VM monitoring")
def put_vm_ha(vm_id: ObjectIdPath, body: VmHaOverride, db: DbDep, user: Annotated[CurrentUserInfo, requires("Cluster.HA", on="vm")]) -> Any:
    return ha.set_vm_override(db, user.username, vm_id, body.model_dump())
