"""Request and response models of the inventory, in families: XCreate, XUpdate, XRead.

Names are validated here (a VM named ``a</name><devices>`` never reaches a hypervisor);
unknown fields are refused, so a typo is a 422 rather than a silent no-op.
"""

from __future__ import annotations

from datetime import datetime
from ipaddress import IPv4Interface
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import Field, StringConstraints, model_validator

from vcenter.core.object_ids import INT32_MAX, Int32, ObjectIdField
from vcenter.domain.states import ConnectionState, PowerState
from vcenter.domain.uplinks import MAX_UPLINKS, NIC_NAME
from vcenter.schemas.base import ExampleModel, RequestModel, ResponseModel
from vcenter.schemas.maintenance import MaintenanceSettings

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
HostName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9.:_-]{0,254}$")]
NicName = Annotated[str, StringConstraints(pattern=NIC_NAME.pattern)]  # a Linux interface name


T = TypeVar("T")


class Page(ExampleModel, Generic[T]):
    total: int
    offset: int
    limit: int
    items: list[T]


# --- datacenters ---------------------------------------------------------------------------
class DatacenterCreate(RequestModel):
    name: Name


class DatacenterUpdate(RequestModel):
    name: Name | None = None
    version: Int32 | None = Field(None, description="optimistic concurrency: the version you read")


class DatacenterRead(ResponseModel):
    id: int
    name: str
    version: int
    created_at: datetime
    updated_at: datetime


# --- folders -------------------------------------------------------------------------------
class FolderCreate(RequestModel):
    name: Name
    datacenter_id: ObjectIdField
    parent_id: ObjectIdField | None = None
    kind: Literal["vm", "host", "datastore", "network"] = "vm"


class FolderUpdate(RequestModel):
    name: Name | None = None
    parent_id: ObjectIdField | None = None
    version: Int32 | None = None


class FolderRead(ResponseModel):
    id: int
    name: str
    datacenter_id: int
    parent_id: int | None
    kind: str
    version: int
    created_at: datetime


# --- clusters ------------------------------------------------------------------------------
# The parts of the settings document described here are validated when written (422).
CLUSTER_SETTINGS_DOC = {"properties": {"maintenance": MaintenanceSettings.model_json_schema()}}


class ClusterCreate(RequestModel):
    name: Name
    datacenter_id: ObjectIdField
    settings: dict[str, Any] = Field(default_factory=dict, description="DRS, DPM, HA, EVC, migration and maintenance settings document", json_schema_extra=CLUSTER_SETTINGS_DOC)


class ClusterUpdate(RequestModel):
    name: Name | None = None
    settings: dict[str, Any] | None = Field(None, description="the whole settings document (replaces it)", json_schema_extra=CLUSTER_SETTINGS_DOC)
    version: Int32 | None = None


class ClusterRead(ResponseModel):
    id: int
    name: str
    datacenter_id: int
    settings: dict[str, Any]
    version: int
    created_at: datetime


# --- hosts ---------------------------------------------------------------------------------
class HostCreate(RequestModel):
    name: HostName
    datacenter_id: ObjectIdField
    cluster_id: ObjectIdField | None = None
    address: str = Field("", max_length=255)
    libvirt_uri: str = Field("qemu:///system", max_length=255, pattern=r"^[a-z0-9+]+://[^\s<>\x22']*$")  # \x22: '"' (a regex every JSON Schema tool reads)


class HostUpdate(RequestModel):
    name: HostName | None = None
    cluster_id: ObjectIdField | None = None
    address: str | None = Field(None, max_length=255)
    power: dict[str, Any] | None = Field(None, description='how DPM powers the host: {"type": "ipmi", "address", "port", "username", "password"} | redfish | wol | lab')
    version: Int32 | None = None


