"""Versioned payloads between the server and the host agents.

Vocabulary:
- Command: server -> agent, on the host's own queue ``host.<id>``. It names its target host,
  carries a unique ``command_id`` (idempotency key) and the ``task_id`` it advances. It carries
  no secrets. On the queue it travels inside a signed envelope (vcenter.messaging.signing).
- Report: agent -> server, over the HTTP API with the host's own token: task progress, task
  results, VM lifecycle events and full host state.
- Protocol version: what both sides speak, a number that grows with each release that changes
  the wire. A command carries it (``Command.version``, stamped when the server signs it; a
  body without it came from a server before versions and is read as 1); every agent request
  carries it in the ``X-Vcenter-Protocol`` header (none: 1). Changes are additive: a newer
  server's command keeps its fields' meaning, and one whose name an agent does not know is
  answered ``UNKNOWN_COMMAND`` as the task's error. The server reads reports of
  ``OLDEST_PROTOCOL_VERSION`` (the previous release's agents) up to its own, and refuses others
  with ``PROTOCOL_VERSION_UNSUPPORTED``. Versions: 1, the first release; 2, reports declare
  their version and unknown command names are answered, not dropped.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, StringConstraints, field_validator

from vcenter.core.examples import ExampleModel
from vcenter.core.object_ids import NonNegativeInt32, NonNegativeInt64, ObjectIdField
from vcenter.domain.uplinks import NIC_NAME

PROTOCOL_VERSION = 2
OLDEST_PROTOCOL_VERSION = 1  # the previous release's agents: the server still reads them
PROTOCOL_HEADER = "X-Vcenter-Protocol"


class UnsupportedProtocol(ValueError):
    """A peer's protocol version this side cannot read (PROTOCOL_VERSION_UNSUPPORTED)."""


def report_protocol(header: str | None) -> int:
    """The protocol version an agent's request declares (its header; none: 1, an agent from
    before versions), or UnsupportedProtocol when this server cannot read it."""
    if header is None or not header.strip():
        return 1
    if not header.strip().isdigit() or len(header.strip()) > 6:
        raise UnsupportedProtocol(f"protocol version {header[:20]!r} is not a number")
    version = int(header)
    if not OLDEST_PROTOCOL_VERSION <= version <= PROTOCOL_VERSION:
        raise UnsupportedProtocol(
            f"this server reads agent protocol versions {OLDEST_PROTOCOL_VERSION} to {PROTOCOL_VERSION}, not {version}: "
            + ("upgrade the server before its agents" if version > PROTOCOL_VERSION else "upgrade the agent")
        )
    return version


AGENT_EXECUTE_TASK = "agent.execute"


def host_queue(host_id: int) -> str:
    return f"host.{host_id}"


ORCHESTRATOR_QUEUE = "orchestrator"


# The active HA monitor's lock (SET NX PX, renewed by its loop): held by whichever `vcenter ha`
# acts; the others stand by. Read by the container healthcheck too.
HA_LOCK_KEY = "vc:ha:lock"

# How many passes the active HA monitor completed (INCR after each): who needs to know what the
# monitor has or has not done by now waits on a number of passes, not on a time. Lost with
# Redis' keys (it counts from 0 again after a Redis restart).
HA_PASSES_KEY = "vc:ha:passes"


def heartbeat_key(host_id: int) -> str:
    """Redis key an agent renews every heartbeat period, with a TTL; never a database write."""
    return f"vc:hb:host:{host_id}"


def ha_datastore_view_key(host_id: int) -> str:
    """Redis key where an agent publishes what it read in its peers' datastore heartbeat files:
    JSON {peer host id: {"n": counter, "holds": [VM uuids], "released": [VM uuids], "isolated": bool}}."""
    return f"vc:ha:ds:{host_id}"


def feed_streams_key(user_id: int) -> str:
    """Redis sorted set of a user's open event/task streams (member: a stream's id, score: when
    its slot expires unless renewed), shared by every API replica (vcenter.services.tasks.stream_slots)."""
    return f"vc:feeds:streams:{user_id}"


class DiskSpec(ExampleModel):
    index: int
    datastore_id: int
    datastore_path: str = Field(description="mount point of the datastore on the target host")
    file: str = Field(description="file name relative to the datastore")
    capacity_mib: int
    format: Literal["qcow2", "raw"] = "qcow2"
    bus: Literal["virtio", "sata", "ide"] = "virtio"


