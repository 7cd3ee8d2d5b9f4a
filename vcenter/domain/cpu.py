"""CPU compatibility, the pure part: does a VM's CPU fit on a host's CPU?

Vocabulary:
- CPU model (``CpuModel``): what a host offers: a vendor (``GenuineIntel``, ``AuthenticAMD``),
  a model name (``Skylake-Server``) and a set of feature flags (``avx2``, ``aes`` ...), as
  libvirt's host capabilities list them.
- CPU requirement (``CpuRequirement``): what a VM's CPU definition needs from a host: a vendor
  (or none) and a feature set. A VM started on a host sees that host's features; to move it, a
  target must offer every feature the VM was started with.
- EVC baseline: the features every host of a cluster offers, so that every VM of the cluster
  can move everywhere. ``baseline`` computes it as the intersection of the chosen hosts' feature
  sets; this is the pure fallback: the authoritative baseline comes from libvirt's
  ``baselineHypervisorCPU`` on the agents, and is stored as a ``CpuModel`` the same way.

Everything here is set arithmetic over plain data: no libvirt, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CpuModel:
    """A host CPU (or a named baseline): vendor, model name, feature flags."""

    vendor: str
    model: str = ""
    features: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class CpuRequirement:
    """What a VM's CPU needs from a host. ``vendor`` None means any vendor."""

    vendor: str | None = None
    features: frozenset[str] = frozenset()
    name: str = ""  # a label for messages, e.g. the EVC baseline's name


def requirement_of(cpu: CpuModel, name: str = "") -> CpuRequirement:
    """The requirement of a VM started with CPU ``cpu`` (host-model or an EVC baseline)."""
    return CpuRequirement(vendor=cpu.vendor, features=cpu.features, name=name or cpu.model)


def compatible(requirement: CpuRequirement | CpuModel | None, host_cpu: CpuModel | None) -> tuple[bool, tuple[str, ...]]:
    """Can a VM with ``requirement`` run on a host with ``host_cpu``?

    Returns ``(ok, missing)``: ``missing`` lists the required features the host lacks, sorted;
    a vendor mismatch appears as ``vendor:<needed vendor>`` and an unknown host CPU (not yet
    reported) as ``host CPU unknown`` when anything at all is required.
    """
    if requirement is None:
        return True, ()
    if isinstance(requirement, CpuModel):
        requirement = requirement_of(requirement)
    if not requirement.features and requirement.vendor is None:
        return True, ()
    if host_cpu is None:
        return False, ("host CPU unknown",)
    missing: list[str] = []
    if requirement.vendor is not None and requirement.vendor != host_cpu.vendor:
        missing.append(f"vendor:{requirement.vendor}")
    missing.extend(sorted(requirement.features - host_cpu.features))
    return (not missing), tuple(missing)


def baseline(cpus: Iterable[CpuModel], name: str = "") -> CpuModel:
    """The EVC baseline of ``cpus``: the features they all offer.

    All CPUs must share a vendor (EVC never spans Intel and AMD): ``ValueError`` otherwise, and
    for an empty input. The model name is ``name``, else the common model when all CPUs have
    the same one, else ``"baseline"``.
    """
    cpus = list(cpus)
    if not cpus:
        raise ValueError("baseline of no CPUs")
    vendors = sorted({c.vendor for c in cpus})
    if len(vendors) > 1:
        raise ValueError(f"no common baseline across vendors {', '.join(vendors)}")
    features = frozenset.intersection(*(c.features for c in cpus))
    models = {c.model for c in cpus}
    model = name or (models.pop() if len(models) == 1 else "baseline")
    return CpuModel(vendor=vendors[0], model=model, features=features)


def can_join(evc: CpuModel | None, host_cpu: CpuModel | None) -> tuple[bool, tuple[str, ...]]:
    """Can a host join a cluster whose EVC baseline is ``evc``? Same answer shape as ``compatible``."""
    if evc is None:
        return True, ()
    return compatible(requirement_of(evc), host_cpu)
