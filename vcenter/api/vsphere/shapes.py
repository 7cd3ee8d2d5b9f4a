"""How each object of ours reads in the vSphere Automation API: the Summary of a list and the
Info of a get, with vSphere 8's field names and enumerations (the upstream 7.0.3 specification
in tests/data/vsphere/ has the same ones for this subset).

Decisions where our model and vSphere's differ (docs/api.md, "vSphere Automation
compatibility"):
- a datastore of ours is a directory, a block device or an NFS export; vSphere's types are
  file systems: ``nfs`` is ``NFS``, the others are ``VMFS`` (a host-local file system, which is
  what a client may assume of it). Capacity and free space are in bytes, left out while no
  host has reported them (0), as vSphere leaves them unset when unknown;
- a port group is a ``STANDARD_PORTGROUP`` (the switch is ours, not a distributed switch);
- a host's ``power_state`` is ``STANDBY`` when DPM put it in standby, else ``POWERED_ON`` while
  connected, and left out otherwise (vSphere: only relevant when connected);
- a VM's disks are SCSI disks on bus 0 (unit = their index), backed by a ``VMDK_FILE`` named
  ``[datastore] file`` whatever their format; its NICs are ``VMXNET3`` (a paravirtual NIC, as
  virtio is) on their port group, ``GENERATED`` MACs, connected while it runs; device keys are
  vSphere's: disks 2000 + index, NICs 4000 + index. Hardware version, boot and the devices we
  do not model (CD-ROMs, floppies, serial and parallel ports, adapters) read as a VM without
  them, BIOS boot, version VMX_19;
- a guest OS of ours that is one of vSphere's names (``UBUNTU_64``) is kept; ``linux``,
  ``windows`` and ``other`` read as OTHER_LINUX_64, WINDOWS_9_64 and OTHER_64; anything else as
  OTHER_64.
"""

from __future__ import annotations

from typing import Any

from vcenter.api.vsphere import ids

POWER = {"poweredOn": "POWERED_ON", "poweredOff": "POWERED_OFF", "suspended": "SUSPENDED"}
CONNECTION = {"connected": "CONNECTED", "disconnected": "DISCONNECTED", "notResponding": "NOT_RESPONDING"}
GUEST_OS = {"linux": "OTHER_LINUX_64", "windows": "WINDOWS_9_64", "other": "OTHER_64"}
# vSphere guest OS names kept as they are (the ones a Linux/KVM estate uses most).
VSPHERE_GUESTS = frozenset(
    {"OTHER_64", "OTHER", "OTHER_LINUX", "OTHER_LINUX_64", "OTHER_5X_LINUX_64", "OTHER_4X_LINUX_64", "UBUNTU_64", "DEBIAN_11_64", "RHEL_8_64", "RHEL_9_64", "CENTOS_8_64", "WINDOWS_9_64"}
)
DISK_KEY = 2000
NIC_KEY = 4000


def datastore_type(kind: str) -> str:
    return "NFS" if kind == "nfs" else "VMFS"


def guest_os(ours: str) -> str:
    return ours if ours in VSPHERE_GUESTS else GUEST_OS.get(ours.lower(), "OTHER_64")


def host_power_state(host: Any) -> str | None:
    if host.standby:
        return "STANDBY"
    return "POWERED_ON" if host.connection_state == "connected" else None


# --- summaries (lists) ------------------------------------------------------------------------
def datacenter_summary(dc: Any) -> dict[str, Any]:
    return {"datacenter": ids.object_id("datacenter", dc.id), "name": dc.name}


def cluster_summary(cluster: Any, ha_enabled: bool) -> dict[str, Any]:
    drs_enabled = bool(((cluster.settings or {}).get("drs") or {}).get("enabled"))
    return {"cluster": ids.object_id("cluster", cluster.id), "name": cluster.name, "ha_enabled": ha_enabled, "drs_enabled": drs_enabled}


def host_summary(host: Any) -> dict[str, Any]:
    out = {"host": ids.object_id("host", host.id), "name": host.name, "connection_state": CONNECTION.get(host.connection_state, "NOT_RESPONDING")}
    power = host_power_state(host)
    if power is not None:
        out["power_state"] = power
    return out


def datastore_summary(ds: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"datastore": ids.object_id("datastore", ds.id), "name": ds.name, "type": datastore_type(ds.kind)}
    if ds.capacity_bytes:
        out["free_space"] = ds.free_bytes
        out["capacity"] = ds.capacity_bytes
    return out


def network_summary(pg: Any) -> dict[str, Any]:
    return {"network": ids.object_id("portgroup", pg.id), "name": pg.name, "type": "STANDARD_PORTGROUP"}


def folder_summary(folder_id: str, name: str, folder_type: str) -> dict[str, Any]:
    return {"folder": folder_id, "name": name, "type": folder_type}


