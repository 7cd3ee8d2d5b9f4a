"""Requests and answers of the template library, deploy with guest customisation, import and export.

Customisation fields are checked here so that nothing odd reaches a cloud-init seed: user
names are POSIX names, SSH keys look like OpenSSH public keys, a password is given only as a
crypt(3) hash, run-once commands are single lines.
"""

from __future__ import annotations

from datetime import datetime
from ipaddress import IPv4Address, IPv4Interface
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from vcenter.core.object_ids import ObjectIdField
from vcenter.schemas.base import ExampleModel, RequestModel
from vcenter.schemas.inventory import KernelBoot, Name, NicCreate

UserName = Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")]
SshKey = Annotated[
    str, StringConstraints(max_length=4096, pattern=r"^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) [A-Za-z0-9+/]+={0,3}( [^\r\n]{0,200})?$")
]
PasswordHash = Annotated[str, StringConstraints(pattern=r"^\$(1|5|6|y|2[aby])\$[./A-Za-z0-9$=,]{8,200}$")]
DnsLabel = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")]
Command = Annotated[str, StringConstraints(min_length=1, max_length=1000, pattern=r"^[^\r\n\x00]+$")]


class GuestUser(RequestModel):
    name: UserName
    ssh_authorized_keys: list[SshKey] = Field(default_factory=list, max_length=32)
    sudo: bool = False
    groups: list[UserName] = Field(default_factory=list, max_length=16)
    password_hash: PasswordHash | None = Field(None, description="a crypt(3) hash (mkpasswd -m sha-512); never a clear password")


class GuestNetwork(RequestModel):
    address: IPv4Interface | None = Field(None, description="address/prefix of the first NIC; omit for DHCP")
    gateway: IPv4Address | None = None
    dns: list[IPv4Address] = Field(default_factory=list, max_length=4)


class Customization(RequestModel):
    """A cloud-init NoCloud seed: every deployed VM also gets its own instance id, the
    machine-id the server issues, and fresh SSH host keys."""

    hostname: DnsLabel | None = Field(None, description="default: the VM's name as a DNS label")
    users: list[GuestUser] = Field(default_factory=list, max_length=16)
    network: GuestNetwork | None = None
    runcmd: list[Command] = Field(default_factory=list, max_length=32, description="run once, on the first boot of this instance")


class DeployRequest(RequestModel):
    name: Name
    mode: Literal["linked", "full"] = Field("linked", description="linked: qcow2 overlays on the template's images (constant time); full: independent copies")
    host_id: ObjectIdField | None = Field(None, description="omit with cluster_id to let placement choose")
    cluster_id: ObjectIdField | None = None
    datastore_id: ObjectIdField | None = Field(None, description="full clones only: where the copies go (default: the template's datastore)")
    folder_id: ObjectIdField | None = None
    pool_id: ObjectIdField | None = None
    vcpus: int | None = Field(None, ge=1, le=64)
    memory_mib: int | None = Field(None, ge=16, le=1024 * 1024)
    kernel_boot: KernelBoot | None = None
    nics: list[NicCreate] = Field(default_factory=list, max_length=8)
    customization: Customization | None = None


class VmToTemplate(RequestModel):
    name: Name | None = Field(None, description="the template's name (default: the VM's); a name used before gets the next version")


class TemplateToVm(RequestModel):
    name: Name | None = None
    host_id: ObjectIdField | None = None
    cluster_id: ObjectIdField | None = None
    folder_id: ObjectIdField | None = None
    pool_id: ObjectIdField | None = None
    kernel_boot: KernelBoot | None = None
    nics: list[NicCreate] = Field(default_factory=list, max_length=8)