class HostRead(ResponseModel):
    id: int
    name: str
    address: str
    datacenter_id: int
    cluster_id: int | None
    connection_state: ConnectionState
    maintenance: bool
    standby: bool
    libvirt_uri: str
    host_uuid: str | None
    hypervisor: str | None
    cpu_model: str | None
    cpu_cores: int | None
    cpu_mhz: int | None
    memory_mib: int | None
    cpu_features: list[str]
    agent_version: str | None = Field(None, description="the release its agent last reported")
    agent_outdated: bool | None = Field(None, description="its agent is an older release than this server (null: unknown)")
    nics: list[str] | None = Field(None, description="its NICs as its agent last reported them (uplink candidates; null: not yet reported)")
    vlan_8021q: bool | None = Field(None, description="whether its kernel makes 802.1Q links, measured by its agent (null: not known)")
    last_report_at: datetime | None
    trust_state: Literal["awaitingAgent", "awaitingConfirmation", "trusted"]
    thumbprint: str | None
    power_summary: dict[str, Any] = Field(default_factory=dict, description="power settings without credentials")
    version: int
    created_at: datetime


class HostCreated(HostRead):
    registration_token: str = Field(description="shown once: give it to the host's agent (`vcenter agent --registration-token`)")


class RegistrationToken(ExampleModel):
    registration_token: str
    expires_at: datetime


class ThumbprintConfirm(RequestModel):
    thumbprint: str = Field(..., min_length=10, max_length=128, description="the SHA-256 thumbprint the agent printed, as read on the host")


class AgentRegistrationChallenge(RequestModel):
    registration_token: str = Field(..., min_length=10, max_length=200)


class AgentRegistrationNonce(ExampleModel):
    nonce: str = Field(..., description="sign it (with the registration token and the host UUID) with the agent's key; see vcenter.core.registration")
    expires_in: float = Field(..., description="seconds the nonce stays valid")
    expires_at: int = Field(..., description="expiry, epoch seconds")


class AgentRegistration(RequestModel):
    registration_token: str = Field(..., min_length=10, max_length=200)
    host_uuid: str = Field(..., pattern=r"^[0-9a-fA-F-]{32,36}$")
    hostname: str = Field(..., min_length=1, max_length=255)
    nonce: str = Field(..., min_length=1, max_length=200, description="from POST /api/v1/agent/register/challenge")
    certificate: str = Field(..., min_length=1, max_length=16384, description="the agent's certificate (PEM); its SHA-256 thumbprint is what the operator confirms")
    signature: str = Field(..., min_length=1, max_length=1024, description="base64 signature, with the certificate's key, of the nonce, the registration token and the host UUID")
    thumbprint: str | None = Field(None, min_length=10, max_length=128, description="optional: must be the certificate's")


class AgentRegistrationAnswer(ExampleModel):
    host_id: int
    trust_state: str
    agent_token: str | None = None
    command_public_key: str | None = Field(None, description="once trusted: the server's Ed25519 public key (PEM) that verifies the commands on this host's queue")


class HostCertificateRequest(RequestModel):
    csr: str = Field(..., min_length=1, max_length=16384, description="a PEM certificate signing request for the host's TLS key (made on the host; its self-signature proves possession)")


class HostCertificateIssued(ExampleModel):
    certificate: str = Field(description="the host's certificate (PEM): libvirtd's TLS listener, migration client, QEMU migration streams")
    ca_certificate: str = Field(description="the cluster CA's certificate (PEM)")
    serial: str = Field(description="hex serial, as the CRL names it")
    not_after: datetime


class HostTrustMaterial(ExampleModel):
    ca_certificate: str = Field(description="the cluster CA's certificate (PEM)")
    crl: str = Field(description="the CA's certificate revocation list (PEM): certificates of removed hosts")


# --- datastores ----------------------------------------------------------------------------
class DatastoreCreate(RequestModel):
    name: Name
    datacenter_id: ObjectIdField
    kind: Literal["dir", "lab-dir", "nfs", "block"] = "dir"
    url: str = Field(..., max_length=1024, pattern=r"^/[A-Za-z0-9._/-]*$", description="absolute path on the hosts that mount it")
    host_ids: list[ObjectIdField] = Field(default_factory=list, description="hosts that mount it")