class NicSpec(ExampleModel):
    index: int
    portgroup: str
    bridge: str
    mac: str
    model: Literal["virtio", "e1000", "rtl8139"] = "virtio"


class CpuSpec(ExampleModel):
    """A guest CPU definition (libvirt's CPU map names): gives a VM a CPU generation of its
    own, and lets hosts that all have the same real CPU present different ones."""

    model: str | None = None
    vendor: str | None = None
    features_require: list[str] = []
    features_disable: list[str] = []
    mode: Literal["custom", "host-model", "host-passthrough"] = "custom"


class VmSpec(ExampleModel):
    name: str
    uuid: str
    vcpus: int
    memory_mib: int
    guest_os: str = "other"
    disks: list[DiskSpec] = []
    nics: list[NicSpec] = []
    # A boot image the agent resolves on its host ("tiny-linux": the lab guest) and the
    # guest's address on its first NIC; or explicit direct kernel boot paths.
    image: Literal["tiny-linux"] | None = None
    guest_ip: str | None = None
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    # None: the hypervisor's default CPU (host-passthrough under KVM, QEMU's default under TCG).
    cpu: CpuSpec | None = None
    resources: "ResourceSpec | None" = None


class ResourceSpec(ExampleModel):
    """Enforcement of a VM's allocation on its host through libvirt (cgroups): CPU shares
    (relative weight), a CPU cap for the whole VM (global period/quota) and a memory soft limit
    (reclaim pressure above it; a hard limit would let the kernel kill QEMU)."""

    cpu_shares: int | None = Field(None, ge=2, le=262144)
    cpu_quota_us: int | None = Field(None, ge=1000, description="per 100 ms period, for the whole VM")
    memory_soft_limit_mib: int | None = Field(None, ge=16)


CommandName = Literal[
    "vm.create",  # create disks (if absent) and define the domain (if absent)
    "vm.start",
    "vm.stop",  # hard power off
    "vm.shutdown",  # guest shutdown, with timeout
    "vm.reset",
    "vm.ha_start",  # HA restart here: define the domain if absent (disks on shared datastores), then start
    "vm.suspend",  # managed save
    "vm.resume",  # start from the managed save image
    "vm.reconfigure",  # vCPUs / memory of a powered-off VM
    "vm.delete",  # undefine and delete disks
    "vm.guest",  # a command to the guest through its heartbeat channel
    "vm.migrate",  # live migration to another host (sent to the source host)
    "vm.relocate",  # move disks to other datastores on this host (Storage VMotion)
    "host.cpu_baseline",  # libvirt's CPU baseline of the given host CPU definitions
    "host.cpu_compare",  # does a guest CPU definition run on this host (libvirt's comparison)
    "host.refresh",  # send a full state report now
    # snapshots, clones, backups (workers.agent.vmdata)
    "vm.snapshot.create",  # internal snapshot (with memory when running)
    "vm.snapshot.revert",
    "vm.snapshot.delete",
    "vm.clone",  # the clone's disk files: point-in-time full copy, or linked overlays
    "vm.promote",  # flatten a linked clone's disks
    "vm.backup",  # push backup (full/incremental with checkpoints) of a running or stopped VM
    "vm.restore",  # backup chain -> disk files (over a stopped VM, or a new VM defined here)
    # templates, customisation, import/export (workers.agent.templates)
    "template.capture",  # a powered-off VM's disks into a template folder with its manifest
    "template.release",  # a template's images back to a VM's disks, the domain defined again
    "template.delete",  # remove a template's folder from its datastore
    "template.verify",  # recompute a template's image checksums against its manifest
    "datastore.browse",  # list a folder of a datastore (names, sizes, image formats)
    "vm.deploy",  # linked/full clones of a template's images + NoCloud seed, then define
    "vm.import_disk",  # pull an upload (or take a datastore file), convert to qcow2, define
    "vm.import_ova",  # pull an OVA upload, extract its disks, convert, define
    "vm.export",  # disks to stream-optimised VMDKs + OVF into an OVA pushed to the server
    "console.open",  # not queued: presented to the agent's console endpoint to open a VM's serial console
]


def known_command(name: str) -> bool:
    return name in get_args(CommandName)


