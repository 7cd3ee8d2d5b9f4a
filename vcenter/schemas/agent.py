"""The answers of the routes the host agents call (vcenter.api.routers.agent, the metrics and
seed routes): what the server tells an agent after a report.

Several answers have variants (``{"proceed": true}`` or ``{"proceed": false, "reason": ...}``):
their routes answer only the fields the variant has (``response_model_exclude_unset``), so an
agent reading a key it expects finds it or finds it absent, never ``null`` in its place.
"""

from __future__ import annotations

from pydantic import Field

from vcenter.core.examples import ExampleModel


class ProgressAnswer(ExampleModel):
    proceed: bool = Field(description="go on with the command (false: stop, the task is gone, ended or being cancelled)", examples=[True])
    reason: str | None = Field(None, description="why not: UNKNOWN_TASK, CANCEL_REQUESTED or the task's end state", examples=["CANCEL_REQUESTED"])


class ResultAnswer(ExampleModel):
    applied: bool = Field(description="the result was recorded (false: the task had already ended)", examples=[True])


class LifecycleAnswer(ExampleModel):
    applied: int = Field(description="how many of the events changed a VM's state", examples=[2])


class DatastoreMountSpec(ExampleModel):
    id: int = Field(description="the datastore's id", examples=[3])
    path: str = Field(description="where the host mounts it", examples=["/var/lib/vcenter/datastores/ds1"])


class BridgeSpec(ExampleModel):
    """A bridge the host must provide for a port group: a plain one (with the peers its VXLAN
    or GRE links reach), or one of a switch with uplinks."""

    bridge: str = Field(examples=["vcpg12"])
    vlan_id: int | None = Field(examples=[None])
    peers: list[str] = Field(description="the addresses of the other hosts of the port group", examples=[["192.0.2.11"]])
    switch: str | None = Field(None, description="the switch's name (a switch's port group)", examples=["dvs1"])
    uplinks: list[str] | None = Field(None, description="the switch's uplink NICs", examples=[["eth1"]])


class AgentHaConfig(ExampleModel):
    enabled: bool = Field(examples=[True])
    isolation_delay_s: float | None = Field(None, examples=[10.0])
    isolation_addresses: list[str] | None = Field(None, description="addresses to probe for isolation", examples=[["192.0.2.11:16509"]])
    isolation_response: str | None = Field(None, examples=["leave-powered-on"])
    overrides: dict[str, str] | None = Field(None, description="VM libvirt UUID -> its own isolation response", examples=[{}])


class HostStateAnswer(ExampleModel):
    """Accepted: what the host is expected to provide (datastores, bridges, HA); refused: why."""

    accepted: bool = Field(examples=[True])
    error: str | None = Field(None, description="why the report was refused: DUPLICATE_HOST_UUID, EVC_INCOMPATIBLE", examples=["EVC_INCOMPATIBLE"])
    missing: list[str] | None = Field(None, description="EVC_INCOMPATIBLE: the CPU features the host lacks", examples=[["avx512f"]])
    datastores: list[DatastoreMountSpec] | None = Field(None, description="the datastores to mount")
    bridges: list[BridgeSpec] | None = Field(None, description="the bridges of its port groups")
    ha: AgentHaConfig | None = Field(None, description="the HA configuration of its cluster")


class SeedFiles(ExampleModel):
    """A VM's cloud-init NoCloud seed, for the agent that builds its seed ISO."""

    files: dict[str, str] = Field(
        description="meta-data, user-data, network-config: their texts", examples=[{"meta-data": "instance-id: iid-7-1\nlocal-hostname: web1\n", "user-data": "#cloud-config\n"}]
    )
    instance_id: str = Field(examples=["iid-7-1"])


class MetricsStored(ExampleModel):
    stored: int = Field(description="samples stored (a sample already stored is not again)", examples=[12])
