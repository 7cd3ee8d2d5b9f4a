"""Requests of the template library, deploy with guest customisation, import and export.

Customisation fields are checked here so that nothing odd reaches a cloud-init seed: user
names are POSIX names, SSH keys look like OpenSSH public keys, a password is given only as a
crypt(3) hash, run-once commands are single lines.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from vcenter.core.object_ids import ObjectIdField
from vcenter.schemas.base import RequestModel
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
