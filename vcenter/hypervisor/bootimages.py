"""Named boot images: what a VM spec's ``image`` becomes on the host that defines the VM.

What this module decides:
- A VM may boot from a named image the host provides instead of its disk (``VmSpec.image``).
  The agent of the host resolves the name when it defines the VM, into direct kernel boot
  files (kernel, initrd, command line) that exist on that host.
- The names are those that installed packages provide as entry points of the group
  ``virtcenter.boot_images`` (vcenter.core.plugins says why entry points), each a
  :class:`BootImageResolver`: the lab provides ``tiny-linux`` (vcenter.lab.guest); no code
  here imports a plugin.
- A name no installed package provides, or an image its resolver cannot find on this host,
  is DriverError BOOT_IMAGE_UNAVAILABLE.
- The guest's hostname is the VM's name made a DNS label (every character outside
  ``A-Za-z0-9-`` becomes ``-``, at most 63 characters, no ``-`` at either end, ``guest`` when
  nothing is left).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from vcenter.core import plugins
from vcenter.hypervisor.base import DriverError

if TYPE_CHECKING:
    from vcenter.core.settings import Settings
    from vcenter.messaging.contracts import VmSpec

BOOT_IMAGES_GROUP = "virtcenter.boot_images"


@dataclass(frozen=True)
class BootFiles:
    """Direct kernel boot on this host: paths of the kernel and the initrd, the command line."""

    kernel: str
    initrd: str
    cmdline: str


class BootImageResolver(Protocol):
    def __call__(self, settings: Settings, *, hostname: str, ip: str | None) -> BootFiles:
        """The boot files of this image on this host for a guest called ``hostname`` with
        address ``ip`` (``a.b.c.d/prefix``, or None); DriverError BOOT_IMAGE_UNAVAILABLE when
        the host lacks the image, ValueError when ``ip`` is not an address with a prefix."""
        ...


def guest_hostname(vm_name: str) -> str:
    """The guest's hostname for a VM called ``vm_name``: a DNS label."""
    return re.sub(r"[^A-Za-z0-9-]", "-", vm_name)[:63].strip("-") or "guest"


def resolve_boot_image(name: str, settings: Settings, *, vm_name: str, ip: str | None) -> BootFiles:
    """The boot files of image ``name`` on this host for the VM ``vm_name`` (see the module)."""
    resolver = plugins.load(BOOT_IMAGES_GROUP, name)
    if resolver is None:
        raise DriverError("BOOT_IMAGE_UNAVAILABLE", f"no boot image {name!r} is installed on this host")
    return resolver(settings, hostname=guest_hostname(vm_name), ip=ip)


def with_boot_files(spec: VmSpec, settings: Settings) -> VmSpec:
    """``spec`` with its boot image (``spec.image``) resolved into the kernel, initrd and
    command line on this host; ``spec`` itself when it names none."""
    if spec.image is None:
        return spec
    boot = resolve_boot_image(spec.image, settings, vm_name=spec.name, ip=spec.guest_ip)
    return spec.model_copy(update={"kernel": boot.kernel, "initrd": boot.initrd, "cmdline": boot.cmdline})