class Command(ExampleModel):
    # The protocol version of the server that sent it (stamped by CommandSigner.seal); a body
    # without one is from a server before versions: 1.
    version: int = Field(1, ge=1)
    command_id: str
    task_id: int | None
    host_id: int
    # Any well-formed name, not only CommandName: a newer server may send a command this agent
    # does not know, which it answers with UNKNOWN_COMMAND instead of refusing the message.
    name: str = Field(max_length=64, pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
    args: dict[str, Any] = {}
    issued_at: datetime
    # Set when the command is signed for sending (vcenter.messaging.signing): the agent
    # refuses it afterwards. ``command_id`` doubles as the nonce of the replay check.
    expires_at: datetime | None = None

    @field_validator("args")
    @classmethod
    def _no_secrets(cls, args: dict[str, Any]) -> dict[str, Any]:
        """Queues are readable by every host: a secret (password, token, key, cloud-init
        user data) never goes into a command; the agent fetches it over HTTPS instead."""

        def walk(value: Any, path: str) -> None:
            if isinstance(value, dict):
                for key, item in value.items():
                    if _SECRET_KEY.search(str(key)):
                        raise ValueError(f"command argument {path}{key} looks like a secret: secrets never travel on a queue")
                    walk(item, f"{path}{key}.")
            elif isinstance(value, list):
                for item in value:
                    walk(item, path)

        walk(args, "")
        return args


_SECRET_KEY = re.compile(r"pass(word|wd|phrase)?$|secret|token|private.?key|user.?data|credential", re.IGNORECASE)


class TaskProgress(ExampleModel):
    command_id: str
    step: str
    progress: int = Field(0, ge=0, le=100)
    details: dict[str, Any] | None = Field(None, description="e.g. libvirt's migration job stats")


class TaskResult(ExampleModel):
    command_id: str
    ok: bool
    result: dict[str, Any] = {}
    error_code: str | None = None
    error_message: str | None = None
    domain: "DomainState | None" = None


class DomainState(ExampleModel):
    uuid: str
    name: str
    power_state: Literal["poweredOn", "poweredOff", "suspended"]
    # Bounded to their columns (vms.vcpus, vms.memory_mib: INTEGER; vm_stats.cpu_time_ns:
    # BIGINT): a report the database cannot hold is a 422, not a 500.
    vcpus: NonNegativeInt32 | None = None
    memory_mib: NonNegativeInt32 | None = None
    cpu_time_ns: NonNegativeInt64 | None = None
    guest: dict[str, Any] | None = Field(None, description="last guest heartbeat: seq, hostname, machine_id, ip, age_s")


class LifecycleEvent(ExampleModel):
    uuid: str
    name: str
    event: str  # libvirt event name: started, stopped, suspended, ...
    reason: str  # our StopReason or the libvirt detail
    power_state: Literal["poweredOn", "poweredOff", "suspended"] | None
    at: datetime


NicName = Annotated[str, StringConstraints(pattern=NIC_NAME.pattern)]


class HostFacts(ExampleModel):
    hostname: str
    host_uuid: str | None = None
    cpu_model: str | None = None
    cpu_cores: NonNegativeInt32 | None = None
    cpu_mhz: NonNegativeInt32 | None = None
    memory_mib: NonNegativeInt32 | None = None
    hypervisor: str | None = None  # "kvm" or "qemu" (TCG)
    libvirt_version: str | None = None
    agent_version: str | None = Field(None, max_length=64, description="the agent's release (vcenter.core.release)")
    # The CPU features guests can be given here (libvirt names, sorted); a declared lab CPU's
    # when the host declares one.
    cpu_features: list[str] = []
    cpu_xml: str | None = Field(None, description="the host's CPU definition as guests get it (declared, or the hypervisor's host-model)")
    datastore_roots: list[str] | None = Field(None, description="the folders below which this host's agent provides datastores (agent_datastore_roots); the server sends it no datastore outside them")
    nics: list[NicName] | None = Field(None, max_length=256, description="the host's NICs (physical links, or veth/dummy ones standing in for them), the candidates for a switch's uplinks")
    vlan_8021q: bool | None = Field(None, description="whether the host's kernel makes 802.1Q links (measured by the agent; None: not known)")


class DatastoreUsage(ExampleModel):
    id: ObjectIdField
    capacity_bytes: NonNegativeInt64
    free_bytes: NonNegativeInt64


class PortgroupError(ExampleModel):
    """A port group the agent could not make as asked (vcenter.domain.uplinks names the codes)."""

    bridge: str = Field(max_length=15)
    code: str = Field(max_length=40, pattern=r"^[A-Z][A-Z0-9_]*$")
    message: str = Field(max_length=500)


class HostState(ExampleModel):
    facts: HostFacts
    domains: list[DomainState]
    datastores: list[DatastoreUsage] = []
    bridges: list[str] = Field(default=[], description="port-group bridges present on the host")
    portgroup_errors: list[PortgroupError] = Field(default=[], max_length=4096, description="port groups the agent refused or failed to make, with a stable code")


class DomainCounters(ExampleModel):
    """Cumulative counters of one running domain as libvirt reports them (the agent turns two
    readings into rates)."""

    uuid: str
    vcpus: int = 1
    memory_mib: int = 0
    cpu_time_ns: int | None = None
    rss_kib: int | None = Field(None, description="resident memory of the QEMU process")
    guest_available_kib: int | None = Field(None, description="memory the guest sees (its balloon driver's report)")
    guest_unused_kib: int | None = Field(None, description="memory the guest leaves unused (its balloon driver's report)")
    disk_read_bytes: int = 0
    disk_write_bytes: int = 0
    net_rx_bytes: int = 0
    net_tx_bytes: int = 0


class HostCounters(ExampleModel):
    """One reading of a host's cumulative CPU time, its memory and its running domains."""

    cpus: int
    cpu_mhz: int
    cpu_busy_ns: int | None = None
    cpu_total_ns: int | None = None
    memory_total_kib: int | None = None
    memory_available_kib: int | None = Field(None, description="free + buffers + cache")
    domains: list[DomainCounters] = []


class VmMetrics(ExampleModel):
    uuid: str
    values: dict[str, float]


class MetricsReport(ExampleModel):
    """Agent -> server every metrics sample period: counter values (vcenter.domain.metrics
    COUNTERS: percent, MHz, MiB, bytes/s) of the host and of each running VM, rates over
    ``interval_s`` measured on the agent's monotonic clock."""

    interval_s: float | None = None
    host: dict[str, float] = {}
    vms: list[VmMetrics] = []


class MigrationOptions(ExampleModel):
    """How to live-migrate one domain (VMotion), peer to peer: the source libvirtd connects to
    ``dest_uri`` itself. Only ``dest_uri`` is required; the rest default to a plain live
    migration with persistent definition on the target and none left on the source."""

    dest_uri: str = Field(description="libvirt URI of the target as the SOURCE daemon reaches it, e.g. qemu+tcp://10.213.0.12/system")
    dest_address: str | None = Field(None, description="address of the migration stream on the target (tcp://<dest_address>); None: the target's migration_host")
    max_downtime_ms: int | None = Field(None, ge=1)
    bandwidth_mibps: int | None = Field(None, ge=1, description="cap of the memory (and disk) stream")
    auto_converge: bool = False
    postcopy: bool = Field(False, description="post-copy allowed: switch to it when pre-copy has not converged after postcopy_after_iterations passes over memory")
    postcopy_after_iterations: int = Field(3, ge=1)
    tls: bool = False
    unsafe: bool = Field(False, description="VIR_MIGRATE_UNSAFE: needed for disks on a shared directory that libvirt does not know as shared (lab-dir datastores)")
    copy_storage: bool = Field(False, description="copy non-shared disks along (VIR_MIGRATE_NON_SHARED_DISK)")
    copy_disks: list[str] | None = Field(None, description="with copy_storage: the disk targets (vda, ...) to copy; None = every disk")
    dest_disk_paths: dict[str, str] | None = Field(
        None,
        description="with copy_storage: disk target "
        "(vda, ...) -> image path on the target host, when it "
        "differs from the source (a relocation to another "
        "host's datastore); sent as the destination XML",
    )


class MigrationProgress(ExampleModel):
    """One reading of a migration or disk-move job (libvirt job stats / block job info).
    Bytes unless said otherwise. Zero pages are not in ``memory_processed`` (they cost almost
    nothing on the wire): ``memory_zero_bytes`` counts them, so processed + zero + remaining
    ~ memory_total."""

    phase: str = Field(description="setup | precopy | postcopy | copying | ready | completed | cancelled | failed")
    data_total: int | None = None
    data_processed: int | None = None
    data_remaining: int | None = None
    memory_total: int | None = None
    memory_processed: int | None = None
    memory_remaining: int | None = None
    memory_zero_bytes: int | None = None
    memory_bps: int | None = None
    disk_total: int | None = None
    disk_processed: int | None = None
    disk_remaining: int | None = None
    dirty_rate: int | None = Field(None, description="pages per second dirtied by the guest")
    iteration: int | None = None
    elapsed_ms: int | None = None
    downtime_ms: int | None = Field(None, description="real downtime on completion; expected downtime meanwhile")
    setup_time_ms: int | None = None
    already_done: bool = Field(False, description="nothing was moved: a redelivered command found it done")

    @property
    def percent(self) -> int:
        if self.phase == "completed":
            return 100
        total, remaining = self.data_total, self.data_remaining
        if not total or remaining is None:
            return 0
        return max(0, min(99, int(100 * (total - remaining) / total)))


# --- typed arguments of commands (the saga commands; the others, and the table naming the
# model of every command, are in vcenter.messaging.commands) -------------------------------
# ``Command.args`` stays a dict on the wire: these models build it (``args()``) with the exact
# keys and order the agent reads, and read it back (``model_validate``).
class CommandArgs(ExampleModel):
    def args(self) -> dict[str, Any]:
        """The command's ``args`` as they travel: JSON values, field names as the agent reads them."""
        return self.model_dump(mode="json", by_alias=True)

    def domain_uuid(self) -> str | None:
        """The domain the command acts on, when it names one: its ``uuid``, else its spec's
        (what the agent reports the state of after a failure)."""
        uuid = getattr(self, "uuid", None)
        if isinstance(uuid, str) and uuid:
            return uuid
        spec = getattr(self, "spec", None)
        return spec.uuid if isinstance(spec, VmSpec) else None


class CreateArgs(CommandArgs):
    """``vm.create``: create the disks (if absent) and define the domain (if absent)."""

    spec: VmSpec


class DeployClone(ExampleModel):
    """One disk of a deploy: a linked overlay on, or a full copy of, a template image."""

    index: int
    mode: str
    source: str
    source_format: str = "qcow2"
    dest: str


class SeedFile(ExampleModel):
    """Where the agent writes a VM's NoCloud seed (its content is fetched over HTTPS)."""

    path: str


class DeployArgs(CommandArgs):
    """``vm.deploy``: make the disks from images (``clones``: linked overlays or full copies,
    none for a clone's own seed only), write the NoCloud seed at ``seed.path``, define ``spec``."""

    spec: VmSpec
    clones: list[DeployClone]
    mode: str
    seed: SeedFile | None


class MigrateArgs(CommandArgs):
    """``vm.migrate``, sent to the source host: live-migrate domain ``uuid``."""

    uuid: str
    options: MigrationOptions


class DiskMove(ExampleModel):
    """One disk of a relocation: its index and target (vda, ...), its format, its image's old
    and new paths (as the host that runs the VM sees them) and the datastore it goes to."""

    index: int
    target: str
    format: str
    from_: str = Field(alias="from")
    to: str
    datastore_id: int


class RelocateArgs(CommandArgs):
    """``vm.relocate`` of a VM on its host (``running``: block copy and pivot, else conversion),
    or with ``migrate`` a running VM's live migration to another host with the moved disks."""

    uuid: str
    moves: list[DiskMove]
    running: bool
    migrate: MigrationOptions | None = None

    def args(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=self.migrate is None)


class FileCopy(ExampleModel):
    """One image file the copier converts from its old path to its new one (same format)."""

    from_: str = Field(alias="from")
    to: str
    format: str


class OfflineCopyArgs(CommandArgs):
    """``vm.relocate`` step ``copy`` of a powered-off VM's relocation, sent to the copier."""

    offline_step: Literal["copy"] = "copy"
    uuid: str
    copies: list[FileCopy]


class OfflineDefineArgs(CommandArgs):
    """Step ``define``, sent to the target: the domain on its new paths."""

    offline_step: Literal["define"] = "define"
    spec: VmSpec


class OfflineFinishArgs(CommandArgs):
    """Step ``finish``, sent to the source: undefine the domain, then remove the old files."""

    offline_step: Literal["finish"] = "finish"
    uuid: str
    remove: list[str]


class OfflineDiscardArgs(CommandArgs):
    """Step ``discard`` after a failure or cancel: remove the new files (and undefine the
    domain ``uuid`` when it was defined on the target)."""

    offline_step: Literal["discard"] = "discard"
    uuid: str | None
    paths: list[str]


TaskResult.model_rebuild()
VmSpec.model_rebuild()
