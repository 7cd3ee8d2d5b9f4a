"""vSphere's list filters: which query parameters each list takes, read into a ``Filters``.

Decisions:
- The parameters are those of vSphere's FilterSpec of each list (the upstream specification:
  ``names``, ``datacenters``, ``folders``, ...), written without prefix as ``/api`` takes them or
  with vSphere 6.7's ``filter.`` prefix; a parameter may repeat (``names=a&names=b``): any of
  its values matches. Different parameters must all match.
- Any other parameter is ignored, as vCenter ignores it: Ansible's vmware.vmware_rest lookups
  send the filters of one kind to the list of another while they walk a path
  (``/api/vcenter/resource-pool?parent_folders=...`` for ``/dc1/vm/prod/web2``) and rely on
  it; refusing them (our first choice: a misspelt filter then lists too much) broke the
  collection. Bounded: at most MAX_VALUES values per filter, each at most MAX_VALUE_LENGTH
  characters.
- Identifiers are read here (vcenter.api.vsphere.ids: the one id parser), so a malformed id is
  refused before any lookup; enumerations (``power_states``, ``connection_states``, ``types``,
  ``type``) must be vSphere's values; ``standalone`` is ``true`` or ``false``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vcenter.api.vsphere import ids
from vcenter.core.errors import Invalid

MAX_VALUES = 1000
MAX_VALUE_LENGTH = 255

POWER_STATES = ("POWERED_ON", "POWERED_OFF", "SUSPENDED")
CONNECTION_STATES = ("CONNECTED", "DISCONNECTED", "NOT_RESPONDING")
DATASTORE_TYPES = ("VMFS", "NFS", "NFS41", "CIFS", "VSAN", "VFFS", "VVOL")
NETWORK_TYPES = ("STANDARD_PORTGROUP", "DISTRIBUTED_PORTGROUP", "OPAQUE_NETWORK")
FOLDER_TYPES = ("DATACENTER", "DATASTORE", "HOST", "NETWORK", "VIRTUAL_MACHINE")

# The filters of each list (vSphere's FilterSpec fields).
ALLOWED: dict[str, tuple[str, ...]] = {
    "datacenter": ("datacenters", "names", "folders"),
    "cluster": ("clusters", "names", "folders", "datacenters"),
    "host": ("hosts", "names", "folders", "datacenters", "standalone", "clusters", "connection_states"),
    "datastore": ("datastores", "names", "types", "folders", "datacenters"),
    "network": ("networks", "names", "types", "folders", "datacenters"),
    "folder": ("folders", "names", "type", "parent_folders", "datacenters"),
    "resource_pool": ("resource_pools", "names", "parent_resource_pools", "datacenters", "hosts", "clusters"),
    "vm": ("vms", "names", "folders", "datacenters", "hosts", "clusters", "resource_pools", "power_states"),
}
# The kind of ours each id filter names (the list's own ids: by the list's kind).
_ID_FILTERS = {
    "datacenters": "datacenter",
    "clusters": "cluster",
    "hosts": "host",
    "datastores": "datastore",
    "networks": "portgroup",
    "vms": "vm",
    "resource_pools": "pool",
    "parent_resource_pools": "pool",
}
_ENUMS = {"power_states": POWER_STATES, "connection_states": CONNECTION_STATES, "type": FOLDER_TYPES}


@dataclass
class Filters:
    """A list's filters as read; ``None``: not given (anything matches)."""

    # datacenters, clusters, resource_pools, ... -> our ids (resource_pools of the VM list: the
    # pools containing the VMs)
    ids: dict[str, set[int]] = field(default_factory=dict)
    names: set[str] | None = None
    folders: set[ids.Ref] | None = None  # folders containing the object (the folder list: its ids)
    parent_folders: set[ids.Ref] | None = None
    enums: dict[str, set[str]] = field(default_factory=dict)  # power_states, connection_states, types, type
    standalone: bool | None = None

    def of(self, name: str) -> set[int] | None:
        return self.ids.get(name)


def _values(items: list[tuple[str, str]], name: str) -> list[str]:
    values = [v for k, v in items if k in (name, f"filter.{name}")]
    if len(values) > MAX_VALUES:
        raise Invalid(f"{name}: at most {MAX_VALUES} values", code="INVALID_FILTER", details={"field": name})
    for value in values:
        if len(value) > MAX_VALUE_LENGTH or "\x00" in value:
            raise Invalid(f"{name}: a value longer than {MAX_VALUE_LENGTH} characters or with NUL", code="INVALID_FILTER", details={"field": name})
    return values


def read(kind: str, items: list[tuple[str, str]]) -> Filters:
    """The filters of list ``kind`` (a key of ALLOWED) from the query's (name, value) pairs."""
    allowed = ALLOWED[kind]
    spec = Filters()
    for name in allowed:
        values = _values(items, name)
        if not values:
            continue
        if name == "names":
            spec.names = set(values)
        elif name in ("folders", "parent_folders"):
            # the folder list's own ids, else the folders containing the objects
            setattr(spec, name, {ids.parse_folder(v, name) for v in values})
        elif name == "standalone":
            if len(values) != 1 or values[0].lower() not in ("true", "false"):
                raise Invalid("standalone: give true or false", code="INVALID_FILTER", details={"field": name})
            spec.standalone = values[0].lower() == "true"
        elif name == "types":
            choices = NETWORK_TYPES if kind == "network" else DATASTORE_TYPES
            spec.enums[name] = _enum(name, values, choices)
        elif name in _ENUMS:
            spec.enums[name] = _enum(name, values, _ENUMS[name])
        else:
            target = _ID_FILTERS[name]
            spec.ids[name] = {ids.parse(v, name, target) for v in values}
    return spec


def _enum(name: str, values: list[str], choices: tuple[str, ...]) -> set[str]:
    wrong = [v for v in values if v not in choices]
    if wrong:
        raise Invalid(f"{name}: {wrong[0][:40]!r} is not one of {', '.join(choices)}", code="INVALID_FILTER", details={"field": name, "allowed": list(choices)})
    return set(values)


def matches(value: Any, wanted: set[Any] | None) -> bool:
    """Whether one attribute passes a filter (``None``: not filtered)."""
    return wanted is None or value in wanted


def contains(ancestors: set[Any], wanted: set[Any] | None) -> bool:
    """Whether an object inside ``ancestors`` passes a containment filter (``folders``)."""
    return wanted is None or bool(ancestors & wanted)
