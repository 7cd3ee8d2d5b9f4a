"""Alarms: definitions (CRUD), evaluation over the inventory, acknowledge and reset, and the
delivery of webhook actions.

Vocabulary in vcenter.domain.alarms (definition, scope, lineage, status, transition). The
evaluation is one transaction: every transition, its events and the webhooks it owes are
written together; webhooks are sent afterwards (``deliver_webhooks``), never inside it.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from vcenter.core.clock import utcnow
from vcenter.core.errors import Conflict, Invalid, NotFound, StaleVersion
from vcenter.core.settings import Settings
from vcenter.db.models import AlarmDefinition, AlarmState, AlarmWebhook, Datastore, Host, VirtualMachine
from vcenter.domain import alarms as a
from vcenter.domain.metrics import Aggregate
from vcenter.services.inventory import inventory
from vcenter.services.tasks.events import record_event
from vcenter.services.monitoring.metrics import latest

log = logging.getLogger(__name__)


# --- definitions ------------------------------------------------------------------------------
def _validated(session: Session, data: dict[str, Any]) -> dict[str, Any]:
    try:
        target = data["target_type"]
        expression = a.parse_expression(data.get("expression") or {}, target)
        a.validate_scope(target, data.get("scope_type", "root"), data.get("scope_id"))
        actions = a.parse_actions(data.get("actions") or [])
    except a.AlarmInvalid as exc:
        raise Invalid(str(exc), code="INVALID_ALARM", details={"field": exc.field}) from None
    if data.get("scope_type", "root") != "root":
        inventory.get(session, data["scope_type"], data["scope_id"])
    return {**data, "expression": expression.to_dict(), "actions": actions}


def _name_free(session: Session, name: str, except_id: int | None = None) -> None:
    other = session.scalar(select(AlarmDefinition.id).where(AlarmDefinition.name == name))
    if other is not None and other != except_id:
        raise Conflict(f"an alarm named {name!r} exists", code="ALARM_NAME_TAKEN")


def create_definition(session: Session, username: str, data: dict[str, Any]) -> AlarmDefinition:
    data = _validated(session, data)
    _name_free(session, data["name"])
    alarm = AlarmDefinition(
        name=data["name"],
        description=data.get("description") or "",
        target_type=data["target_type"],
        scope_type=data.get("scope_type", "root"),
        scope_id=data.get("scope_id"),
        enabled=data.get("enabled", True),
        expression=data["expression"],
        actions=data["actions"],
    )
    session.add(alarm)
    session.flush()
    record_event(
        session,
        "alarm.created",
        f"alarm {alarm.name} defined on {alarm.target_type} objects under {alarm.scope_type} {alarm.scope_id or ''}".strip(),
        username=username,
        object_type="alarm",
        object_id=alarm.id,
        object_name=alarm.name,
    )
    return alarm


def get_definition(session: Session, alarm_id: int) -> AlarmDefinition:
    alarm = session.get(AlarmDefinition, alarm_id)
    if alarm is None:
        raise NotFound(f"alarm {alarm_id} not found", code="ALARM_NOT_FOUND")
    return alarm


def update_definition(session: Session, username: str, alarm_id: int, changes: dict[str, Any]) -> AlarmDefinition:
    alarm = get_definition(session, alarm_id)
    version = changes.pop("version", None)
    if version is not None and version != alarm.version:
        raise StaleVersion(f"alarm {alarm.name} changed since version {version}; read it again")
    current = {
        "name": alarm.name,
        "description": alarm.description,
        "target_type": alarm.target_type,
        "scope_type": alarm.scope_type,
        "scope_id": alarm.scope_id,
        "enabled": alarm.enabled,
        "expression": alarm.expression,
        "actions": alarm.actions,
    }
    merged = _validated(session, {**current, **{k: v for k, v in changes.items() if v is not None or k == "scope_id"}})
    _name_free(session, merged["name"], alarm.id)
    retarget = (merged["target_type"], merged["scope_type"], merged["scope_id"], merged["expression"]) != (alarm.target_type, alarm.scope_type, alarm.scope_id, alarm.expression)
    for field in ("name", "description", "target_type", "scope_type", "scope_id", "enabled", "expression", "actions"):
        setattr(alarm, field, merged[field])
    if retarget or not alarm.enabled:
        # What the old condition triggered says nothing about the new one: start green.
        for state in session.scalars(select(AlarmState).where(AlarmState.alarm_id == alarm.id)):
            session.delete(state)
    record_event(session, "alarm.changed", f"alarm {alarm.name} changed", username=username, object_type="alarm", object_id=alarm.id, object_name=alarm.name)
    return alarm


def delete_definition(session: Session, username: str, alarm_id: int) -> None:
    alarm = get_definition(session, alarm_id)
    record_event(session, "alarm.deleted", f"alarm {alarm.name} deleted", username=username, object_type="alarm", object_id=alarm.id, object_name=alarm.name)
    session.delete(alarm)


def list_definitions(session: Session, target_type: str | None = None) -> list[AlarmDefinition]:
    query = select(AlarmDefinition).order_by(AlarmDefinition.id)
    if target_type:
        query = query.where(AlarmDefinition.target_type == target_type)
    return list(session.scalars(query))


# --- triggered alarms --------------------------------------------------------------------------
def state_read(state: AlarmState, alarm: AlarmDefinition) -> dict[str, Any]:
    return {
        "id": state.id,
        "alarm_id": alarm.id,
        "alarm_name": alarm.name,
        "object_type": state.object_type,
        "object_id": state.object_id,
        "object_name": state.object_name,
        "status": state.status,
        "message": state.message,
        "value": state.value,
        "triggered_at": state.triggered_at,
        "changed_at": state.changed_at,
        "acknowledged": state.acknowledged_at is not None,
        "acknowledged_at": state.acknowledged_at,
        "acknowledged_by": state.acknowledged_by,
    }


def _descendants(session: Session, object_type: str, object_id: int) -> set[tuple[str, int]]:
    """The object and every host, VM and datastore at or below it."""
    out = {(object_type, object_id)}
    if object_type in ("datacenter", "cluster"):
        column = "datacenter_id" if object_type == "datacenter" else "cluster_id"
        out |= {("host", i) for i in session.scalars(select(Host.id).where(getattr(Host, column) == object_id))}
        out |= {("vm", i) for i in session.scalars(select(VirtualMachine.id).where(getattr(VirtualMachine, column) == object_id))}
        if object_type == "datacenter":
            out |= {("datastore", i) for i in session.scalars(select(Datastore.id).where(Datastore.datacenter_id == object_id))}
    elif object_type == "host":
        out |= {("vm", i) for i in session.scalars(select(VirtualMachine.id).where(VirtualMachine.host_id == object_id))}
    return out


def triggered(
    session: Session,
    object_type: str | None = None,
    object_id: int | None = None,
    descendants: bool = False,
    include_acknowledged: bool = True,
    visible: Callable[[str], set[int] | None] | None = None,
) -> list[dict[str, Any]]:
    """Alarms not ok, worst first: all of them, or those of one object (and with
    ``descendants`` those of every object below it, as a cluster's tree node shows them).
    ``visible(kind)`` gives the ids of that kind the caller may see (None: all of them)."""
    query = select(AlarmState, AlarmDefinition).join(AlarmDefinition, AlarmDefinition.id == AlarmState.alarm_id).where(AlarmState.status != a.OK)
    if object_type is not None:
        if object_id is None:
            raise Invalid("object_id goes with object_type", code="INVALID_FILTER", details={"field": "object_id"})
        if object_type not in ("datacenter", "cluster", "host", "vm", "datastore"):
            raise Invalid(f"no alarms on {object_type} objects", code="INVALID_FILTER", details={"field": "object_type"})
        if descendants:
            wanted = _descendants(session, object_type, object_id)
            types = {t for t, _ in wanted}
            query = query.where(AlarmState.object_type.in_(types))
        else:
            wanted = {(object_type, object_id)}
            query = query.where(AlarmState.object_type == object_type, AlarmState.object_id == object_id)
    if not include_acknowledged:
        query = query.where(AlarmState.acknowledged_at.is_(None))
    rows = [(s, d) for s, d in session.execute(query).all() if object_type is None or (s.object_type, s.object_id) in wanted]
    if visible is not None:
        seen: dict[str, set[int] | None] = {}
        for kind in {s.object_type for s, _ in rows}:
            seen[kind] = visible(kind)
        rows = [(s, d) for s, d in rows if seen[s.object_type] is None or s.object_id in seen[s.object_type]]
    rows.sort(key=lambda r: (r[0].status != a.CRITICAL, -(r[0].triggered_at or r[0].changed_at).timestamp()))
    return [state_read(s, d) for s, d in rows]


def _state(session: Session, state_id: int) -> tuple[AlarmState, AlarmDefinition]:
    state = session.get(AlarmState, state_id)
    if state is None:
        raise NotFound(f"triggered alarm {state_id} not found", code="ALARM_STATE_NOT_FOUND")
    return state, session.get(AlarmDefinition, state.alarm_id)


def acknowledge(session: Session, username: str, state_id: int) -> dict[str, Any]:
    state, alarm = _state(session, state_id)
    if state.status == a.OK:
        raise Conflict(f"alarm {alarm.name} on {state.object_name} is not triggered", code="ALARM_NOT_TRIGGERED")
    if state.acknowledged_at is None:
        state.acknowledged_at = utcnow()
        state.acknowledged_by = username
        record_event(
            session,
            "alarm.acknowledged",
            f"alarm {alarm.name} on {state.object_type} {state.object_name} acknowledged",
            username=username,
            object_type=state.object_type,
            object_id=state.object_id,
            object_name=state.object_name,
            reason=alarm.name,
            data={"alarm_id": alarm.id, "status": state.status},
        )
    return state_read(state, alarm)


def reset(session: Session, username: str, state_id: int, settings: Settings) -> dict[str, Any]:
    """Reset to green by hand; the next evaluation triggers it again if its condition holds."""
    state, alarm = _state(session, state_id)
    if state.status == a.OK:
        raise Conflict(f"alarm {alarm.name} on {state.object_name} is not triggered", code="ALARM_NOT_TRIGGERED")
    previous = state.status
    _apply(session, settings, alarm, state, a.OK, state.value, f"reset by {username}", utcnow(), fire=True, username=username)
    record_event(
        session,
        "alarm.reset",
        f"alarm {alarm.name} on {state.object_type} {state.object_name} reset to green (was {previous})",
        username=username,
        object_type=state.object_type,
        object_id=state.object_id,
        object_name=state.object_name,
        reason=alarm.name,
        data={"alarm_id": alarm.id, "from": previous},
    )
    return state_read(state, alarm)


# --- evaluation --------------------------------------------------------------------------------
def _objects(session: Session, target_type: str) -> list[dict[str, Any]]:
    """Objects of a type with their lineage and the facts the state conditions read."""
    out = []
    if target_type == "host":
        for h in session.execute(select(Host.id, Host.name, Host.datacenter_id, Host.cluster_id, Host.connection_state, Host.standby)):
            lineage = [("host", h.id)] + ([("cluster", h.cluster_id)] if h.cluster_id else []) + [("datacenter", h.datacenter_id), ("root", None)]
            out.append({"type": "host", "id": h.id, "name": h.name, "lineage": lineage, "facts": {"connection_state": h.connection_state, "standby": h.standby}})
    elif target_type == "vm":
        connected = set(session.scalars(select(Host.id).where(Host.connection_state == "connected")))
        for v in session.execute(
            select(
                VirtualMachine.id, VirtualMachine.name, VirtualMachine.datacenter_id, VirtualMachine.cluster_id, VirtualMachine.host_id, VirtualMachine.power_state, VirtualMachine.guest_heartbeat_at
            )
        ):
            lineage = [("vm", v.id)] + ([("host", v.host_id)] if v.host_id else []) + ([("cluster", v.cluster_id)] if v.cluster_id else []) + [("datacenter", v.datacenter_id), ("root", None)]
            out.append(
                {
                    "type": "vm",
                    "id": v.id,
                    "name": v.name,
                    "lineage": lineage,
                    "facts": {"power_state": v.power_state, "host_connected": v.host_id in connected, "guest_heartbeat_s": v.guest_heartbeat_at.timestamp() if v.guest_heartbeat_at else None},
                }
            )
    elif target_type == "datastore":
        for d in session.execute(select(Datastore.id, Datastore.name, Datastore.datacenter_id, Datastore.capacity_bytes, Datastore.free_bytes)):
            out.append(
                {
                    "type": "datastore",
                    "id": d.id,
                    "name": d.name,
                    "lineage": [("datastore", d.id), ("datacenter", d.datacenter_id), ("root", None)],
                    "facts": {"capacity_bytes": d.capacity_bytes, "free_bytes": d.free_bytes},
                }
            )
    return out


def _apply(
    session: Session, settings: Settings, alarm: AlarmDefinition, state: AlarmState, new: str, value: float | None, message: str, now: datetime, *, fire: bool, username: str = "system"
) -> None:
    previous = state.status
    state.status = new
    state.value = value
    state.message = message
    state.changed_at = now
    if new == a.OK:
        state.acknowledged_at = None
        state.acknowledged_by = None
    elif previous == a.OK:
        state.triggered_at = now
    if not fire:
        return
    what = "cleared" if new == a.OK else "triggered"
    for action in alarm.actions or []:
        if action.get("type") == "event":
            record_event(
                session,
                f"alarm.{what}",
                f"alarm {alarm.name} on {state.object_type} {state.object_name}: {previous} -> {new} ({message})",
                username=username,
                object_type=state.object_type,
                object_id=state.object_id,
                object_name=state.object_name,
                reason=alarm.name,
                data={"alarm_id": alarm.id, "from": previous, "to": new, "value": value},
            )
        elif action.get("type") == "webhook":
            session.add(
                AlarmWebhook(
                    alarm_id=alarm.id,
                    url=action["url"],
                    next_attempt_at=now,
                    payload={
                        "alarm": {"id": alarm.id, "name": alarm.name},
                        "object": {"type": state.object_type, "id": state.object_id, "name": state.object_name},
                        "from": previous,
                        "to": new,
                        "value": value,
                        "message": message,
                        "at": now.isoformat(),
                        "by": username,
                    },
                )
            )


def evaluate(session: Session, settings: Settings, now: datetime | None = None) -> dict[str, int]:
    """Judge every enabled definition on every object in its scope; apply the transitions."""
    now = now or utcnow()
    now_s = now.timestamp()
    definitions = [d for d in session.scalars(select(AlarmDefinition).where(AlarmDefinition.enabled.is_(True)))]
    if not definitions:
        return {"definitions": 0, "transitions": 0}
    states = {(s.alarm_id, s.object_type, s.object_id): s for s in session.scalars(select(AlarmState).where(AlarmState.alarm_id.in_([d.id for d in definitions])))}
    objects: dict[str, list[dict[str, Any]]] = {}
    samples: dict[str, dict[int, list[tuple[float, dict[str, Any]]]]] = {}
    period = settings.metrics_sample_period
    transitions = 0
    for alarm in definitions:
        try:
            expr = a.parse_expression(alarm.expression, alarm.target_type)
        except a.AlarmInvalid as exc:
            log.warning("alarm %s skipped: %s", alarm.name, exc)
            continue
        if alarm.target_type not in objects:
            objects[alarm.target_type] = _objects(session, alarm.target_type)
        if isinstance(expr, a.MetricExpression) and alarm.target_type not in samples:
            longest = max((float(d.expression.get("for_s") or 0) for d in definitions if d.target_type == alarm.target_type and d.expression.get("type") == "metric"), default=0.0)
            samples[alarm.target_type] = latest(session, alarm.target_type, now - timedelta(seconds=longest + 3 * period))
        seen: set[tuple[str, int]] = set()
        for obj in objects[alarm.target_type]:
            if not a.in_scope(alarm.scope_type, alarm.scope_id, obj["lineage"]):
                continue
            seen.add((obj["type"], obj["id"]))
            if isinstance(expr, a.MetricExpression):
                rows = samples[alarm.target_type].get(obj["id"], [])
                points = [(t, Aggregate.decode(v[expr.counter]).avg) for t, v in rows if v.get(expr.counter) is not None]
                judged = a.metric_status(expr, points, now_s, period)
                if judged is None:
                    continue
                new, value = judged
                message = f"{expr.counter} {value:g} ({expr.operator} {expr.critical if new == a.CRITICAL else expr.warning} for {expr.for_s:g} s)" if new != a.OK else f"{expr.counter} {value:g}"
            else:
                if obj["type"] == "host" and obj["facts"].get("standby"):
                    new, value, message = a.OK, None, "in standby"
                else:
                    new, value, message = a.state_status(expr, obj["facts"], now_s, settings.alarm_vm_heartbeat_timeout)
            key = (alarm.id, obj["type"], obj["id"])
            state = states.get(key)
            previous = state.status if state is not None else a.OK
            step = a.transition(previous, new, state is not None and state.acknowledged_at is not None)
            if not step.changed:
                if state is not None and state.status != a.OK and value is not None:
                    state.value = value
                continue
            if state is None:
                state = AlarmState(alarm_id=alarm.id, object_type=obj["type"], object_id=obj["id"], object_name=obj["name"], status=a.OK, message="")
                session.add(state)
                states[key] = state
            keep_ack = step.acknowledged
            acknowledged = (state.acknowledged_at, state.acknowledged_by)
            _apply(session, settings, alarm, state, step.status, value, message, now, fire=step.fire)
            if keep_ack:
                state.acknowledged_at, state.acknowledged_by = acknowledged
            else:
                state.acknowledged_at = state.acknowledged_by = None
            transitions += 1
        # States of objects gone (deleted) or moved out of the scope say nothing any more.
        for key in [k for k in states if k[0] == alarm.id and (k[1], k[2]) not in seen]:
            session.delete(states.pop(key))
    return {"definitions": len(definitions), "transitions": transitions}


# --- webhooks ----------------------------------------------------------------------------------
def _webhook_target_refusal(url: str, settings: Settings) -> str | None:
    """Why a webhook to ``url`` is not sent: every address its host resolves to is judged
    (vcenter.domain.alarms.webhook_address_refusal); a name that does not resolve is left to the
    POST to fail. The check runs right before the POST (a name may point elsewhere later; the
    window between the two lookups is what remains of DNS rebinding)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").strip("[]")
    allowed = [n.strip() for n in settings.alarm_webhook_allowed_networks.split(",") if n.strip()]
    try:
        infos = socket.getaddrinfo(host, parts.port or (443 if parts.scheme == "https" else 80), proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return None
    for info in infos:
        refusal = a.webhook_address_refusal(str(info[4][0]), allowed)
        if refusal is not None:
            return refusal
    return None


def deliver_webhooks(
    transaction: Callable[[], AbstractContextManager[Session]],
    settings: Settings,
    now: Callable[[], datetime] = utcnow,
    limit: int = 50,
    client: httpx.Client | None = None,
    budget_s: float | None = None,
) -> dict[str, int]:
    """Send the webhooks that are due, each POSTed as JSON; a 2xx answer delivers it, anything
    else is retried after a doubling delay until ``alarm_webhook_attempts`` tries. A row is
    leased (its next attempt pushed past the timeout) before it is sent, so two deliverers do
    not send it at once. A pass stops sending after ``budget_s`` (default: twice the webhook
    timeout) so that dead endpoints never hold a worker for long; the rest wait for the next."""
    budget_s = settings.alarm_webhook_timeout * 2 if budget_s is None else budget_s
    began = time.monotonic()
    with transaction() as session:
        due = list(session.scalars(select(AlarmWebhook).where(AlarmWebhook.state == "pending", AlarmWebhook.next_attempt_at <= now()).order_by(AlarmWebhook.id).limit(limit)))
        jobs = []
        for hook in due:
            hook.attempts += 1
            hook.next_attempt_at = now() + timedelta(seconds=settings.alarm_webhook_timeout * 2)
            jobs.append((hook.id, hook.url, hook.payload, hook.attempts))
    if not jobs:
        return {"delivered": 0, "failed": 0, "retrying": 0}
    results: list[tuple[int, int, str | None, bool]] = []
    own = client is None
    client = client or httpx.Client(timeout=settings.alarm_webhook_timeout, follow_redirects=False)
    try:
        for hook_id, url, payload, attempts in jobs:
            if time.monotonic() - began > budget_s:
                results.append((hook_id, attempts, None, False))
                continue
            refusal = _webhook_target_refusal(url, settings)
            if refusal is not None:
                # Not a passing failure: the same URL would be refused on every retry.
                results.append((hook_id, settings.alarm_webhook_attempts, f"WEBHOOK_ADDRESS_REFUSED: {refusal}", True))
                continue
            try:
                response = client.post(url, json=payload, headers={"User-Agent": "virtcenter-alarms"})
                error = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            results.append((hook_id, attempts, error, True))
    finally:
        if own:
            client.close()
    counts = {"delivered": 0, "failed": 0, "retrying": 0}
    with transaction() as session:
        for hook_id, attempts, error, sent in results:
            hook = session.get(AlarmWebhook, hook_id)
            if hook is None:
                continue
            if not sent:  # out of time this pass: give the attempt back
                hook.attempts, hook.next_attempt_at = attempts - 1, now()
                continue
            if error is None:
                hook.state, hook.delivered_at, hook.last_error = "delivered", now(), None
                counts["delivered"] += 1
            elif attempts >= settings.alarm_webhook_attempts:
                hook.state, hook.last_error = "failed", error
                counts["failed"] += 1
                record_event(
                    session,
                    "alarm.webhook_failed",
                    f"webhook to {hook.url} given up after {attempts} attempts: {error}",
                    reason="WEBHOOK_FAILED",
                    data={"alarm_id": hook.alarm_id, "webhook_id": hook.id},
                )
            else:
                hook.last_error = error
                hook.next_attempt_at = now() + timedelta(seconds=a.webhook_delay(attempts, settings.alarm_webhook_retry_delay))
                counts["retrying"] += 1
    return counts


def webhooks(session: Session, alarm_id: int | None = None) -> Iterator[AlarmWebhook]:
    query = select(AlarmWebhook).order_by(AlarmWebhook.id)
    if alarm_id is not None:
        query = query.where(AlarmWebhook.alarm_id == alarm_id)
    return iter(session.scalars(query))
