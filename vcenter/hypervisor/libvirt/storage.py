"""Storage on a libvirt host: datastores as ``dir`` storage pools, disk images, and the disks
a domain's definition names (mixed into LibvirtDriver, vcenter.hypervisor.libvirt.driver).
Moving a disk between datastores (block copy, frozen base, offline) is storagemove.py.

What this module decides:
- Datastores are ``dir`` storage pools (ensure_pool / pool_usage / remove_pool); disks are still
  made by qemu-img, then the pool covering the directory is refreshed so that they show up as
  volumes. No pool operation ever deletes a file.
- A new disk image is created under a temporary name and renamed, so that a crash midway never
  leaves a half-made file that a redelivered create would take as done.
- The disks of a domain are its ``devices/disk`` elements of device ``disk`` (CD-ROMs and
  floppies are not disks); pointing the persistent definition at a moved disk changes its
  source file and format, and drops the backing chain when the move flattened it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import xml.etree.ElementTree as ET

import libvirt

from vcenter.hypervisor.base import DriverError
from vcenter.hypervisor.libvirt.xml import disk_path, validate_abs_path, validate_name
from vcenter.messaging.contracts import VmSpec

log = logging.getLogger(__name__)


def dir_pool_xml(name: str, path: str) -> str:
    """The definition of a ``dir`` storage pool named ``name`` on the directory ``path``."""
    root = ET.Element("pool", {"type": "dir"})
    ET.SubElement(root, "name").text = name
    ET.SubElement(ET.SubElement(root, "target"), "path").text = path
    return ET.tostring(root, encoding="unicode")


def domain_disks(xml: str) -> list[tuple[str, str | None, ET.Element | None]]:
    """(target dev, source file or None, <mirror> element or None) of every disk of a domain
    definition, in its order; devices other than ``disk`` (cdrom, floppy) are left out."""
    out = []
    for disk in ET.fromstring(xml).findall("devices/disk"):
        target = disk.find("target")
        if target is None or disk.get("device", "disk") != "disk":
            continue
        src = disk.find("source")
        out.append((target.get("dev"), src.get("file") if src is not None else None, disk.find("mirror")))
    return out


def find_disk(xml: str, disk_target: str) -> tuple[str | None, ET.Element | None, str | None] | None:
    """(source file, <mirror>, driver format) of the disk ``disk_target`` of a domain
    definition, any device kind; None when it has no such disk."""
    for disk in ET.fromstring(xml).findall("devices/disk"):
        target = disk.find("target")
        if target is not None and target.get("dev") == disk_target:
            src = disk.find("source")
            drv = disk.find("driver")
            return (src.get("file") if src is not None else None, disk.find("mirror"), drv.get("type") if drv is not None else None)
    return None


def point_disk_at(xml: str, disk_target: str, dest_path: str, dest_format: str, flatten: bool) -> str | None:
    """A domain definition whose disk ``disk_target`` is the file ``dest_path`` of format
    ``dest_format`` (its backing chain dropped when ``flatten``), or None when it already is
    (source and format). DISK_NOT_FOUND when the definition has no such disk."""
    root = ET.fromstring(xml)
    for disk in root.findall("devices/disk"):
        target = disk.find("target")
        if target is None or target.get("dev") != disk_target:
            continue
        src = disk.find("source")
        drv = disk.find("driver")
        if src is None:
            src = ET.SubElement(disk, "source")
        if src.get("file") == dest_path and (drv is None or drv.get("type") == dest_format):
            return None
        src.set("file", dest_path)
        if drv is None:
            drv = ET.SubElement(disk, "driver", {"name": "qemu"})
        drv.set("type", dest_format)
        if flatten:
            for bs in disk.findall("backingStore"):
                disk.remove(bs)
        return ET.tostring(root, encoding="unicode")
    raise DriverError("DISK_NOT_FOUND", f"the persistent definition has no disk {disk_target}")


class StorageOps:
    """Mixin of LibvirtDriver: needs ``_c``, ``_err``, ``is_alive`` (host.py), ``uri`` and
    ``_conn``."""

    # --- storage pools (datastores) -------------------------------------------------------
    def _pool(self, name: str) -> libvirt.virStoragePool | None:
        try:
            return self._c().storagePoolLookupByName(validate_name(name))
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
                return None
            raise self._err(e) from None

    @staticmethod
    def _pool_target(pool: libvirt.virStoragePool) -> str | None:
        return ET.fromstring(pool.XMLDesc(0)).findtext("target/path")

    def ensure_pool(self, name: str, path: str) -> None:
        """Define (if absent), build, start and autostart a ``dir`` pool on ``path``; idempotent.
        A pool of that name on another directory is POOL_CONFLICT."""
        validate_name(name)
        validate_abs_path(path, "pool path")
        path = os.path.normpath(path)
        pool = self._pool(name)
        try:
            if pool is None:
                try:
                    pool = self._c().storagePoolDefineXML(dir_pool_xml(name, path), 0)
                except libvirt.libvirtError as e:
                    if self.is_alive() and e.get_error_code() == libvirt.VIR_ERR_OPERATION_FAILED:
                        # libvirt: "Storage source conflict with pool: 'other'" (same path)
                        raise DriverError("POOL_CONFLICT", e.get_error_message() or str(e)) from None
                    raise
            else:
                existing = self._pool_target(pool)
                if existing is None or os.path.normpath(existing) != path:
                    raise DriverError("POOL_CONFLICT", f"pool {name!r} is defined on {existing}, not {path}")
            if not pool.isActive():
                if not os.path.isdir(path):
                    pool.build(0)  # a dir pool's build is mkdir; never formats anything
                try:
                    pool.create(0)
                except libvirt.libvirtError as e:
                    if e.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:  # raced: active
                        raise
            if not pool.autostart():
                pool.setAutostart(1)
        except libvirt.libvirtError as e:
            raise self._err(e) from None

    def pool_usage(self, name: str) -> tuple[int, int]:
        """(capacity, available) bytes of a pool, after a refresh."""
        pool = self._pool(name)
        if pool is None:
            raise DriverError("DATASTORE_ABSENT", f"no storage pool {name!r}")
        try:
            if not pool.isActive():
                raise DriverError("DATASTORE_INACCESSIBLE", f"storage pool {name!r} is not active")
            pool.refresh(0)
            _state, capacity, _allocation, available = pool.info()
        except libvirt.libvirtError as e:
            raise self._err(e) from None
        return capacity, available

    def remove_pool(self, name: str) -> None:
        """Stop and undefine a pool; its directory and files stay. Idempotent."""
        pool = self._pool(name)
        if pool is None:
            return
        try:
            if pool.isActive():
                pool.destroy()  # a dir pool's destroy deactivates; it deletes nothing
            pool.undefine()
        except libvirt.libvirtError as e:
            err = self._err(e)
            if e.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
                raise err from None

    def _refresh_pools_covering(self, directories: set[str]) -> None:
        """Refresh every active pool whose target is one of ``directories`` so that new files
        appear as volumes. Best effort: the files exist whatever the pool says."""
        if not directories or self._conn is None:
            return
        wanted = {os.path.realpath(d) for d in directories}
        try:
            pools = self._c().listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
            for pool in pools:
                target = self._pool_target(pool)
                if target and os.path.realpath(target) in wanted:
                    pool.refresh(0)
        except libvirt.libvirtError as e:
            log.warning("cannot refresh storage pools on %s: %s", self.uri, e.get_error_message())

    # --- disks --------------------------------------------------------------------------
    def create_disks(self, spec: VmSpec) -> list[str]:
        paths = []
        created: set[str] = set()
        for d in spec.disks:
            path = disk_path(d.datastore_path, d.file)
            paths.append(path)
            if os.path.exists(path):
                continue
            if not os.path.isdir(d.datastore_path):
                raise DriverError("DATASTORE_ABSENT", f"datastore directory {d.datastore_path} does not exist")
            # Create under a temporary name and rename: a crash mid-way must not leave a
            # half-made file that the next (redelivered) create would skip.
            tmp = f"{path}.creating-{os.getpid()}-{threading.get_ident()}"
            r = subprocess.run(["qemu-img", "create", "-q", "-f", d.format, tmp, f"{d.capacity_mib}M"], capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
                raise DriverError("DISK_CREATE_FAILED", f"{path}: {r.stderr.strip()}")
            os.rename(tmp, path)
            created.add(d.datastore_path)
        self._refresh_pools_covering(created)
        return paths

    # --- the disks of a domain ----------------------------------------------------------
    def _disks_of(self, dom: libvirt.virDomain, flags: int = 0) -> list[tuple[str, str | None, ET.Element | None]]:
        """(target dev, source file, <mirror> element or None) of every file disk."""
        try:
            xml = dom.XMLDesc(flags)
        except libvirt.libvirtError as e:
            raise self._err(e) from None
        return domain_disks(xml)

    def _disk_of(self, dom: libvirt.virDomain, disk_target: str, flags: int = 0) -> tuple[str | None, ET.Element | None, str | None]:
        """(source file, <mirror>, driver format) of one disk; DISK_NOT_FOUND otherwise."""
        try:
            xml = dom.XMLDesc(flags)
        except libvirt.libvirtError as e:
            raise self._err(e) from None
        found = find_disk(xml, disk_target)
        if found is None:
            raise DriverError("DISK_NOT_FOUND", f"domain {dom.UUIDString()} has no disk {disk_target}")
        return found

    def _persist_disk_path(self, dom: libvirt.virDomain, disk_target: str, dest_path: str, dest_format: str, flatten: bool) -> None:
        """Make the persistent definition's disk point at ``dest_path`` (redefined with its own
        UUID: libvirt refuses a redefinition of a known name without it)."""
        try:
            if not dom.isPersistent():
                return
            xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
        except libvirt.libvirtError as e:
            raise self._err(e) from None
        redefined = point_disk_at(xml, disk_target, dest_path, dest_format, flatten)
        if redefined is None:
            return
        try:
            self._c().defineXML(redefined)
        except libvirt.libvirtError as e:
            raise self._err(e) from None
