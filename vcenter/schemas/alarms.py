"""Request and response models of performance statistics and alarms.

An alarm's ``expression`` and ``actions`` are checked by vcenter.domain.alarms (the one place
that knows their rules); here they are plain documents, so a mistake comes back as
422 INVALID_ALARM naming the field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from vcenter.core.object_ids import Int32, ObjectIdField
from vcenter.schemas.base import ExampleModel, RequestModel, ResponseModel

TargetType = Literal["host", "vm", "datastore"]
ScopeType = Literal["root", "datacenter", "cluster", "host", "vm", "datastore"]


class AlarmCreate(RequestModel):
    name: str = Field(min_length=1, max_length=80)
    description: str = Field("", max_length=2000)
    target_type: TargetType
    scope_type: ScopeType = "root"
    scope_id: ObjectIdField | None = None
    enabled: bool = True
    expression: dict[str, Any] = Field(
        description='{"type": "metric", "counter": "cpu.usage", "operator": "above", '
        '"warning": 80, "critical": 95, "for_s": 300} or {"type": "state", '
        '"condition": "host.not_responding"|"vm.heartbeat_lost", "severity": '
        '"warning"|"critical"} or {"type": "state", "condition": "datastore.usage", '
        '"warning": 80, "critical": 90}'
    )
    actions: list[dict[str, Any]] = Field(default_factory=lambda: [{"type": "event"}], description='[{"type": "event"}, {"type": "webhook", "url": "https://..."}]')


class AlarmUpdate(RequestModel):
    name: str | None = Field(None, min_length=1, max_length=80)
    description: str | None = Field(None, max_length=2000)
    target_type: TargetType | None = None
    scope_type: ScopeType | None = None
    scope_id: ObjectIdField | None = None
    enabled: bool | None = None
    expression: dict[str, Any] | None = None
    actions: list[dict[str, Any]] | None = None
    version: Int32 | None = Field(None, description="the version read; a stale one is refused (409 STALE_VERSION)")


class AlarmRead(ResponseModel):
    id: int
    name: str
    description: str
    target_type: str
    scope_type: str
    scope_id: int | None
    enabled: bool
    expression: dict[str, Any]
    actions: list[dict[str, Any]]
    builtin: bool
    version: int
    created_at: datetime
    updated_at: datetime


class TriggeredAlarmRead(ExampleModel):
    id: int = Field(description="the alarm state's id (acknowledge/reset take it)")
    alarm_id: int
    alarm_name: str
    object_type: str
    object_id: int
    object_name: str | None
    status: Literal["ok", "warning", "critical"]
    message: str
    value: float | None
    triggered_at: datetime | None
    changed_at: datetime
    acknowledged: bool
    acknowledged_at: datetime | None
    acknowledged_by: str | None


class MetricPoint(ExampleModel):
    at: datetime
    avg: float
    min: float
    max: float
    samples: int = Field(description="real-time samples behind this point (1 for a real-time point)")


class MetricSeries(ExampleModel):
    counter: str
    unit: str
    points: list[MetricPoint]


class MetricsRead(ExampleModel):
    object_type: str
    object_id: int
    tier: str
    interval_s: float
    start: datetime
    end: datetime
    series: list[MetricSeries]


class CounterRead(ExampleModel):
    name: str
    unit: str
    description: str
    object_types: list[str]
    rollup: str


class TierRead(ExampleModel):
    name: str
    interval_s: float
    retention_s: float


class CatalogueRead(ExampleModel):
    counters: list[CounterRead]
    tiers: list[TierRead]