class DatastoreUpdate(RequestModel):
    name: Name | None = None
    host_ids: list[ObjectIdField] | None = None
    version: Int32 | None = None


class DatastoreRead(ResponseModel):
    id: int
    name: str
    datacenter_id: int
    kind: str
    url: str
    capacity_bytes: int
    free_bytes: int
    host_ids: list[int]
    version: int
    created_at: datetime


# --- switches ------------------------------------------------------------------------------
Uplinks = Annotated[list[NicName], Field(min_length=1, max_length=MAX_UPLINKS, description="uplink NIC names in failover order: on each host the first it has is active")]


def _distinct_uplinks(uplinks: list[str] | None) -> list[str] | None:
    if uplinks is not None and len(set(uplinks)) != len(uplinks):
        raise ValueError("uplinks: each NIC at most once")
    return uplinks


class SwitchCreate(RequestModel):
    name: Name
    datacenter_id: ObjectIdField
    uplinks: Uplinks

    @model_validator(mode="after")
    def _distinct(self) -> "SwitchCreate":
        _distinct_uplinks(self.uplinks)
        return self


class SwitchUpdate(RequestModel):
    name: Name | None = None
    uplinks: Uplinks | None = None
    version: Int32 | None = None

    @model_validator(mode="after")
    def _distinct(self) -> "SwitchUpdate":
        _distinct_uplinks(self.uplinks)
        return self


class SwitchRead(ResponseModel):
    id: int
    name: str
    datacenter_id: int
    uplinks: list[str]
    bridge: str = Field(description="the bridge every untagged port group of the switch shares on a host")
    version: int
    created_at: datetime


# --- port groups ---------------------------------------------------------------------------
class PortGroupCreate(RequestModel):
    name: Name
    datacenter_id: ObjectIdField
    switch_id: ObjectIdField | None = Field(
        None,
        description="a VLAN of this switch's uplinks (vlan_id 0: untagged; every untagged port group of a switch is the same layer-2 segment). "
        "None: made by the agents' port-group mode (a plain bridge, or the lab's VXLAN segment with VNI = vlan_id)",
    )
    vlan_id: int = Field(0, ge=0, le=4094)
    host_ids: list[ObjectIdField] = Field(default_factory=list)


class PortGroupUpdate(RequestModel):
    name: Name | None = None
    host_ids: list[ObjectIdField] | None = None
    version: Int32 | None = None


class PortGroupHostError(ResponseModel):
    host_id: int
    code: str
    message: str


class PortGroupRead(ResponseModel):
    id: int
    name: str
    datacenter_id: int
    switch_id: int | None
    vlan_id: int
    bridge: str
    host_ids: list[int]
    present_on_host_ids: list[int]
    errors: list[PortGroupHostError] = Field(description="hosts that could not make it, with a stable code (VLAN_UNSUPPORTED, UPLINK_MISSING, UPLINK_IN_USE, UPLINK_FAILED)")
    version: int
    created_at: datetime


# --- resource pools ------------------------------------------------------------------------
class ResourcePoolCreate(RequestModel):
    name: Name
    cluster_id: ObjectIdField
    parent_id: ObjectIdField | None = None
    cpu_reservation_mhz: int = Field(0, ge=0, le=INT32_MAX)
    cpu_limit_mhz: int | None = Field(None, ge=0, le=INT32_MAX)
    cpu_shares: int = Field(4000, ge=1, le=INT32_MAX)
    memory_reservation_mib: int = Field(0, ge=0, le=INT32_MAX)
    memory_limit_mib: int | None = Field(None, ge=0, le=INT32_MAX)
    memory_shares: int = Field(163840, ge=1, le=INT32_MAX)
    expandable_reservation: bool = True


class ResourcePoolUpdate(RequestModel):
    name: Name | None = None
    cpu_reservation_mhz: int | None = Field(None, ge=0, le=INT32_MAX)
    cpu_limit_mhz: int | None = Field(None, ge=0, le=INT32_MAX)
    cpu_shares: int | None = Field(None, ge=1, le=INT32_MAX)
    memory_reservation_mib: int | None = Field(None, ge=0, le=INT32_MAX)
    memory_limit_mib: int | None = Field(None, ge=0, le=INT32_MAX)
    memory_shares: int | None = Field(None, ge=1, le=INT32_MAX)
    expandable_reservation: bool | None = None
    version: Int32 | None = None


