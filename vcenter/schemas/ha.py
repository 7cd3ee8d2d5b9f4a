"""HA configuration documents: a cluster's ``settings["ha"]`` and a VM's overrides.

Defaults follow vSphere where it has one (detection aside: 5 s, not ~15 s). Times in seconds.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, field_validator

from vcenter.core.object_ids import ObjectIdField
from vcenter.schemas.base import ExampleModel, RequestModel

Priority = Literal["high", "medium", "low", "disabled"]
IsolationResponse = Literal["leave-powered-on", "power-off", "shutdown"]


class AdmissionConfig(RequestModel):
    kind: Literal["disabled", "host-failures", "percentage", "failover-hosts"] = "host-failures"
    host_failures: int = Field(1, ge=0, le=32)
    cpu_percent: float = Field(25.0, ge=0, le=100)
    memory_percent: float = Field(25.0, ge=0, le=100)
    failover_hosts: list[ObjectIdField] = Field(default_factory=list, description="host ids reserved for HA restarts (kind failover-hosts)")


class VmMonitoringConfig(RequestModel):
    enabled: bool = False
    failure_interval_s: float = Field(30.0, gt=0, le=86400)
    min_uptime_s: float = Field(30.0, ge=0, le=86400)
    max_resets: int = Field(3, ge=0, le=100)
    window_s: float = Field(3600.0, gt=0, le=7 * 86400)


class RestartConfig(RequestModel):
    retry_base_s: float = Field(2.0, gt=0, le=3600)
    retry_max_s: float = Field(60.0, gt=0, le=86400)
    max_attempts: int = Field(5, ge=1, le=100)


class HaConfig(RequestModel):
    enabled: bool = False
    detection_s: float = Field(5.0, gt=0, le=600, description="both channels silent this long: failed")
    isolation_response: IsolationResponse = "leave-powered-on"
    isolation_delay_s: float = Field(5.0, gt=0, le=600, description="an agent cut off from Redis and every isolation address this long applies the isolation response")
    isolation_addresses: list[str] = Field(default_factory=list, description="host:port answered by TCP probes (gateway, peers); empty: the peers' agent addresses")
    default_priority: Priority = "medium"
    admission: AdmissionConfig = Field(default_factory=AdmissionConfig)
    restart: RestartConfig = Field(default_factory=RestartConfig)
    vm_monitoring: VmMonitoringConfig = Field(default_factory=VmMonitoringConfig)
    vm_overrides: dict[str, "VmHaOverride"] = Field(default_factory=dict, description="VM id -> its overrides")

    @field_validator("isolation_addresses")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for a in value:
            host, sep, port = a.rpartition(":")
            if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536 or any(c in host for c in " /<>\"'"):
                raise ValueError(f"isolation address {a!r}: give host:port (a TCP port that answers)")
        return value


class VmHaOverride(RequestModel):
    restart_priority: Priority | None = None
    isolation_response: IsolationResponse | None = None
    vm_monitoring: bool | None = None


class HaConfigUpdate(RequestModel):
    """A partial update: only the fields given change (nested documents are replaced whole)."""

    enabled: bool | None = None
    detection_s: float | None = Field(None, gt=0, le=600)
    isolation_response: IsolationResponse | None = None
    isolation_delay_s: float | None = Field(None, gt=0, le=600)
    isolation_addresses: list[str] | None = None
    default_priority: Priority | None = None
    admission: AdmissionConfig | None = None
    restart: RestartConfig | None = None
    vm_monitoring: VmMonitoringConfig | None = None


HaConfig.model_rebuild()


# --- answers: failover capacity and HA status ---------------------------------------------
class HaCapacity(ExampleModel):
    """The cluster's failover capacity now, under its admission policy."""

    enabled: bool = Field(examples=[True])
    policy: str = Field(description="the admission policy in force", examples=["host-failures"])
    hosts: int = Field(description="active hosts counted", examples=[3])
    total_memory_mib: float = Field(examples=[49152.0])
    total_vcpus: float = Field(examples=[96.0])
    used_memory_mib: float = Field(examples=[12288.0])
    used_vcpus: float = Field(examples=[12.0])
    reserved_memory_mib: float = Field(description="held back for failover by the policy", examples=[16384.0])
    reserved_vcpus: float = Field(examples=[32.0])
    tolerated_host_failures: int = Field(description="how many of the largest hosts could fail now with every VM restarted", examples=[1])
    free_memory_percent: float = Field(examples=[75.0])
    free_vcpu_percent: float = Field(examples=[87.5])
    ok: bool = Field(description="the policy holds now", examples=[True])
    reason: str = Field(examples=["1 host failure tolerated, 1 required"])
    failover_hosts: list[int] = Field(description="host ids reserved for restarts (policy failover-hosts)", examples=[[]])
    ha_reserve_fraction: float = Field(description="the share of each host DRS and DPM keep free for failover", examples=[0.33])


class HaMonitorRead(ExampleModel):
    token: int = Field(description="the fencing token of the monitor holding the lock (0: none yet)", examples=[17])
    owner: str | None = Field(examples=["ha@vc1"])
    frozen: str | None = Field(description="why restarts are frozen (null: not frozen)", examples=[None])
    updated_at: datetime | None


class HaHostVerdict(ExampleModel):
    host_id: int
    name: str
    health: str = Field(description="connected, isolated, failed, partitioned, ...", examples=["connected"])
    since: datetime | None
    reason: str = Field(examples=[""])
    evidence: dict[str, Any] = Field(description="what the verdict rests on (heartbeats, probes)", examples=[{"heartbeat_age_s": 1.2, "peer_probes": {"host2": True}}])


class HaRestartRead(ExampleModel):
    vm_id: int
    from_host_id: int | None
    cause: str = Field(examples=["host-failed"])
    state: str = Field(examples=["pending"])
    attempts: int = Field(examples=[1])
    next_try_at: datetime | None
    reason: str = Field(examples=["no host has room: waiting for capacity"])
    task_id: int | None = Field(examples=[15])


class HaStatus(ExampleModel):
    """HA's verdict on each host, the VMs waiting for a restart, and the monitor."""

    enabled: bool = Field(examples=[True])
    monitor: HaMonitorRead
    hosts: list[HaHostVerdict]
    restarts: list[HaRestartRead]
