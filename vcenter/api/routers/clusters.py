"""Cluster routes of the placement engine: DRS rules, placement dry run, rule violations and
resource entitlements."""

from typing import Annotated, Any

from fastapi import status

from vcenter.api import v1
from vcenter.api.deps import CurrentUserInfo, DbDep, SettingsDep, requires
from vcenter.core.object_ids import ObjectIdPath
from vcenter.schemas import inventory as s
from vcenter.schemas import placement as pl
from vcenter.services.drs import dpm, drs
from vcenter.services.compute import evc, placement

router = v1.router(prefix="/api/v1/clusters/{cluster_id}", tags=["clusters"])


@router.get("/rules", response_model=list[s.RuleRead], summary="List the cluster's DRS rules")
def list_rules(cluster_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("System.View", on="cluster")]) -> Any:
    return placement.list_rules(db, cluster_id)


@router.post("/rules", response_model=s.RuleRead, status_code=status.HTTP_201_CREATED, summary="Create a rule; one that contradicts another is refused naming both")
def create_rule(cluster_id: ObjectIdPath, body: s.RuleCreate, db: DbDep, user: Annotated[CurrentUserInfo, requires("Cluster.Modify", on="cluster")]) -> Any:
    return placement.create_rule(db, user.username, cluster_id, body.model_dump())


@router.get("/rules/{rule_id}", response_model=s.RuleRead, summary="Get a rule")
def get_rule(cluster_id: ObjectIdPath, rule_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("System.View", on="cluster")]) -> Any:
    return placement.get_rule(db, cluster_id, rule_id)


@router.patch("/rules/{rule_id}", response_model=s.RuleRead, summary="Update a rule")
def update_rule(cluster_id: ObjectIdPath, rule_id: ObjectIdPath, body: s.RuleUpdate, db: DbDep, user: Annotated[CurrentUserInfo, requires("Cluster.Modify", on="cluster")]) -> Any:
    return placement.update_rule(db, user.username, cluster_id, rule_id, body.model_dump(exclude_unset=True))


@router.delete("/rules/{rule_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a rule")
def delete_rule(cluster_id: ObjectIdPath, rule_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("Cluster.Modify", on="cluster")]) -> None:
    placement.delete_rule(db, user.username, cluster_id, rule_id)


@router.get("/rules-violations", response_model=list[pl.RuleViolation], summary="Rules the current placement breaks")
def violations(cluster_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("System.View", on="cluster")]) -> Any:
    return placement.violations(db, cluster_id)


@router.post("/placement", response_model=pl.PlacementResult, summary="Dry run: where would this VM go, with every host's reason (changes nothing)")
def dry_run(cluster_id: ObjectIdPath, body: s.PlacementRequest, db: DbDep, user: Annotated[CurrentUserInfo, requires("System.View", on="cluster")]) -> Any:
    return placement.dry_run(db, cluster_id, body.model_dump())


@router.get("/entitlements", response_model=pl.Entitlements, summary="Each running VM's CPU and memory entitlement from the resource pool hierarchy")
def entitlements(cluster_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("System.View", on="cluster")]) -> Any:
    return placement.entitlements(db, cluster_id)


@router.post(
    "/evc", response_model=s.TaskRead, status_code=status.HTTP_202_ACCEPTED, summary="Enable EVC: libvirt's CPU baseline of the chosen hosts (default: all) becomes the cluster's CPU (a Task)"
)
def enable_evc(cluster_id: ObjectIdPath, body: s.EvcRequest, db: DbDep, user: Annotated[CurrentUserInfo, requires("Cluster.Modify", on="cluster")]) -> Any:
    return evc.enable(db, user.username, cluster_id, body.host_ids)


@router.delete("/evc", response_model=s.ClusterRead, summary="Disable EVC")
def disable_evc(cluster_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("Cluster.Modify", on="cluster")]) -> Any:
    return evc.disable(db, user.username, cluster_id)


@router.post("/drs/run", response_model=pl.DrsRun, summary="Run DRS now: recommendations with reasons as numbers; applied at once when fully automated")
def drs_run(cluster_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("Cluster.DRS", on="cluster")], settings: SettingsDep) -> Any:
    return drs.run(db, user.username, cluster_id, settings)


@router.get("/drs/recommendations", response_model=list[pl.DrsRecommendationRead], summary="DRS recommendations (state: pending, applied, dismissed, stale)")
def drs_recommendations(cluster_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("System.View", on="cluster")], state: str | None = None) -> Any:
    return drs.list_recommendations(db, cluster_id, state)


@router.post("/drs/recommendations/{rec_id}/apply", response_model=pl.DrsRecommendationRead, summary="Apply a recommendation: a VMotion Task")
def drs_apply(cluster_id: ObjectIdPath, rec_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("Cluster.DRS", on="cluster")], settings: SettingsDep) -> Any:
    return drs.recommendation_read(drs.apply(db, user.username, cluster_id, rec_id, settings))


@router.post("/drs/recommendations/{rec_id}/dismiss", response_model=pl.DrsRecommendationRead, summary="Dismiss a recommendation")
def drs_dismiss(cluster_id: ObjectIdPath, rec_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("Cluster.DRS", on="cluster")]) -> Any:
    return drs.recommendation_read(drs.dismiss(db, user.username, cluster_id, rec_id))


@router.post(
    "/drs/whatif", response_model=pl.WhatIf, summary="What if a host fails, enters maintenance, powers off, a VM's demand changes or a rule is added: the plan and the balance, changing nothing"
)
def drs_whatif(cluster_id: ObjectIdPath, body: s.WhatIfChange, db: DbDep, user: Annotated[CurrentUserInfo, requires("System.View", on="cluster")]) -> Any:
    return drs.whatif(db, cluster_id, body.model_dump())


@router.post("/dpm/run", response_model=pl.DpmRun, summary="Run DPM now: sample demand, decide, and power hosts off/on when fully automated")
def dpm_run(cluster_id: ObjectIdPath, db: DbDep, user: Annotated[CurrentUserInfo, requires("Cluster.DRS", on="cluster")], settings: SettingsDep) -> Any:
    return dpm.run(db, user.username, cluster_id, settings)
