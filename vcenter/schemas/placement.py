"""Answers of the placement engine's routes (vcenter.api.routers.clusters, the VMotion check):
placement dry runs, rule violations, entitlements, DRS passes and what-ifs, DPM passes.

The engine (vcenter.domain) names hosts and VMs by their ids as strings (its snapshots' keys);
the stored DRS recommendations name them by integer ids. Reason blobs whose fields are the
engine's numbers of one decision (a move's loads and gains, a power action's utilisation) are
objects of numbers documented by example: they grow with the engine.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from pydantic import Field, RootModel, field_validator

from vcenter.core.examples import ExampleModel
from vcenter.schemas.base import ResponseModel


# --- placement -----------------------------------------------------------------------------
class PlacementCandidate(ExampleModel):
    host: str = Field(description="the host's id", examples=["3"])
    name: str = Field(description="the host's name", examples=["host1"])
    score: float = Field(description="higher is better", examples=[0.8125])
    components: dict[str, float] = Field(description="the score's parts by name", examples=[{"balance": 0.6, "headroom": 0.2125}])
    notes: list[str] = Field(examples=[["soft rule web-apart kept"]])


class PlacementRejection(ExampleModel):
    host: str = Field(description="the host's id", examples=["4"])
    name: str = Field(examples=["host2"])
    filters: list[str] = Field(description="the filters that refused the host", examples=[["MemoryFilter"]])
    reasons: list[str] = Field(examples=[["needs 2048 MiB, 1024 MiB free"]])


class PlacementResult(ExampleModel):
    """Where the VM would go: the ranked candidates and every rejected host's reasons."""

    vm: str = Field(description="the VM's id (or the name of one not created yet)", examples=["7"])
    host: str | None = Field(description="the chosen host's id; null: none fits", examples=["3"])
    refused: str | None = Field(description="refused before any host was considered (resource pool admission)", examples=[None])
    refused_by: str | None = Field(description="the pool that refused", examples=[None])
    candidates: list[PlacementCandidate]
    rejected: list[PlacementRejection]


class RuleViolation(ExampleModel):
    rule: str = Field(description="the rule's name", examples=["web-apart"])
    must: bool = Field(description="a mandatory rule (else a preference)", examples=[True])
    message: str = Field(examples=["web1 and web2 run on host1"])
    vms: list[str] = Field(description="the VMs' ids", examples=[["7", "8"]])
    hosts: list[str] = Field(description="the hosts' ids", examples=[["3"]])


class Entitlement(ExampleModel):
    cpu_mhz: float = Field(examples=[2000.0])
    memory_mib: float = Field(examples=[2048.0])


class Entitlements(RootModel[dict[str, Entitlement]]):
    """Each running VM's entitlement by VM id."""

    model_config = {"json_schema_extra": {"examples": [{"7": {"cpu_mhz": 2000.0, "memory_mib": 2048.0}}]}}


# --- DRS -----------------------------------------------------------------------------------
REASONS_EXAMPLE = {"imbalance_before": 0.21, "imbalance_after": 0.05, "host": "3", "host_cpu_load": 0.92, "target_cpu_load": 0.31, "memory_mib": 2048, "gain": 0.16}


class DrsRecommendationRead(ResponseModel):
    """A stored DRS recommendation: a VMotion of a VM between hosts, with the numbers behind it."""

    id: int
    vm_id: int
    source_host_id: int
    target_host_id: int
    priority: int = Field(description="1 (most needed) to 5", examples=[2])
    kind: str = Field(description="balance, rule, overload, ...", examples=["balance"])
    reason: str = Field(examples=["imbalance 0.21 -> 0.05: host1 CPU 92%"])
    reasons: dict[str, Any] = Field(description="the numbers of the decision (loads, gain, rule)", examples=[REASONS_EXAMPLE])
    state: str = Field(description="pending, applied, dismissed, stale", examples=["pending"])
    task_id: int | None = Field(description="the VMotion Task, once applied", examples=[12])
    created_at: datetime
    decided_at: datetime | None


class DrsWake(ExampleModel):
    """A standby host a DRS pass powers on (or recommends powering on) for want of capacity."""

    host: str = Field(description="the host's id", examples=["5"])
    reason: str = Field(examples=["powered-on hosts lack 1800 MHz"])
    cpu_short_mhz: float = Field(examples=[1800.0])
    mem_short_mib: float = Field(examples=[0.0])
    automatic: bool = Field(description="powered on now (fully automated cluster)", examples=[True])
    task_id: int | None = Field(description="the host.exitStandby Task", examples=[13])
    error: str | None = Field(description="why the power-on did not start", examples=[None])


