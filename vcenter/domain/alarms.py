"""Alarms: what a definition says, whether it holds on an object, and how its state moves.

Vocabulary (vCenter's):
- definition: a named condition on objects of one *target type* (host, vm, datastore), set on
  a *scope* object (the root, a datacenter, a cluster, a host...) and inherited by every
  object of the target type at or below it.
- expression: ``metric`` (a performance counter above/below a warning and/or critical
  threshold for at least ``for_s`` seconds, judged on real-time samples) or ``state`` (a
  condition on the object's state: host.not_responding, vm.heartbeat_lost, datastore.usage).
- status of an alarm on an object: ok (green), warning (yellow), critical (red). A triggered
  alarm is one not ok; an operator may *acknowledge* it (it stays triggered, its actions are
  quiet until it gets worse) or *reset* it to ok by hand (a condition still true triggers it
  again at the next evaluation).
- transition: a change of status; actions (an event, a webhook POST) run on transitions.
- lineage: an object with its ancestors up to ("root", None), nearest first.

Pure: times are epoch seconds given by the caller; no I/O.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from vcenter.domain.metrics import COUNTERS

OK = "ok"
WARNING = "warning"
CRITICAL = "critical"
STATUSES = (OK, WARNING, CRITICAL)
_RANK = {OK: 0, WARNING: 1, CRITICAL: 2}

TARGET_TYPES = ("host", "vm", "datastore")
SCOPE_TYPES = ("root", "datacenter", "cluster", "host", "vm", "datastore")
# Which scope objects can have an object of the target type at or below them.
_SCOPES_OF = {
    "host": ("root", "datacenter", "cluster", "host"),
    "vm": ("root", "datacenter", "cluster", "host", "vm"),
    "datastore": ("root", "datacenter", "datastore"),
}
STATE_CONDITIONS = {
    "host.not_responding": ("host", "the host stopped sending heartbeats"),
    "vm.heartbeat_lost": ("vm", "a powered-on VM's guest heartbeat is older than the heartbeat timeout"),
    "datastore.usage": ("datastore", "the datastore's used space in percent is above the thresholds"),
}
MAX_FOR_S = 3600.0  # metric alarms are judged on real-time samples, kept for an hour


class AlarmInvalid(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class MetricExpression:
    counter: str
    operator: str  # above | below
    warning: float | None
    critical: float | None
    for_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"type": "metric", "counter": self.counter, "operator": self.operator, "warning": self.warning, "critical": self.critical, "for_s": self.for_s}


@dataclass(frozen=True)
class StateExpression:
    condition: str
    severity: str  # for yes/no conditions
    warning: float | None = None  # datastore.usage thresholds (percent)
    critical: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "state", "condition": self.condition}
        if self.condition == "datastore.usage":
            out.update(warning=self.warning, critical=self.critical)
        else:
            out["severity"] = self.severity
        return out


Expression = MetricExpression | StateExpression


def _number(raw: Mapping[str, Any], key: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AlarmInvalid(f"expression.{key}", f"{key} must be a finite number")
    return float(value)


def _thresholds(raw: Mapping[str, Any], operator: str) -> tuple[float | None, float | None]:
    warning, critical = _number(raw, "warning"), _number(raw, "critical")
    if warning is None and critical is None:
        raise AlarmInvalid("expression.warning", "give a warning threshold, a critical threshold or both")
    if warning is not None and critical is not None:
        if (operator == "above" and critical < warning) or (operator == "below" and critical > warning):
            raise AlarmInvalid("expression.critical", f"the critical threshold must be at least as far {operator} as the warning one")
    return warning, critical


def parse_expression(raw: Mapping[str, Any], target_type: str) -> Expression:
    """Validate an expression document for objects of ``target_type``."""
    if target_type not in TARGET_TYPES:
        raise AlarmInvalid("target_type", f"alarms apply to {', '.join(TARGET_TYPES)}")
    kind = raw.get("type")
    if kind == "metric":
        counter = raw.get("counter")
        if counter not in COUNTERS:
            raise AlarmInvalid("expression.counter", f"unknown counter {counter!r}; see /api/v1/metrics/counters")
        if target_type not in COUNTERS[counter].object_types:
            raise AlarmInvalid("expression.counter", f"{target_type} objects have no counter {counter}")
        operator = raw.get("operator", "above")
        if operator not in ("above", "below"):
            raise AlarmInvalid("expression.operator", "operator is above or below")
        warning, critical = _thresholds(raw, operator)
        for_s = _number(raw, "for_s") or 0.0
        if not 0 <= for_s <= MAX_FOR_S:
            raise AlarmInvalid("expression.for_s", f"for_s is between 0 and {MAX_FOR_S:.0f} s (real-time samples are kept an hour)")
        return MetricExpression(counter, operator, warning, critical, for_s)
    if kind == "state":
        condition = raw.get("condition")
        if condition not in STATE_CONDITIONS:
            raise AlarmInvalid("expression.condition", f"condition is one of {', '.join(STATE_CONDITIONS)}")
        if STATE_CONDITIONS[condition][0] != target_type:
            raise AlarmInvalid("expression.condition", f"{condition} applies to {STATE_CONDITIONS[condition][0]} objects, not {target_type}")
        if condition == "datastore.usage":
            warning, critical = _thresholds(raw, "above")
            for value in (warning, critical):
                if value is not None and not 0 <= value <= 100:
                    raise AlarmInvalid("expression.warning", "datastore usage thresholds are percentages")
            return StateExpression(condition, CRITICAL, warning, critical)
        severity = raw.get("severity", CRITICAL)
        if severity not in (WARNING, CRITICAL):
            raise AlarmInvalid("expression.severity", "severity is warning or critical")
        return StateExpression(condition, severity)
    raise AlarmInvalid("expression.type", "expression type is metric or state")


def validate_scope(target_type: str, scope_type: str, scope_id: int | None) -> None:
    if scope_type not in SCOPE_TYPES:
        raise AlarmInvalid("scope_type", f"scope_type is one of {', '.join(SCOPE_TYPES)}")
    if scope_type not in _SCOPES_OF.get(target_type, ()):
        raise AlarmInvalid("scope_type", f"no {target_type} is at or below a {scope_type}")
    if (scope_type == "root") != (scope_id is None):
        raise AlarmInvalid("scope_id", "scope_id names the scope object (none for the root)")


def validate_webhook_url(url: str) -> str:
    """An absolute http(s) URL with a host, no credentials in it, at most 2048 characters."""
    if not isinstance(url, str) or len(url) > 2048:
        raise AlarmInvalid("actions.url", "the webhook URL is a string of at most 2048 characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise AlarmInvalid("actions.url", f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise AlarmInvalid("actions.url", "the webhook URL must be http or https")
    if not parts.hostname:
        raise AlarmInvalid("actions.url", "the webhook URL has no host")
    if parts.username is not None or parts.password is not None:
        raise AlarmInvalid("actions.url", "put no credentials in the webhook URL")
    if any(c.isspace() for c in url):
        raise AlarmInvalid("actions.url", "the webhook URL contains whitespace")
    del port
    return url


def webhook_address_refusal(address: str, allowed: Sequence[str] = ()) -> str | None:
    """Why the server must not POST a webhook to ``address`` (an IP the URL's host resolved to),
    or None. A webhook is a request the server makes on a user's behalf: without this, anyone
    allowed to define an alarm could reach what only the server reaches — its own loopback
    services, a cloud metadata endpoint on the link-local range. Refused unless an ``allowed``
    network (the setting ``alarm_webhook_allowed_networks``) holds it: loopback, link-local,
    unspecified, multicast and reserved addresses (IPv4-mapped IPv6 judged as IPv4). Private
    networks are allowed: that is where an operator's receivers live."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for network in allowed:
        try:
            if ip in ipaddress.ip_network(network, strict=False):
                return None
        except ValueError:
            continue
    for reason, refused in (("loopback", ip.is_loopback), ("link-local", ip.is_link_local), ("unspecified", ip.is_unspecified), ("multicast", ip.is_multicast), ("reserved", ip.is_reserved)):
        if refused:
            return f"{ip} is a {reason} address"
    return None


def parse_actions(raw: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if not isinstance(raw, (list, tuple)):
        raise AlarmInvalid("actions", "actions is a list")
    out = []
    for action in raw:
        kind = action.get("type") if isinstance(action, Mapping) else None
        if kind == "event":
            out.append({"type": "event"})
        elif kind == "webhook":
            out.append({"type": "webhook", "url": validate_webhook_url(action.get("url"))})
        else:
            raise AlarmInvalid("actions.type", "an action is {type: event} or {type: webhook, url}")
    return out


def in_scope(scope_type: str, scope_id: int | None, lineage: Sequence[tuple[str, int | None]]) -> bool:
    """Whether a definition set on (scope_type, scope_id) applies to the object of ``lineage``."""
    if scope_type == "root":
        return True
    return (scope_type, scope_id) in lineage


def _level(value: float, expr: MetricExpression | StateExpression, operator: str = "above") -> str:
    def beyond(threshold: float | None) -> bool:
        if threshold is None:
            return False
        return value > threshold if operator == "above" else value < threshold

    if beyond(expr.critical):
        return CRITICAL
    if beyond(expr.warning):
        return WARNING
    return OK


def metric_status(expr: MetricExpression, points: Sequence[tuple[float, float]], now_s: float, sample_period_s: float) -> tuple[str, float] | None:
    """(status, latest value) from real-time points (at, value), or None when the samples
    say nothing (none recent: the status stays as it was). A level holds when every sample
    of the last ``for_s`` seconds is beyond its threshold and the samples reach back that far."""
    ordered = sorted(p for p in points if p[0] <= now_s)
    if not ordered or ordered[-1][0] < now_s - 3 * sample_period_s:
        return None
    latest = ordered[-1][1]
    window_start = now_s - expr.for_s
    window = [v for t, v in ordered if t >= window_start] or [latest]
    covered = ordered[0][0] <= window_start + sample_period_s
    if not covered:
        # Not enough history to say it held for for_s: it may still be ok.
        return (OK, latest) if _level(latest, expr, expr.operator) == OK else None
    levels = [_level(v, expr, expr.operator) for v in window]
    status = min(levels, key=lambda level: _RANK[level])  # held throughout = the weakest level seen
    return status, latest


def state_status(expr: StateExpression, facts: Mapping[str, Any], now_s: float, heartbeat_timeout_s: float) -> tuple[str | None, float | None, str]:
    """(status, value, why) of a state condition on one object's facts; status None when the
    facts cannot tell (a VM on a host that stopped reporting: its host's alarm says so)."""
    if expr.condition == "host.not_responding":
        holds = facts.get("connection_state") == "notResponding"
        return (expr.severity if holds else OK), None, ("not responding" if holds else f"connection {facts.get('connection_state')}")
    if expr.condition == "vm.heartbeat_lost":
        beat = facts.get("guest_heartbeat_s")
        if facts.get("host_connected") is False:
            return None, None, "its host is not reporting"
        if facts.get("power_state") != "poweredOn" or beat is None:
            return OK, None, "no guest heartbeat expected"
        age = now_s - float(beat)
        holds = age > heartbeat_timeout_s
        return (expr.severity if holds else OK), round(age, 1), f"last guest heartbeat {age:.0f} s ago"
    if expr.condition == "datastore.usage":
        capacity = facts.get("capacity_bytes") or 0
        if capacity <= 0:
            return OK, None, "capacity unknown"
        used = 100.0 * (capacity - (facts.get("free_bytes") or 0)) / capacity
        return _level(used, expr), round(used, 2), f"{used:.1f} % used"
    raise ValueError(expr.condition)


@dataclass(frozen=True)
class Transition:
    status: str
    changed: bool
    acknowledged: bool  # whether the acknowledgement survives
    fire: bool  # run the definition's actions


def transition(previous: str, new: str | None, acknowledged: bool) -> Transition:
    """The next state of an alarm on an object. An acknowledgement is dropped when the alarm
    gets worse or turns green; actions fire on every change (an acknowledged alarm easing
    from critical to warning stays quiet)."""
    if new is None or new == previous:
        return Transition(previous, False, acknowledged, False)
    worse = _RANK[new] > _RANK[previous]
    keep_ack = acknowledged and not worse and new != OK
    return Transition(new, True, keep_ack, not (acknowledged and not worse and new != OK))


def webhook_delay(attempts: int, base_delay_s: float) -> float:
    """Wait before the next try after ``attempts`` failed ones (doubling)."""
    return base_delay_s * float(2 ** max(0, attempts - 1))
