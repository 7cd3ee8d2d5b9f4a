"""ORM models: the inventory, tasks, events, the outbox and users.

Vocabulary:
- ``version``: optimistic-concurrency counter (SQLAlchemy ``version_id_col``); an update
  computed on a stale read fails with STALE_VERSION instead of overwriting.
- object claim: the row that marks an object busy with one active task (primary key
  ``(object_type, object_id)``, so a second claim fails on the unique key: 409 OBJECT_BUSY).
- outbox: commands written in the same transaction as the Task, relayed to Celery after commit.
- All timestamps are stored as UTC and returned timezone-aware on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Index,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from vcenter.core.clock import utcnow
from vcenter.core.release import release
from vcenter.domain.versions import is_older


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on every database (SQLite stores no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(timezone.utc)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Datacenter(Timestamped, Base):
    __tablename__ = "datacenters"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    version: Mapped[int] = mapped_column(default=1)
    __mapper_args__ = {"version_id_col": version}


class Folder(Timestamped, Base):
    __tablename__ = "folders"
    __table_args__ = (UniqueConstraint("datacenter_id", "parent_id", "name", name="uq_folders_dc_parent_name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    kind: Mapped[str] = mapped_column(String(16), default="vm")  # vm | host | datastore | network
    datacenter_id: Mapped[int] = mapped_column(ForeignKey("datacenters.id", ondelete="RESTRICT"), index=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("folders.id", ondelete="RESTRICT"), index=True)
    version: Mapped[int] = mapped_column(default=1)
    __mapper_args__ = {"version_id_col": version}


class Cluster(Timestamped, Base):
    __tablename__ = "clusters"
    __table_args__ = (UniqueConstraint("datacenter_id", "name", name="uq_clusters_dc_name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    datacenter_id: Mapped[int] = mapped_column(ForeignKey("datacenters.id", ondelete="RESTRICT"), index=True)
    # Versioned settings document: {"schema": 1, "drs": {...}, "dpm": {...}, "ha": {...}, "evc": {...}}
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    version: Mapped[int] = mapped_column(default=1)
    __mapper_args__ = {"version_id_col": version}


class Host(Timestamped, Base):
    __tablename__ = "hosts"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    address: Mapped[str] = mapped_column(String(255), default="")
    datacenter_id: Mapped[int] = mapped_column(ForeignKey("datacenters.id", ondelete="RESTRICT"), index=True)
    cluster_id: Mapped[int | None] = mapped_column(ForeignKey("clusters.id", ondelete="RESTRICT"), index=True)
    connection_state: Mapped[str] = mapped_column(String(16), default="disconnected")
    maintenance: Mapped[bool] = mapped_column(Boolean, default=False)
    standby: Mapped[bool] = mapped_column(Boolean, default=False)
    libvirt_uri: Mapped[str] = mapped_column(String(255), default="qemu:///system")
    host_uuid: Mapped[str | None] = mapped_column(String(64), unique=True)
    hypervisor: Mapped[str | None] = mapped_column(String(16))
    cpu_model: Mapped[str | None] = mapped_column(String(128))
    cpu_cores: Mapped[int | None] = mapped_column(Integer)
    cpu_mhz: Mapped[int | None] = mapped_column(Integer)
    memory_mib: Mapped[int | None] = mapped_column(Integer)
    cpu_features: Mapped[list[Any]] = mapped_column(default=list)
    cpu_xml: Mapped[str | None] = mapped_column(Text)
    # The release of its agent, as the agent last reported it (None: not yet reported).
    agent_version: Mapped[str | None] = mapped_column(String(64))
    agent_token_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    # Registration: a one-time token the agent presents with its libvirt host UUID and the
    # SHA-256 thumbprint of its certificate; the operator confirms the thumbprint (or the
    # server trusts on first use). awaitingAgent -> awaitingConfirmation -> trusted.
    registration_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    registration_expires_at: Mapped[datetime | None] = mapped_column()
    thumbprint: Mapped[str | None] = mapped_column(String(128))
    trust_state: Mapped[str] = mapped_column(String(24), default="awaitingAgent")
    # How DPM powers the host: {"type": "ipmi"|"redfish"|"wol"|"lab", ...} (vcenter.power).
    # Holds the BMC credential: never returned by the API, never in events or commands.
    power: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The folders its agent provides datastores below, as it last reported them (None: not yet
    # reported); a datastore outside them is refused when it is mounted there.
    datastore_roots: Mapped[list[Any] | None] = mapped_column(JSON)
    # Its NICs and whether its kernel makes 802.1Q links, as its agent last reported them
    # (None: not yet reported); a tagged port group is refused on a host known to lack 802.1Q.
    nics: Mapped[list[Any] | None] = mapped_column(JSON)
    vlan_8021q: Mapped[bool | None] = mapped_column(Boolean)

    @property
    def agent_outdated(self) -> bool | None:
        """Whether its agent is an older release than this server (None: unknown)."""
        return is_older(self.agent_version, release())

    @property
    def power_summary(self) -> dict[str, Any]:
        return {k: v for k, v in (self.power or {}).items() if k not in ("password", "username")}

    last_report_at: Mapped[datetime | None] = mapped_column()
    version: Mapped[int] = mapped_column(default=1)
    __mapper_args__ = {"version_id_col": version}


class HostCertificate(Base):
    """A TLS certificate the cluster CA issued to a host (vcenter.services.certificates). The
    row outlives its host: a removed host's certificates stay listed, revoked, until they
    expire, so the CRL keeps naming them."""

    __tablename__ = "host_certificates"
    id: Mapped[int] = mapped_column(primary_key=True)
    host_id: Mapped[int | None] = mapped_column(ForeignKey("hosts.id", ondelete="SET NULL"), index=True)
    host_name: Mapped[str] = mapped_column(String(255))
    serial: Mapped[str] = mapped_column(String(48), unique=True)  # hex
    issued_at: Mapped[datetime] = mapped_column(default=utcnow)
    not_after: Mapped[datetime] = mapped_column(index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(index=True)
    revocation_reason: Mapped[str | None] = mapped_column(String(32))


class Datastore(Timestamped, Base):
    __tablename__ = "datastores"
    __table_args__ = (UniqueConstraint("datacenter_id", "name", name="uq_datastores_dc_name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    datacenter_id: Mapped[int] = mapped_column(ForeignKey("datacenters.id", ondelete="RESTRICT"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="dir")  # dir | nfs | block | lab-dir
    url: Mapped[str] = mapped_column(String(1024))  # a path for dir datastores
    capacity_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    free_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    version: Mapped[int] = mapped_column(default=1)
    __mapper_args__ = {"version_id_col": version}
    mounts: Mapped[list["DatastoreMount"]] = relationship(back_populates="datastore", cascade="all, delete-orphan", lazy="selectin")


class DatastoreMount(Base):
    __tablename__ = "datastore_mounts"
    datastore_id: Mapped[int] = mapped_column(ForeignKey("datastores.id", ondelete="CASCADE"), primary_key=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), primary_key=True)
    path: Mapped[str] = mapped_column(String(1024))
    datastore: Mapped[Datastore] = relationship(back_populates="mounts")


class Switch(Timestamped, Base):
    """A virtual switch of a datacenter: its uplink NIC names (failover order) apply on every
    host that carries one of its port groups (vcenter.domain.uplinks)."""

    __tablename__ = "switches"
    __table_args__ = (UniqueConstraint("datacenter_id", "name", name="uq_switches_dc_name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    datacenter_id: Mapped[int] = mapped_column(ForeignKey("datacenters.id", ondelete="RESTRICT"), index=True)
    uplinks: Mapped[list[Any]] = mapped_column(JSON, default=list)
    version: Mapped[int] = mapped_column(default=1)
    __mapper_args__ = {"version_id_col": version}


class PortGroup(Timestamped, Base):
    __tablename__ = "portgroups"
    __table_args__ = (UniqueConstraint("datacenter_id", "name", name="uq_portgroups_dc_name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    datacenter_id: Mapped[int] = mapped_column(ForeignKey("datacenters.id", ondelete="RESTRICT"), index=True)
    # On a switch: a VLAN of its uplinks (0 = untagged). None: made by the agents' port-group
    # mode (a plain bridge, or the lab's VXLAN segment with VNI = vlan_id).
    switch_id: Mapped[int | None] = mapped_column(ForeignKey("switches.id", ondelete="RESTRICT"), index=True)
    vlan_id: Mapped[int] = mapped_column(Integer, default=0)
    bridge: Mapped[str] = mapped_column(String(15))  # Linux interface names are at most 15 chars
    version: Mapped[int] = mapped_column(default=1)
    __mapper_args__ = {"version_id_col": version}
    hosts: Mapped[list["PortGroupHost"]] = relationship(back_populates="portgroup", cascade="all, delete-orphan", lazy="selectin")


class PortGroupHost(Base):
    __tablename__ = "portgroup_hosts"
    portgroup_id: Mapped[int] = mapped_column(ForeignKey("portgroups.id", ondelete="CASCADE"), primary_key=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), primary_key=True)
    present: Mapped[bool] = mapped_column(Boolean, default=False)  # as reported by the host's agent
    # Why it is not there (VLAN_UNSUPPORTED, UPLINK_MISSING...): from the agent, or the server's own refusal.
    error_code: Mapped[str | None] = mapped_column(String(40))
    error_message: Mapped[str | None] = mapped_column(String(500))
    portgroup: Mapped[PortGroup] = relationship(back_populates="hosts")


class ResourcePool(Timestamped, Base):
    __tablename__ = "resource_pools"
    __table_args__ = (UniqueConstraint("cluster_id", "parent_id", "name", name="uq_pools_cluster_parent_name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters.id", ondelete="RESTRICT"), index=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("resource_pools.id", ondelete="RESTRICT"), index=True)
    cpu_reservation_mhz: Mapped[int] = mapped_column(Integer, default=0)
    cpu_limit_mhz: Mapped[int | None] = mapped_column(Integer)
    cpu_shares: Mapped[int] = mapped_column(Integer, default=4000)
    memory_reservation_mib: Mapped[int] = mapped_column(Integer, default=0)
    memory_limit_mib: Mapped[int | None] = mapped_column(Integer)
    memory_shares: Mapped[int] = mapped_column(Integer, default=163840)
    expandable_reservation: Mapped[bool] = mapped_column(Boolean, default=True)
    version: Mapped[int] = mapped_column(default=1)
    __mapper_args__ = {"version_id_col": version}


class ClusterRule(Timestamped, Base):
    """A DRS rule: VM-VM affinity / anti-affinity, or VM-host run-on / not-run-on; ``mandatory``
    is vCenter's "must" (never broken), otherwise "should"."""

    __tablename__ = "cluster_rules"
    __table_args__ = (UniqueConstraint("cluster_id", "name", name="uq_cluster_rules_cluster_name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(80))
    kind: Mapped[str] = mapped_column(String(16))  # affinity | anti-affinity | run-on | not-run-on
    mandatory: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    vm_ids: Mapped[list[Any]] = mapped_column(default=list)
    host_ids: Mapped[list[Any]] = mapped_column(default=list)
    vm_group: Mapped[str | None] = mapped_column(String(80))
    host_group: Mapped[str | None] = mapped_column(String(80))
    version: Mapped[int] = mapped_column(default=1)
    __mapper_args__ = {"version_id_col": version}


class DpmSample(Base):
    """One sample of a cluster's VM demand, taken by each DPM pass (DPM decides over windows)."""

    __tablename__ = "dpm_samples"
    id: Mapped[int] = mapped_column(primary_key=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    demands: Mapped[dict[str, Any]] = mapped_column(default=dict)  # vm id -> [cpu MHz, memory MiB]


class DrsRecommendation(Base):
    """One move DRS recommended, with its reasons as numbers; pending until applied (a VMotion
    Task), dismissed, or made stale by the next pass."""

    __tablename__ = "drs_recommendations"
    id: Mapped[int] = mapped_column(primary_key=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), index=True)
    vm_id: Mapped[int] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"), index=True)
    source_host_id: Mapped[int] = mapped_column(Integer)
    target_host_id: Mapped[int] = mapped_column(Integer)
    priority: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # rule | balance
    reason: Mapped[str] = mapped_column(Text)
    reasons: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(16), default="pending", index=True)  # pending | applied | dismissed | stale
    task_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column()


class VirtualMachine(Timestamped, Base):
    __tablename__ = "vms"
    __table_args__ = (UniqueConstraint("datacenter_id", "name", name="uq_vms_dc_name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    datacenter_id: Mapped[int] = mapped_column(ForeignKey("datacenters.id", ondelete="RESTRICT"), index=True)
    cluster_id: Mapped[int | None] = mapped_column(ForeignKey("clusters.id", ondelete="RESTRICT"), index=True)
    host_id: Mapped[int | None] = mapped_column(ForeignKey("hosts.id", ondelete="RESTRICT"), index=True)
    folder_id: Mapped[int | None] = mapped_column(ForeignKey("folders.id", ondelete="RESTRICT"), index=True)
    pool_id: Mapped[int | None] = mapped_column(ForeignKey("resource_pools.id", ondelete="RESTRICT"), index=True)
    vcpus: Mapped[int] = mapped_column(Integer, default=1)
    memory_mib: Mapped[int] = mapped_column(Integer, default=64)
    # vCenter's per-VM allocation: reservation (guaranteed), limit (cap), shares (None: normal).
    cpu_reservation_mhz: Mapped[int] = mapped_column(Integer, default=0)
    cpu_limit_mhz: Mapped[int | None] = mapped_column(Integer)
    memory_reservation_mib: Mapped[int] = mapped_column(Integer, default=0)
    memory_limit_mib: Mapped[int | None] = mapped_column(Integer)
    guest_os: Mapped[str] = mapped_column(String(64), default="other")
    power_state: Mapped[str] = mapped_column(String(16), default="poweredOff")
    # creating -> ready; orphaned / inaccessible come with host reconciliation
    status: Mapped[str] = mapped_column(String(16), default="creating")
    libvirt_uuid: Mapped[str] = mapped_column(String(36), unique=True)
    last_stop_reason: Mapped[str | None] = mapped_column(String(16))
    # A stop nobody asked for (vcenter.domain.ha.UNEXPECTED_STOPS), recorded by the host's
    # reports and not yet handled by the HA monitor, which clears it when it decides.
    unexpected_stop: Mapped[str | None] = mapped_column(String(16), index=True)  # indexed: every HA pass looks for the few set
    # How the VM boots when not from its disk: {"image": "tiny-linux", "ip": "10.99.0.11/24"}.
    boot: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The guest CPU definition: {"model", "features_require", "features_disable"} or None.
    cpu: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The guest's own heartbeat as the agent last read it (seq, hostname, machine_id, ip).
    guest_info: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    guest_heartbeat_at: Mapped[datetime | None] = mapped_column()
    version: Mapped[int] = mapped_column(default=1)
    __mapper_args__ = {"version_id_col": version}
    disks: Mapped[list["VirtualDisk"]] = relationship(back_populates="vm", cascade="all, delete-orphan", lazy="selectin", order_by="VirtualDisk.index")
    nics: Mapped[list["VirtualNic"]] = relationship(back_populates="vm", cascade="all, delete-orphan", lazy="selectin", order_by="VirtualNic.index")
    stats: Mapped["VmStats | None"] = relationship(viewonly=True, lazy="selectin")

    @property
    def cpu_demand_mhz(self) -> float | None:
        """CPU demand measured on the host (smoothed), None before two samples."""
        return self.stats.cpu_demand_mhz if self.stats is not None else None

    @property
    def cpu_demand_spread_mhz(self) -> float | None:
        """The noise of the VM's CPU-demand samples, told apart from their trend (what DRS uses)."""
        return self.stats.cpu_demand_spread_mhz if self.stats is not None else None


class VmStats(Base):
    """Measured demand of a running VM, updated by every host report. Kept apart from the VM
    row so that a sample never bumps the VM's version (an operator's edit would go stale)."""

    __tablename__ = "vm_stats"
    vm_id: Mapped[int] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"), primary_key=True)
    cpu_demand_mhz: Mapped[float | None] = mapped_column(Float)
    # The noise of the samples told apart from their trend (demand.noise_spread of the window):
    # how far one measurement may be off (DRS discounts gains that lie within it).
    cpu_demand_spread_mhz: Mapped[float | None] = mapped_column(Float)
    # The last demand.NOISE_WINDOW CPU-demand samples (MHz, oldest first) the spread is taken from.
    cpu_demand_window: Mapped[list[Any] | None] = mapped_column(JSON)
    cpu_time_ns: Mapped[int | None] = mapped_column(BigInteger)
    sampled_at: Mapped[datetime | None] = mapped_column()


class VirtualDisk(Base):
    __tablename__ = "vm_disks"
    __table_args__ = (UniqueConstraint("vm_id", "index", name="uq_vm_disks_vm_index"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    vm_id: Mapped[int] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    datastore_id: Mapped[int] = mapped_column(ForeignKey("datastores.id", ondelete="RESTRICT"), index=True)
    file: Mapped[str] = mapped_column(String(255))
    capacity_mib: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(8), default="qcow2")
    # A linked clone's disk is an overlay on this read-only base file (same datastore); None
    # for a standalone image. Promote flattens it.
    backing_file: Mapped[str | None] = mapped_column(String(255))
    vm: Mapped[VirtualMachine] = relationship(back_populates="disks")


class VirtualNic(Base):
    __tablename__ = "vm_nics"
    __table_args__ = (UniqueConstraint("vm_id", "index", name="uq_vm_nics_vm_index"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    vm_id: Mapped[int] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    portgroup_id: Mapped[int] = mapped_column(ForeignKey("portgroups.id", ondelete="RESTRICT"), index=True)
    mac: Mapped[str] = mapped_column(String(17), unique=True)
    model: Mapped[str] = mapped_column(String(16), default="virtio")
    vm: Mapped[VirtualMachine] = relationship(back_populates="nics")


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (Index("ix_tasks_state_lease", "state", "lease_expires_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(48))
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    step: Mapped[str] = mapped_column(String(64), default="queued")
    progress: Mapped[int] = mapped_column(Integer, default=0)
    object_type: Mapped[str] = mapped_column(String(24))
    object_id: Mapped[int] = mapped_column(Integer)
    host_id: Mapped[int | None] = mapped_column(ForeignKey("hosts.id", ondelete="SET NULL"))
    username: Mapped[str] = mapped_column(String(80), default="system")
    user_id: Mapped[int | None] = mapped_column(Integer, index=True)  # the owner (None: system)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error_code: Mapped[str | None] = mapped_column(String(48))
    error_message: Mapped[str | None] = mapped_column(Text)
    command_id: Mapped[str | None] = mapped_column(String(36))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()

    @property
    def placement(self) -> dict[str, Any] | None:
        """The placement decision this task acted on, with every host's reason."""
        return (self.params or {}).get("placement")


class ObjectClaim(Base):
    __tablename__ = "object_claims"
    object_type: Mapped[str] = mapped_column(String(24), primary_key=True)
    object_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), unique=True)


class IdempotencyKey(Base):
    """An operation's Idempotency-Key: the Task the first request with it started
    (vcenter.services.tasks.idempotency). Unique per user, so two replicas racing on one key
    start one Task."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("user_id", "key", name="uq_idempotency_keys_user_key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer)
    key: Mapped[str] = mapped_column(String(200))
    fingerprint: Mapped[str] = mapped_column(String(64))
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (Index("ix_events_object", "object_type", "object_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    username: Mapped[str] = mapped_column(String(80), default="system")
    # The acting user's id (None for the system's own actors): visibility and ownership are
    # decided on ids, never on names, which a new user could take.
    user_id: Mapped[int | None] = mapped_column(Integer, index=True)
    kind: Mapped[str] = mapped_column(String(48), index=True)
    object_type: Mapped[str | None] = mapped_column(String(24))
    object_id: Mapped[int | None] = mapped_column(Integer)
    object_name: Mapped[str | None] = mapped_column(String(255))
    message: Mapped[str] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(String(64))
    task_id: Mapped[int | None] = mapped_column(Integer)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The client address of the API request behind the event (None for the system's own).
    source: Mapped[str | None] = mapped_column(String(64))


class OutboxMessage(Base):
    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(primary_key=True)
    queue: Mapped[str] = mapped_column(String(64))
    task_name: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(index=True)
    send_attempts: Mapped[int] = mapped_column(Integer, default=0)


class User(Timestamped, Base):
    __tablename__ = "users"
    # AUTOINCREMENT on SQLite: a deleted user's id is never handed to a new one (PostgreSQL's
    # sequences never reuse); permissions, tokens and audit rows name principals by id.
    __table_args__ = {"sqlite_autoincrement": True}
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(80), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class Role(Timestamped, Base):
    """A named set of privileges (vcenter.domain.privileges); built-in roles cannot change."""

    __tablename__ = "roles"
    __table_args__ = {"sqlite_autoincrement": True}  # ids never reused (see User)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    privileges: Mapped[list[Any]] = mapped_column(default=list)
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str] = mapped_column(String(255), default="")


class Group(Timestamped, Base):
    __tablename__ = "groups"
    __table_args__ = {"sqlite_autoincrement": True}  # ids never reused (see User)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)


class GroupMember(Base):
    __tablename__ = "group_members"
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)


class Permission(Timestamped, Base):
    """(principal, role, object, propagate): the role's privileges for a user or a group on an
    inventory object (object_type "root" with object_id 0 is the whole inventory)."""

    __tablename__ = "permissions"
    __table_args__ = (UniqueConstraint("principal_type", "principal_id", "object_type", "object_id", name="uq_permissions_principal_object"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    principal_type: Mapped[str] = mapped_column(String(8))  # user | group
    principal_id: Mapped[int] = mapped_column(Integer, index=True)
    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id", ondelete="RESTRICT"), index=True)
    object_type: Mapped[str] = mapped_column(String(16))
    object_id: Mapped[int] = mapped_column(Integer)
    propagate: Mapped[bool] = mapped_column(Boolean, default=True)


class ApiToken(Base):
    """A long-lived token for scripts: the user's rights narrowed to a role (intersection)."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id", ondelete="RESTRICT"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column()
    last_used_at: Mapped[datetime | None] = mapped_column()
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class RefusedCredential(Base):
    """Refused credentials (user tokens, passwords, agent credentials, registration tokens),
    aggregated per source address, credential kind and minute: one row counts a flood, so the
    audit holds across API replicas without letting an attacker fill the database."""

    __tablename__ = "refused_credentials"
    __table_args__ = (UniqueConstraint("minute", "source", "credential", name="uq_refused_credentials_minute_source_credential"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    minute: Mapped[datetime] = mapped_column(index=True)
    source: Mapped[str] = mapped_column(String(64))
    credential: Mapped[str] = mapped_column(String(24))  # user_token | password | agent | registration
    count: Mapped[int] = mapped_column(Integer, default=1)
    last_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_detail: Mapped[str] = mapped_column(String(255), default="")


class LoginSession(Base):
    __tablename__ = "login_sessions"
    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class MetricSample(Base):
    """Performance statistics (vcenter.domain.metrics): one row per object, tier and instant,
    holding every counter of that object (real-time: a number each; rolled-up tiers:
    [avg, min, max, n] each). One row per instant rather than per counter keeps the table
    eight times smaller and a chart's query on one index range."""

    __tablename__ = "metric_samples"
    __table_args__ = (
        UniqueConstraint("object_type", "object_id", "tier", "at", name="uq_metric_samples_object_tier_at"),
        Index("ix_metric_samples_tier_at", "tier", "at"),
    )
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    object_type: Mapped[str] = mapped_column(String(16))
    object_id: Mapped[int] = mapped_column(Integer)
    tier: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column()
    values: Mapped[dict[str, Any]] = mapped_column(default=dict)


class MetricRollup(Base):
    """The rollup watermark of a tier: every bucket ending at or before ``done_until`` has
    been rolled up from the tier below."""

    __tablename__ = "metric_rollups"
    tier: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    done_until: Mapped[datetime] = mapped_column()


class AlarmDefinition(Timestamped, Base):
    """An alarm (vcenter.domain.alarms): a condition on objects of ``target_type`` at or below
    the scope object (``scope_type`` "root" for the whole inventory), its actions."""

    __tablename__ = "alarm_definitions"
    __table_args__ = (Index("ix_alarm_definitions_scope", "scope_type", "scope_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    target_type: Mapped[str] = mapped_column(String(16))
    scope_type: Mapped[str] = mapped_column(String(16), default="root")
    scope_id: Mapped[int | None] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    expression: Mapped[dict[str, Any]] = mapped_column(default=dict)
    actions: Mapped[list[Any]] = mapped_column(default=list)
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[int] = mapped_column(default=1)
    __mapper_args__ = {"version_id_col": version}


class AlarmState(Base):
    """The state of one alarm on one object: ok (green), warning (yellow) or critical (red),
    acknowledged or not. Kept when it turns green again (the last transition stays readable)."""

    __tablename__ = "alarm_states"
    __table_args__ = (
        UniqueConstraint("alarm_id", "object_type", "object_id", name="uq_alarm_states_alarm_object"),
        Index("ix_alarm_states_object", "object_type", "object_id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    alarm_id: Mapped[int] = mapped_column(ForeignKey("alarm_definitions.id", ondelete="CASCADE"), index=True)
    object_type: Mapped[str] = mapped_column(String(16))
    object_id: Mapped[int] = mapped_column(Integer)
    object_name: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="ok", index=True)
    message: Mapped[str] = mapped_column(Text, default="")
    value: Mapped[float | None] = mapped_column(Float)
    triggered_at: Mapped[datetime | None] = mapped_column()
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    acknowledged_at: Mapped[datetime | None] = mapped_column()
    acknowledged_by: Mapped[str | None] = mapped_column(String(80))


class AlarmWebhook(Base):
    """A webhook POST owed for an alarm transition: written in the evaluation's transaction,
    sent after it, retried with a doubling delay until delivered or out of attempts."""

    __tablename__ = "alarm_webhooks"
    __table_args__ = (Index("ix_alarm_webhooks_due", "state", "next_attempt_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    alarm_id: Mapped[int | None] = mapped_column(ForeignKey("alarm_definitions.id", ondelete="SET NULL"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column()


class VmSnapshotRow(Base):
    """A VM snapshot as libvirt holds it (internal qcow2): a tree by ``parent_id``; ``memory``
    when taken of a running VM (reverting resumes it), disks only otherwise."""

    __tablename__ = "vm_snapshots"
    __table_args__ = (UniqueConstraint("vm_id", "name", name="uq_vm_snapshots_vm_name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    vm_id: Mapped[int] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(80))
    description: Mapped[str] = mapped_column(Text, default="")
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("vm_snapshots.id", ondelete="SET NULL"))
    memory: Mapped[bool] = mapped_column(Boolean, default=False)
    power_state: Mapped[str] = mapped_column(String(16))
    current: Mapped[bool] = mapped_column(Boolean, default=False)
    task_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BackupJob(Timestamped, Base):
    """Where and how often a VM is backed up: a directory on a datastore, an interval (None:
    on demand only), how many restore points to keep, whether incrementals are made."""

    __tablename__ = "backup_jobs"
    __table_args__ = (UniqueConstraint("vm_id", "name", name="uq_backup_jobs_vm_name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    vm_id: Mapped[int] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(80))
    datastore_id: Mapped[int] = mapped_column(ForeignKey("datastores.id", ondelete="RESTRICT"), index=True)
    directory: Mapped[str] = mapped_column(String(1024))
    interval_s: Mapped[float | None] = mapped_column(Float)
    keep: Mapped[int] = mapped_column(Integer, default=7)
    incremental: Mapped[bool] = mapped_column(Boolean, default=True)
    full_every: Mapped[int] = mapped_column(Integer, default=7)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    last_run_at: Mapped[datetime | None] = mapped_column()
    version: Mapped[int] = mapped_column(default=1)
    __mapper_args__ = {"version_id_col": version}


class BackupPoint(Base):
    """One restore point: the files of every disk at one instant, full or incremental on
    ``parent_id`` (a chain); ``checkpoint`` names libvirt's checkpoint made with it."""

    __tablename__ = "backups"
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("backup_jobs.id", ondelete="CASCADE"), index=True)
    vm_id: Mapped[int] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # full | incremental
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("backups.id", ondelete="SET NULL"))
    state: Mapped[str] = mapped_column(String(16), default="running", index=True)  # running | ok | failed | deleting
    checkpoint: Mapped[str | None] = mapped_column(String(80))
    # [{"index", "target", "file" (relative to the datastore), "bytes"}]
    files: Mapped[list[Any]] = mapped_column(default=list)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    task_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column()


class Template(Timestamped, Base):
    """A template in the library: disk images + manifest in ``dir`` on a datastore.
    ``state``: creating (being captured or imported) -> ready -> converting (back to a VM) /
    deleting. A (datacenter, name) has versions 1, 2, ...; deploys take the latest unless told."""

    __tablename__ = "templates"
    __table_args__ = (UniqueConstraint("datacenter_id", "name", "version", name="uq_templates_dc_name_version"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    version: Mapped[int] = mapped_column(Integer, default=1)
    datacenter_id: Mapped[int] = mapped_column(ForeignKey("datacenters.id", ondelete="RESTRICT"), index=True)
    datastore_id: Mapped[int] = mapped_column(ForeignKey("datastores.id", ondelete="RESTRICT"), index=True)
    dir: Mapped[str] = mapped_column(String(1024))
    state: Mapped[str] = mapped_column(String(16), default="creating", index=True)
    guest_os: Mapped[str] = mapped_column(String(64), default="other")
    vcpus: Mapped[int] = mapped_column(Integer, default=1)
    memory_mib: Mapped[int] = mapped_column(Integer, default=64)
    # The manifest as the agent wrote it: hardware, disks [{file, format, capacity_mib, sha256}], origin.
    manifest: Mapped[dict[str, Any]] = mapped_column(default=dict)
    origin: Mapped[dict[str, Any]] = mapped_column(default=dict)
    boot: Mapped[dict[str, Any]] = mapped_column(default=dict)


class VmCustomization(Base):
    """A deployed VM's guest customisation: its cloud-init instance id, the machine-id the server
    issued, and the spec (users, keys, network, run-once commands). Read by the VM's agent over
    HTTPS to build the NoCloud seed; never on a queue."""

    __tablename__ = "vm_customizations"
    vm_id: Mapped[int] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"), primary_key=True)
    instance_id: Mapped[str] = mapped_column(String(64), unique=True)
    machine_id: Mapped[str] = mapped_column(String(32), unique=True)
    hostname: Mapped[str] = mapped_column(String(63))
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Upload(Base):
    """A file stored by the server for an agent to pull (an image or OVA to import), or an OVA an
    agent exported; ``sha256`` and ``size_bytes`` as received."""

    __tablename__ = "uploads"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default="upload")  # upload | export
    filename: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(String(1024))
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="receiving")  # receiving | ready | failed
    username: Mapped[str] = mapped_column(String(80), default="system")
    task_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# The objects a permission can name, by the object_type it names them with.
PERMISSION_OBJECTS: dict[type, str] = {
    Datacenter: "datacenter",
    Folder: "folder",
    Cluster: "cluster",
    Host: "host",
    Datastore: "datastore",
    PortGroup: "portgroup",
    ResourcePool: "pool",
    VirtualMachine: "vm",
}

# Ids of these objects are never handed out again (AUTOINCREMENT on SQLite; PostgreSQL's
# sequences never reuse): permissions, events, tasks and alarms name objects by id, and a new
# object must not inherit what named a deleted one.
for _model in PERMISSION_OBJECTS:
    _model.__table__.dialect_options["sqlite"]["autoincrement"] = True


def _drop_permissions_of(kind: str):
    def after_delete(_mapper: Any, connection: Any, target: Any) -> None:
        # A permission dies with its object, in the same transaction, whichever path deleted it.
        connection.execute(Permission.__table__.delete().where(Permission.object_type == kind, Permission.object_id == target.id))

    return after_delete


for _model, _kind in PERMISSION_OBJECTS.items():
    event.listen(_model, "after_delete", _drop_permissions_of(_kind))