class DrsRun(ExampleModel):
    """One DRS pass: the imbalance before and after its moves, the recommendations stored
    (the automatic ones applied), why it stopped, and standby hosts woken."""

    imbalance_before: float = Field(examples=[0.21])
    imbalance_after: float = Field(examples=[0.05])
    target: float | None = Field(description="the imbalance DRS accepts (null: any, migration threshold 1)", examples=[0.1])
    recommendations: list[DrsRecommendationRead]
    notes: list[str] = Field(examples=[["balanced within the target"]])
    wake: list[DrsWake]

    @field_validator("target", mode="before")
    @classmethod
    def _any_is_null(cls, value: Any) -> Any:
        # threshold 1 accepts any imbalance: an infinite target, which JSON cannot carry
        return None if isinstance(value, float) and math.isinf(value) else value


class DrsMove(ExampleModel):
    """A move a DRS plan would make (not stored)."""

    vm: str = Field(description="the VM's id", examples=["7"])
    name: str = Field(description="the VM's name", examples=["web1"])
    source: str = Field(description="the source host's id", examples=["3"])
    target: str = Field(description="the target host's id", examples=["4"])
    priority: int = Field(examples=[2])
    kind: str = Field(examples=["balance"])
    automation: str = Field(examples=["manual"])
    automatic: bool = Field(examples=[False])
    reasons: dict[str, Any] = Field(examples=[REASONS_EXAMPLE])
    text: str = Field(examples=["imbalance 0.21 -> 0.05: host1 CPU 92%"])


class WakeNeed(ExampleModel):
    host: str = Field(examples=["5"])
    reason: str = Field(examples=["powered-on hosts lack 1800 MHz"])
    cpu_short_mhz: float = Field(examples=[1800.0])
    mem_short_mib: float = Field(examples=[0.0])


class DrsPlan(ExampleModel):
    threshold: int = Field(description="the migration threshold, 1 (conservative) to 5", examples=[3])
    target: float | None = Field(examples=[0.1])
    imbalance_before: float = Field(examples=[0.21])
    imbalance_after: float = Field(examples=[0.05])
    cpu_std_before: float = Field(examples=[0.3])
    mem_std_before: float = Field(examples=[0.1])
    cpu_std_after: float = Field(examples=[0.05])
    mem_std_after: float = Field(examples=[0.08])
    recommendations: list[DrsMove]
    skipped: dict[str, str] = Field(description="VM id -> why DRS would not move it", examples=[{"8": "in flight"}])
    unresolved: list[str] = Field(description="rule violations no admissible move fixes", examples=[[]])
    notes: list[str] = Field(examples=[["balanced within the target"]])
    wake: list[WakeNeed]


class WhatIf(ExampleModel):
    """A hypothetical change, the balance it leaves and the plan DRS would make (nothing changed)."""

    change: str = Field(examples=["host 3 fails"])
    imbalance_now: float = Field(examples=[0.05])
    imbalance_after_change: float = Field(examples=[0.4])
    imbalance_after_plan: float = Field(examples=[0.08])
    displaced: dict[str, str | None] | None = Field(description="VM id -> the host id it would restart on (null: nowhere)", examples=[{"7": "4"}])
    unplaceable: dict[str, str] = Field(description="VM id -> why it fits nowhere after the change", examples=[{}])
    plan: DrsPlan


# --- DPM -----------------------------------------------------------------------------------
class DpmAction(ExampleModel):
    """A host DPM powers off (standby) or on, or recommends it."""

    action: str = Field(description="power-off or power-on", examples=["power-off"])
    host: str = Field(description="the host's id", examples=["4"])
    priority: int = Field(examples=[3])
    automation: str = Field(examples=["automated"])
    automatic: bool = Field(examples=[True])
    evacuation: list[list[str]] = Field(description="[VM id, target host id] moves first", examples=[[["7", "3"]]])
    text: str = Field(examples=["utilisation 0.22 below 0.3"])
    reasons: dict[str, Any] = Field(description="the numbers of the decision", examples=[{"utilisation": 0.22, "low": 0.3, "high": 0.8, "window_samples": 6}])
    reason: str = Field(examples=["utilisation 0.22 below 0.3"])
    task_id: int | None = Field(description="the host's Task when applied", examples=[14])
    error: str | None = Field(examples=[None])


class DpmRun(ExampleModel):
    recommendations: list[DpmAction]
    utilisation: list[float] = Field(description="the utilisation of each sample of the window, oldest first", examples=[[0.22, 0.25, 0.21]])
    low: float = Field(examples=[0.3])
    high: float = Field(examples=[0.8])
    notes: list[str] = Field(examples=[["host2 kept: HA reserve"]])
    samples: int = Field(description="demand samples in the window", examples=[6])


# --- VMotion checks ------------------------------------------------------------------------
class MigrationCheck(ExampleModel):
    code: str = Field(examples=["MEMORY"])
    ok: bool = Field(examples=[True])
    message: str = Field(examples=["ok"])


class MigrationCheckReport(ExampleModel):
    vm: int = Field(description="the VM's id", examples=[7])
    host: int = Field(description="the target host's id", examples=[4])
    ok: bool = Field(description="every check passed", examples=[True])
    checks: list[MigrationCheck]