class ImportDisk(RequestModel):
    name: Name
    datastore_id: ObjectIdField = Field(..., description="where the VM's disk goes")
    upload_id: ObjectIdField | None = Field(None, description="an upload (POST /api/v1/uploads) holding the image")
    path: str | None = Field(None, max_length=1024, description="or an image already on a datastore, relative to it")
    source_datastore_id: ObjectIdField | None = Field(None, description="the datastore of ``path`` (default: datastore_id)")
    format: Literal["vmdk", "vhd", "vpc", "vhdx", "vdi", "raw", "qcow2"] | None = Field(None, description="what the image is; checked against qemu-img's detection")
    host_id: ObjectIdField | None = None
    cluster_id: ObjectIdField | None = None
    folder_id: ObjectIdField | None = None
    pool_id: ObjectIdField | None = None
    vcpus: int = Field(1, ge=1, le=64)
    memory_mib: int = Field(96, ge=16, le=1024 * 1024)
    guest_os: str = Field("other", max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    kernel_boot: KernelBoot | None = None
    nics: list[NicCreate] = Field(default_factory=list, max_length=8)


class ImportOva(RequestModel):
    upload_id: ObjectIdField
    datastore_id: ObjectIdField
    name: Name | None = Field(None, description="default: the appliance's name")
    host_id: ObjectIdField | None = None
    cluster_id: ObjectIdField | None = None
    folder_id: ObjectIdField | None = None
    pool_id: ObjectIdField | None = None
    vcpus: int | None = Field(None, ge=1, le=64, description="default: from the OVF descriptor")
    memory_mib: int | None = Field(None, ge=16, le=1024 * 1024, description="default: from the OVF descriptor")
    kernel_boot: KernelBoot | None = None
    nics: list[NicCreate] = Field(default_factory=list, max_length=8)


class BrowseRequest(RequestModel):
    path: str = Field("", max_length=1024, description="a folder relative to the datastore's root ('' = the root)")


# --- answers ---------------------------------------------------------------------------------
class TemplateRead(ExampleModel):
    """A template (one version of a name) with its manifest of images."""

    id: int
    name: str
    version: int
    datacenter_id: int
    datastore_id: int
    dir: str = Field(description="its folder on the datastore", examples=["templates/web-base/v3"])
    state: str = Field(description="creating, ready, deleting, error", examples=["ready"])
    guest_os: str = Field(examples=["linux"])
    vcpus: int
    memory_mib: int
    disks: list[dict[str, Any]] = Field(description="the manifest's disk images", examples=[[{"file": "disk0.qcow2", "format": "qcow2", "sha256": "9f86d081884c7d65", "capacity_mib": 8192}]])
    origin: dict[str, Any] | None = Field(description="where it came from (a VM, an import)", examples=[{"vm_id": 7}])
    boot: dict[str, Any] | None = Field(examples=[{"firmware": "bios"}])
    manifest: dict[str, Any] | None = Field(examples=[{"disks": [{"file": "disk0.qcow2", "format": "qcow2", "sha256": "9f86d081884c7d65"}]}])
    created_at: datetime
    updated_at: datetime


class TemplateDependent(ExampleModel):
    """A linked clone whose disks have the template's images as backing files."""

    id: int
    name: str


class UploadRead(ExampleModel):
    """An upload or an export's OVA: its file's size and SHA-256, and its state."""

    id: int
    kind: str = Field(description="upload or export", examples=["upload"])
    filename: str = Field(examples=["web-base.ova"])
    size_bytes: int = Field(examples=[104857600])
    sha256: str | None = Field(examples=["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"])
    state: str = Field(description="ready, or pending for an export not yet pushed", examples=["ready"])
    username: str
    task_id: int | None = Field(description="the export Task", examples=[None])
    created_at: datetime


class ApplianceDisk(ExampleModel):
    disk_id: str = Field(examples=["vmdisk1"])
    file: str | None = Field(description="the disk's file in the OVA", examples=["disk1.vmdk"])
    capacity_bytes: int = Field(examples=[8589934592])
    file_size: int | None = Field(examples=[104857600])
    format: str | None = Field(description="the OVF disk format URL", examples=["http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"])


class ApplianceRead(ExampleModel):
    """The hardware an uploaded OVA's OVF descriptor describes."""

    name: str
    vcpus: int
    memory_mib: int
    guest_os: str = Field(examples=["linux"])
    os_id: int | None = Field(description="the OVF OperatingSystemSection id", examples=[36])
    nics: int = Field(examples=[1])
    disks: list[ApplianceDisk]


class CustomizationUser(ExampleModel):
    name: str | None = Field(examples=["ops"])
    ssh_authorized_keys: int = Field(description="how many keys (the keys are not shown)", examples=[1])


class CustomizationRead(ExampleModel):
    """A deployed VM's cloud-init identity (no secrets)."""

    vm_id: int
    instance_id: str = Field(examples=["iid-7-1"])
    machine_id: str = Field(examples=["3f0e2d9b7c104c3e8a516f1c1a7e2b9d"])
    hostname: str
    users: list[CustomizationUser]
