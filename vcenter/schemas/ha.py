"""HA configuration documents: a cluster's ``settings["ha"]`` and a VM's overrides.

Defaults follow vSphere where it has one (detection aside: 5 s, not ~15 s). Times in seconds.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from vcenter.core.object_ids import ObjectIdField
from vcenter.schemas.base import RequestModel

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
