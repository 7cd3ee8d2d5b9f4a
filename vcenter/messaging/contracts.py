"""Versioned payloads between the server and the host agents.

Vocabulary:
- Command: server -> agent, on the host's own queue ``host.<id>``. It names its target host,
  carries a unique ``command_id`` (idempotency key) and the ``task_id`` it advances. It carries
  no secrets.
- Report: agent -> server, over the HTTP API with the host's own token: task progress, task
  results, VM lifecycle events and full host state.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

CONTRACT_VERSION = 1

AGENT_EXECUTE_TASK = "agent.execute"


def host_queue(host_id: int) -> str:
    return f"host.{host_id}"


ORCHESTRATOR_QUEUE = "orchestrator"


def heartbeat_key(host_id: int) -> str:
    """Redis key an agent renews every heartbeat period, with a TTL; never a database write."""
    return f"vc:hb:host:{host_id}"


class DiskSpec(BaseModel):
    index: int
    datastore_id: int
    datastore_path: str = Field(description="mount point of the datastore on the target host")
    file: str = Field(description="file name relative to the datastore")
    capacity_mib: int
    format: Literal["qcow2", "raw"] = "qcow2"
    bus: Literal["virtio", "sata", "ide"] = "virtio"


class NicSpec(BaseModel):
    index: int
    portgroup: str
    bridge: str
    mac: str
    model: Literal["virtio", "e1000", "rtl8139"] = "virtio"


class CpuSpec(BaseModel):
    """A guest CPU definition (libvirt's CPU map names): gives a VM a CPU generation of its
    own, and lets hosts that all have the same real CPU present different ones."""
    model: str | None = None
    vendor: str | None = None
    features_require: list[str] = []
    features_disable: list[str] = []
    mode: Literal["custom", "host-model", "host-passthrough"] = "custom"


class VmSpec(BaseModel):
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


CommandName = Literal[
    "vm.create",       # create disks (if absent) and define the domain (if absent)
    "vm.start",
    "vm.stop",         # hard power off
    "vm.shutdown",     # guest shutdown, with timeout
    "vm.reset",
    "vm.suspend",      # managed save
    "vm.resume",       # start from the managed save image
    "vm.reconfigure",  # vCPUs / memory of a powered-off VM
    "vm.delete",       # undefine and delete disks
    "vm.guest",        # a command to the guest through its heartbeat channel
    "host.refresh",    # send a full state report now
]


class Command(BaseModel):
    version: int = CONTRACT_VERSION
    command_id: str
    task_id: int | None
    host_id: int
    name: CommandName
    args: dict[str, Any] = {}
    issued_at: datetime


class TaskProgress(BaseModel):
    command_id: str
    step: str
    progress: int = Field(0, ge=0, le=100)


class TaskResult(BaseModel):
    command_id: str
    ok: bool
    result: dict[str, Any] = {}
    error_code: str | None = None
    error_message: str | None = None
    domain: "DomainState | None" = None


class DomainState(BaseModel):
    uuid: str
    name: str
    power_state: Literal["poweredOn", "poweredOff", "suspended"]
    vcpus: int | None = None
    memory_mib: int | None = None
    cpu_time_ns: int | None = None
    guest: dict[str, Any] | None = Field(None, description="last guest heartbeat: seq, hostname, machine_id, ip, age_s")


class LifecycleEvent(BaseModel):
    uuid: str
    name: str
    event: str                       # libvirt event name: started, stopped, suspended, ...
    reason: str                      # our StopReason or the libvirt detail
    power_state: Literal["poweredOn", "poweredOff", "suspended"] | None
    at: datetime


class HostFacts(BaseModel):
    hostname: str
    host_uuid: str | None = None
    cpu_model: str | None = None
    cpu_cores: int | None = None
    cpu_mhz: int | None = None
    memory_mib: int | None = None
    hypervisor: str | None = None       # "kvm" or "qemu" (TCG)
    libvirt_version: str | None = None
    # The CPU features guests can be given here (libvirt names, sorted); a declared lab CPU's
    # when the host declares one.
    cpu_features: list[str] = []


class DatastoreUsage(BaseModel):
    id: int
    capacity_bytes: int
    free_bytes: int


class HostState(BaseModel):
    facts: HostFacts
    domains: list[DomainState]
    datastores: list[DatastoreUsage] = []
    bridges: list[str] = Field(default=[], description="port-group bridges present on the host")


TaskResult.model_rebuild()