class ResourcePoolRead(ResponseModel):
    id: int
    name: str
    cluster_id: int
    parent_id: int | None
    cpu_reservation_mhz: int
    cpu_limit_mhz: int | None
    cpu_shares: int
    memory_reservation_mib: int
    memory_limit_mib: int | None
    memory_shares: int
    expandable_reservation: bool
    version: int
    created_at: datetime


# --- VMs -----------------------------------------------------------------------------------
class DiskCreate(RequestModel):
    datastore_id: ObjectIdField
    capacity_mib: int = Field(..., ge=1, le=16 * 1024 * 1024)
    format: Literal["qcow2", "raw"] = "qcow2"


class NicCreate(RequestModel):
    portgroup_id: ObjectIdField
    model: Literal["virtio", "e1000", "rtl8139"] = "virtio"


class KernelBoot(RequestModel):
    image: Literal["tiny-linux"] = Field("tiny-linux", description="boot image the host provides: the lab's tiny Linux guest")
    ip: IPv4Interface | None = Field(None, description="address/prefix of the guest's first NIC")


CpuName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class VmCpu(RequestModel):
    model: CpuName = Field(..., description="libvirt CPU model, e.g. Westmere or kvm64")
    features_require: list[CpuName] = Field(default_factory=list, max_length=64)
    features_disable: list[CpuName] = Field(default_factory=list, max_length=64)


class VmCreate(RequestModel):
    name: Name
    datacenter_id: ObjectIdField | None = Field(None, description="defaults to the host's datacenter")
    host_id: ObjectIdField | None = Field(None, description="the host; omit it and give cluster_id to let placement choose")
    cluster_id: ObjectIdField | None = Field(None, description="with no host_id: the cluster whose placement engine chooses the host")
    cpu_reservation_mhz: int = Field(0, ge=0, le=INT32_MAX)
    memory_reservation_mib: int = Field(0, ge=0, le=INT32_MAX)
    cpu_limit_mhz: int | None = Field(None, ge=1, le=INT32_MAX, description="enforced on the host as a CPU quota")
    memory_limit_mib: int | None = Field(None, ge=16, le=INT32_MAX, description="enforced on the host as a memory soft limit")
    folder_id: ObjectIdField | None = None
    pool_id: ObjectIdField | None = None
    vcpus: int = Field(1, ge=1, le=64)
    memory_mib: int = Field(64, ge=16, le=1024 * 1024)
    guest_os: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,64}$")] = "other"
    disks: list[DiskCreate] = Field(default_factory=list, max_length=16)
    nics: list[NicCreate] = Field(default_factory=list, max_length=8)
    kernel_boot: KernelBoot | None = Field(None, description="boot a host-provided image instead of the disk")
    cpu: VmCpu | None = Field(None, description="a CPU definition for the guest (default: the hypervisor's default model)")


class GuestCommand(RequestModel):
    command: Literal["burn", "write-pattern", "ping", "poweroff", "hostname", "checksum"]
    argument: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9./:-]*$")
    timeout: float = Field(10, gt=0, le=120)


class VmUpdate(RequestModel):
    name: Name | None = None
    folder_id: ObjectIdField | None = None
    pool_id: ObjectIdField | None = None
    version: Int32 | None = None


class VmReconfigure(RequestModel):
    vcpus: int | None = Field(None, ge=1, le=64)
    memory_mib: int | None = Field(None, ge=16, le=1024 * 1024)
    version: Int32 | None = None


class ShutdownRequest(RequestModel):
    timeout: float | None = Field(None, gt=0, le=3600, description="seconds the guest gets before the task ends GUEST_SHUTDOWN_TIMEOUT")