def pool_summary(pool: Any) -> dict[str, Any]:
    return {"resource_pool": ids.object_id("pool", pool.id), "name": pool.name}


def vm_summary(vm: Any) -> dict[str, Any]:
    return {"vm": ids.object_id("vm", vm.id), "name": vm.name, "power_state": POWER.get(vm.power_state, "POWERED_OFF"), "cpu_count": vm.vcpus, "memory_size_MiB": vm.memory_mib}


# --- infos (gets) -----------------------------------------------------------------------------
def datacenter_info(dc: Any) -> dict[str, Any]:
    return {
        "name": dc.name,
        "datastore_folder": ids.hidden_folder_id("datastore", dc.id),
        "host_folder": ids.hidden_folder_id("host", dc.id),
        "network_folder": ids.hidden_folder_id("network", dc.id),
        "vm_folder": ids.hidden_folder_id("vm", dc.id),
    }


def cluster_info(cluster: Any, root_pool: int | None) -> dict[str, Any]:
    """``root_pool``: the id of its root pool (every cluster has one, made with it)."""
    return {"name": cluster.name, "resource_pool": ids.object_id("pool", root_pool) if root_pool is not None else ""}


def datastore_info(ds: Any) -> dict[str, Any]:
    mounted = len(ds.mounts or [])
    out: dict[str, Any] = {"name": ds.name, "type": datastore_type(ds.kind), "accessible": mounted > 0, "multiple_host_access": mounted > 1, "thin_provisioning_supported": True}
    if ds.capacity_bytes:
        out["free_space"] = ds.free_bytes
    return out


def allocation(reservation: int, limit: int | None, shares: int, expandable: bool) -> dict[str, Any]:
    """A pool's CPU or memory allocation; shares are CUSTOM (ours are numbers)."""
    return {"reservation": reservation, "expandable_reservation": expandable, "limit": -1 if limit is None else limit, "shares": {"level": "CUSTOM", "shares": shares}}


def pool_info(pool: Any, children: list[str]) -> dict[str, Any]:
    return {
        "name": pool.name,
        "resource_pools": sorted(children),
        "cpu_allocation": allocation(pool.cpu_reservation_mhz, pool.cpu_limit_mhz, pool.cpu_shares, pool.expandable_reservation),
        "memory_allocation": allocation(pool.memory_reservation_mib, pool.memory_limit_mib, pool.memory_shares, pool.expandable_reservation),
    }


def vm_info(vm: Any, datastore_names: dict[int, str], network_names: dict[int, str]) -> dict[str, Any]:
    running = vm.power_state == "poweredOn"
    disks = {
        str(DISK_KEY + d.index): {
            "label": f"Hard disk {d.index + 1}",
            "type": "SCSI",
            "scsi": {"bus": 0, "unit": d.index},
            "backing": {"type": "VMDK_FILE", "vmdk_file": f"[{datastore_names.get(d.datastore_id, '')}] {d.file}"},
            "capacity": d.capacity_mib * 1024 * 1024,
        }
        for d in vm.disks
    }
    nics = {
        str(NIC_KEY + n.index): {
            "label": f"Network adapter {n.index + 1}",
            "type": "VMXNET3",
            "mac_type": "GENERATED",
            "mac_address": n.mac,
            "wake_on_lan_enabled": False,
            "backing": {"type": "STANDARD_PORTGROUP", "network": ids.object_id("portgroup", n.portgroup_id), "network_name": network_names.get(n.portgroup_id, "")},
            "state": "CONNECTED" if running else "NOT_CONNECTED",
            "start_connected": True,
            "allow_guest_control": False,
        }
        for n in vm.nics
    }
    return {
        "name": vm.name,
        "identity": {"name": vm.name, "bios_uuid": vm.libvirt_uuid, "instance_uuid": vm.libvirt_uuid},
        "guest_OS": guest_os(vm.guest_os),
        "power_state": POWER.get(vm.power_state, "POWERED_OFF"),
        "hardware": {"version": "VMX_19", "upgrade_policy": "NEVER", "upgrade_status": "NONE"},
        "boot": {"type": "BIOS", "delay": 0, "retry": False, "retry_delay": 10000, "enter_setup_mode": False},
        "boot_devices": [],
        "cpu": {"count": vm.vcpus, "cores_per_socket": 1, "hot_add_enabled": False, "hot_remove_enabled": False},
        "memory": {"size_MiB": vm.memory_mib, "hot_add_enabled": False},
        "disks": disks,
        "nics": nics,
        "cdroms": {},
        "floppies": {},
        "parallel_ports": {},
        "serial_ports": {},
        "sata_adapters": {},
        "scsi_adapters": {},
    }
