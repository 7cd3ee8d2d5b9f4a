"""A VM's power state and virtual hardware as vSphere reads them (issue 19 item 4, its reads):
``GET /api/vcenter/vm/{vm}/power``, ``.../hardware``, ``.../hardware/{cpu,memory,boot}``,
``.../hardware/disk[/{disk}]`` and ``.../hardware/ethernet[/{nic}]``.

Each answer is the matching piece of the VM's Info (vcenter.api.vsphere.shapes.vm_info: one
translation of our VM, so a piece never disagrees with the whole); System.View on the VM is
checked first (403), then the VM (404), then the device key (404 NOT_FOUND: disks are 2000 +
index, NICs 4000 + index). Changing hardware and power is the next stage (docs/api.md)."""

from __future__ import annotations

from typing import Any

from fastapi import Path

from vcenter.api.deps import DbDep
from vcenter.api.vsphere import inventory
from vcenter.api.vsphere.inventory import Viewer
from vcenter.api.vsphere.route import router as vsphere_router
from vcenter.core.errors import NotFound

router = vsphere_router(prefix="/api/vcenter/vm/{vm}")


def _info(db: Any, user: Any, vm: str) -> dict[str, Any]:
    return inventory.get_vm(vm, db, user)  # type: ignore[no-any-return]


def _device(info: dict[str, Any], kind: str, key: str) -> dict[str, Any]:
    devices = info["disks" if kind == "disk" else "nics"]
    if key not in devices:
        raise NotFound(f"the VM has no {kind} {key[:20]!r}", code=f"{kind.upper()}_NOT_FOUND")
    return devices[key]  # type: ignore[no-any-return]


@router.get("/power", name="vsphere_get_vm_power")
def get_power(vm: str, db: DbDep, user: Viewer) -> Any:
    return {"state": _info(db, user, vm)["power_state"]}


def _piece(path: str, key: str) -> None:
    """``GET .../{path}``: the ``key`` piece of the VM's Info."""

    def read(vm: str, db: DbDep, user: Viewer) -> Any:
        return _info(db, user, vm)[key]

    router.add_api_route(path, read, methods=["GET"], name=f"vsphere_get_vm_{key}")


def _devices(path: str, kind: str, param: str) -> None:
    """``GET .../{path}`` (the VM's device keys) and ``GET .../{path}/{<param>}`` (one device)."""

    def listing(vm: str, db: DbDep, user: Viewer) -> Any:
        return [{param: key} for key in _info(db, user, vm)["disks" if kind == "disk" else "nics"]]

    def one(vm: str, db: DbDep, user: Viewer, device: str = Path(alias=param)) -> Any:
        return _device(_info(db, user, vm), kind, device)

    router.add_api_route(path, listing, methods=["GET"], name=f"vsphere_list_vm_{kind}s")
    router.add_api_route(f"{path}/{{{param}}}", one, methods=["GET"], name=f"vsphere_get_vm_{kind}")


for _path, _key in (("/hardware", "hardware"), ("/hardware/cpu", "cpu"), ("/hardware/memory", "memory"), ("/hardware/boot", "boot")):
    _piece(_path, _key)
_devices("/hardware/disk", "disk", "disk")
_devices("/hardware/ethernet", "nic", "nic")