class DiskRead(ResponseModel):
    index: int
    datastore_id: int
    file: str
    capacity_mib: int
    format: str
    backing_file: str | None = Field(None, description="a linked clone's base image (same datastore); None for a standalone disk")


class NicRead(ResponseModel):
    index: int
    portgroup_id: int
    mac: str
    model: str


class VmRead(ResponseModel):
    id: int
    name: str
    datacenter_id: int
    cluster_id: int | None
    host_id: int | None
    folder_id: int | None
    pool_id: int | None
    vcpus: int
    memory_mib: int
    cpu_reservation_mhz: int
    memory_reservation_mib: int
    cpu_limit_mhz: int | None
    memory_limit_mib: int | None
    guest_os: str
    power_state: PowerState
    status: str
    libvirt_uuid: str
    last_stop_reason: str | None
    boot: dict[str, Any]
    cpu: dict[str, Any] | None
    guest_info: dict[str, Any] | None
    guest_heartbeat_at: datetime | None
    cpu_demand_mhz: float | None = Field(None, description="CPU demand measured on the host, smoothed (MHz)")
    cpu_demand_spread_mhz: float | None = Field(
        None, description="The noise of the CPU-demand samples told apart from their trend (MHz; from the last 12 host reports): a climbing or stepping demand has none; DRS ignores gains within it"
    )
    disks: list[DiskRead]
    nics: list[NicRead]
    version: int
    created_at: datetime
    updated_at: datetime


class ConsoleTicket(ExampleModel):
    """A one-time ticket to the VM's serial console: open ``url`` as a websocket (``ws://``
    or ``wss://`` on this server) within ``expires_in`` seconds, with the same bearer
    credential that asked for it; binary frames carry the console's bytes both ways."""

    ticket: str = Field(description="one-time, opens one console session", examples=["b3JkZXJlZC10aWNrZXQtZXhhbXBsZQ"])
    expires_in: float = Field(description="seconds the ticket stays valid", examples=[30.0])
    url: str = Field(description="the websocket's path on this server, ticket included", examples=["/ui/console/ws?ticket=b3JkZXJlZC10aWNrZXQtZXhhbXBsZQ"])


# --- tasks and events ----------------------------------------------------------------------
class TaskRead(ResponseModel):
    id: int
    kind: str
    state: str
    step: str
    progress: int
    object_type: str
    object_id: int
    host_id: int | None
    username: str
    user_id: int | None = Field(None, description="the owner's user id (None: the system); ownership is decided on it, not on the name")
    result: dict[str, Any] | None
    error_code: str | None
    error_message: str | None
    attempts: int
    cancel_requested: bool
    placement: dict[str, Any] | None = Field(None, description="the placement decision this task acted on: ranked candidates and every rejected host's reasons")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class EventRead(ResponseModel):
    id: int
    at: datetime
    username: str
    user_id: int | None = Field(None, description="the acting user's id (None: the system); a later user of the same name is someone else")
    kind: str
    object_type: str | None
    object_id: int | None
    object_name: str | None
    message: str
    reason: str | None
    task_id: int | None
    data: dict[str, Any]
    source: str | None = Field(None, description="client address of the request behind the event")


# --- auth ----------------------------------------------------------------------------------
class LoginRequest(RequestModel):
    username: str = Field(..., min_length=1, max_length=80)
    password: str = Field(..., min_length=1, max_length=1024)


class SessionRead(ExampleModel):
    token: str
    username: str
    expires_at: datetime


# --- placement and rules -------------------------------------------------------------------
class RuleCreate(RequestModel):
    name: Name
    kind: Literal["affinity", "anti-affinity", "run-on", "not-run-on"]
    mandatory: bool = Field(False, description="must (never broken) or should (broken only when nothing else fits)")
    enabled: bool = True
    vm_ids: list[ObjectIdField] = Field(..., min_length=1, max_length=1000)
    host_ids: list[ObjectIdField] = Field(default_factory=list, max_length=1000, description="VM-host rules: the host group")
    vm_group: Name | None = None
    host_group: Name | None = None


