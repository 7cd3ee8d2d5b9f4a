"""Alarms: definitions (Alarm.Create on the scope object), triggered alarms per object (System.View), acknowledge
and reset (Alarm.Acknowledge).

The dashboard's tree reads ``GET /api/v1/alarms/triggered`` once (every alarm not green,
worst first) and badges the objects; an object's page reads
``/api/v1/alarms/triggered?object_type=cluster&object_id=3&descendants=true``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, status

from vcenter.api import v1
from vcenter.api.deps import CurrentUserInfo, DbDep, SettingsDep, requires
from vcenter.core.object_ids import ObjectIdPath, OptionalObjectIdQuery
from vcenter.schemas import alarms as s
from vcenter.services.monitoring import alarms as svc

router = v1.router(prefix="/api/v1/alarms", tags=["alarms"])

Viewer = Annotated[CurrentUserInfo, requires("System.View")]
# Checked on the scope object the definition is set on (and, for a change, the new one too).
Creator = Annotated[CurrentUserInfo, requires("Alarm.Create", deferred=True)]


def _on_scope(db, user: CurrentUserInfo, scope_type: str | None, scope_id: int | None) -> None:
    if scope_type in (None, "root"):
        user.require(db, None, None)
    elif scope_id is not None:
        user.require(db, scope_type, scope_id)


Acknowledger = Annotated[CurrentUserInfo, requires("Alarm.Acknowledge")]


@router.get("", response_model=list[s.AlarmRead], summary="Alarm definitions")
def list_alarms(db: DbDep, user: Viewer, target_type: str | None = Query(None, description="host | vm | datastore")) -> Any:
    return svc.list_definitions(db, target_type)


@router.post("", response_model=s.AlarmRead, status_code=status.HTTP_201_CREATED, summary="Define an alarm on objects at or below a scope object")
def create_alarm(body: s.AlarmCreate, db: DbDep, user: Creator) -> Any:
    _on_scope(db, user, body.scope_type, body.scope_id)
    return svc.create_definition(db, user.username, body.model_dump())


@router.get(
    "/triggered",
    response_model=list[s.TriggeredAlarmRead],
    summary="Triggered alarms (not green), worst first; of one object, or with descendants=true of everything below it; only those of objects the caller may see",
)
def triggered(
    db: DbDep,
    user: Annotated[CurrentUserInfo, requires("System.View", deferred=True)],
    object_type: str | None = Query(None, description="datacenter | cluster | host | vm | datastore"),
    object_id: OptionalObjectIdQuery = None,
    descendants: bool = Query(False, description="include the objects below it (hosts, VMs, datastores)"),
    acknowledged: bool = Query(True, description="false: leave acknowledged ones out"),
) -> Any:
    from vcenter.services.access import authz, users

    caller = users.get_user(db, user.id)
    return svc.triggered(db, object_type, object_id, descendants, acknowledged, visible=lambda kind: authz.visible_ids(db, caller, kind, token=user.token))


@router.post("/triggered/{state_id}/acknowledge", response_model=s.TriggeredAlarmRead, summary="Acknowledge a triggered alarm (its actions stay quiet until it gets worse)")
def acknowledge(state_id: ObjectIdPath, db: DbDep, user: Acknowledger) -> Any:
    return svc.acknowledge(db, user.username, state_id)


@router.post("/triggered/{state_id}/reset", response_model=s.TriggeredAlarmRead, summary="Reset a triggered alarm to green (it triggers again if its condition still holds)")
def reset(state_id: ObjectIdPath, db: DbDep, settings: SettingsDep, user: Acknowledger) -> Any:
    return svc.reset(db, user.username, state_id, settings)


@router.get("/{alarm_id}", response_model=s.AlarmRead, summary="One alarm definition")
def get_alarm(alarm_id: ObjectIdPath, db: DbDep, user: Viewer) -> Any:
    return svc.get_definition(db, alarm_id)


@router.patch("/{alarm_id}", response_model=s.AlarmRead, summary="Change an alarm definition (a changed condition starts green everywhere)")
def update_alarm(alarm_id: ObjectIdPath, body: s.AlarmUpdate, db: DbDep, user: Creator) -> Any:
    current = svc.get_definition(db, alarm_id)
    _on_scope(db, user, current.scope_type, current.scope_id)
    changes = body.model_dump(exclude_unset=True)
    if "scope_type" in changes or "scope_id" in changes:
        _on_scope(db, user, changes.get("scope_type", current.scope_type), changes.get("scope_id", current.scope_id))
    return svc.update_definition(db, user.username, alarm_id, changes)


@router.delete("/{alarm_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete an alarm definition and its states")
def delete_alarm(alarm_id: ObjectIdPath, db: DbDep, user: Creator) -> None:
    current = svc.get_definition(db, alarm_id)
    _on_scope(db, user, current.scope_type, current.scope_id)
    svc.delete_definition(db, user.username, alarm_id)