class RuleUpdate(RequestModel):
    name: Name | None = None
    mandatory: bool | None = None
    enabled: bool | None = None
    vm_ids: list[ObjectIdField] | None = Field(None, min_length=1, max_length=1000)
    host_ids: list[ObjectIdField] | None = Field(None, max_length=1000)
    version: Int32 | None = None


class RuleRead(ResponseModel):
    id: int
    cluster_id: int
    name: str
    kind: str
    mandatory: bool
    enabled: bool
    vm_ids: list[int]
    host_ids: list[int]
    vm_group: str | None
    host_group: str | None
    version: int


class PlacementRequest(RequestModel):
    name: Name = "new-vm"
    vcpus: int = Field(1, ge=1, le=64)
    memory_mib: int = Field(64, ge=16, le=1024 * 1024)
    cpu_reservation_mhz: int = Field(0, ge=0, le=INT32_MAX)
    memory_reservation_mib: int = Field(0, ge=0, le=INT32_MAX)
    pool_id: ObjectIdField | None = None
    disks: list[DiskCreate] = Field(default_factory=list, max_length=16)
    nics: list[NicCreate] = Field(default_factory=list, max_length=8)
    cpu: VmCpu | None = None


class EvcRequest(RequestModel):
    host_ids: list[ObjectIdField] | None = Field(None, description="hosts whose CPUs the baseline covers; default: every host of the cluster")


class MigrateRequest(RequestModel):
    host_id: ObjectIdField | None = Field(None, description="target host; omit it to let placement choose")


class DiskMove(RequestModel):
    index: int = Field(..., ge=0, le=25)
    datastore_id: ObjectIdField


class RelocateRequest(RequestModel):
    disks: list[DiskMove] = Field(..., min_length=1, max_length=16)
    host_id: ObjectIdField | None = Field(
        None,
        description="another host to move the VM to, its listed disks copied to "
        "datastores of that host: a running VM live-migrates (non-shared storage); a powered-off VM's "
        "files are copied by a host mounting both datastores, then it is defined there and undefined "
        "on its old host; omit it to stay on the VM's host",
    )


class WhatIfRule(RequestModel):
    name: Name
    kind: Literal["affinity", "anti-affinity", "run-on", "not-run-on"]
    mandatory: bool = False
    vm_ids: list[ObjectIdField] = Field(..., min_length=1)
    host_ids: list[ObjectIdField] = Field(default_factory=list)


class WhatIfChange(RequestModel):
    kind: Literal["host-fails", "host-maintenance", "host-powers-off", "vm-demand", "rule-added"]
    host_id: ObjectIdField | None = None
    vm_id: ObjectIdField | None = None
    cpu_mhz: float | None = Field(None, ge=0, le=2**31)
    memory_mib: float | None = Field(None, ge=0, le=2**31)
    rule: WhatIfRule | None = None

    @model_validator(mode="after")
    def _names_its_subject(self) -> "WhatIfChange":
        needed = {"vm-demand": "vm_id", "rule-added": "rule"}.get(self.kind, "host_id")
        if getattr(self, needed) is None:
            raise ValueError(f"{needed} is required for kind {self.kind}")
        return self


_PASSWORD_POLICY = "at least password_min_length characters (12 by default), not a common password (nor one followed by digits), not a short text repeated, not the user name: else 422 WEAK_PASSWORD"


class UserCreate(RequestModel):
    username: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,79}$")] = Field(
        ..., description="not a name the system acts under (system, cli, ha, drs, dpm, scheduler...): 422 RESERVED_USERNAME"
    )
    # The length rule is a setting, so the service checks it (WEAK_PASSWORD), not the schema.
    password: str = Field(..., min_length=1, max_length=1024, description=_PASSWORD_POLICY)
    is_admin: bool = False


class UserUpdate(RequestModel):
    password: str | None = Field(None, min_length=1, max_length=1024, description=_PASSWORD_POLICY)
    is_admin: bool | None = None
    disabled: bool | None = None


class UserRead(ResponseModel):
    id: int
    username: str
    is_admin: bool
    disabled: bool
    created_at: datetime
