"""vSphere identifiers: how each object of ours is named in the vSphere Automation API, and
how such a name is read back (docs/api.md, "vSphere Automation compatibility").

Decisions:
- An object stored in a table of ours keeps its id behind a prefix of its vSphere type:
  ``datacenter-N``, ``domain-cN`` (cluster), ``host-N``, ``datastore-N``, ``network-N`` (port
  group), ``vm-N``. Stable for the object's life because the id is.
  A resource pool is ``resgroup-N``: each cluster's root pool ``Resources`` is a pool row of
  ours already (made with the cluster, parent none), as in vCenter.
- vSphere has folders we do not store: the root folder ``group-d1`` ("Datacenters") and each
  datacenter's four hidden folders (``vm``, ``host``, ``datastore``, ``network``). They take
  ids derived from their datacenter, interleaved with our own folders by parity: for a
  datacenter D the hidden folders are ``group-v{2D}``, ``group-h{2D}``, ``group-s{2D}``,
  ``group-n{2D}``; our folder F of kind vm/host/datastore/network is ``group-{v,h,s,n}{2F+1}``.
  So every id is computed, none is stored, and none changes while its object lives (a folder
  id of ours above 2**30 - 1 would have no derived id within the parser's bound: ids are
  counted from 1 and stay far below).
- Reading: the one id parser (vcenter.core.object_ids.parse_prefixed_id) splits the prefix and
  reads the number canonically: ``vm-+42``, ``vm-042``, ``vm-4_2`` are refused (400
  INVALID_ARGUMENT), never read as 42. A number that decodes to no id of ours (``group-d2``,
  a derived id beyond INT32_MAX) names nothing: 404 where it is looked up.
"""

from __future__ import annotations

from dataclasses import dataclass

from vcenter.core.object_ids import parse_prefixed_id

# vSphere's prefix of each kind we store one row per object of.
PREFIX = {"datacenter": "datacenter-", "cluster": "domain-c", "host": "host-", "datastore": "datastore-", "portgroup": "network-", "pool": "resgroup-", "vm": "vm-"}
# The letter of each folder category (our Folder.kind and a datacenter's hidden folders).
FOLDER_LETTER = {"vm": "v", "host": "h", "datastore": "s", "network": "n"}
FOLDER_PREFIXES = tuple(f"group-{letter}" for letter in FOLDER_LETTER.values()) + ("group-d",)
ROOT_FOLDER = "group-d1"
ROOT_FOLDER_NAME = "Datacenters"
# vSphere's type of each folder category, and its name as a datacenter's hidden folder.
FOLDER_TYPE = {"vm": "VIRTUAL_MACHINE", "host": "HOST", "datastore": "DATASTORE", "network": "NETWORK"}


@dataclass(frozen=True)
class Ref:
    """What a folder identifier names: ``folder`` (one of ours, of ``category``),
    ``hidden_folder`` (``id`` its datacenter, ``category`` which of the four) or
    ``root_folder`` (``id`` 1: group-d1, the only one)."""

    kind: str
    id: int
    category: str | None = None


# --- naming ---------------------------------------------------------------------------------
def object_id(kind: str, object_id: int) -> str:
    return f"{PREFIX[kind]}{object_id}"


def folder_id(category: str, folder: int) -> str:
    return f"group-{FOLDER_LETTER[category]}{2 * folder + 1}"


def hidden_folder_id(category: str, datacenter: int) -> str:
    return f"group-{FOLDER_LETTER[category]}{2 * datacenter}"


# --- reading --------------------------------------------------------------------------------
def parse(raw: str, field: str, kind: str) -> int:
    """The id of our ``kind`` object written ``raw`` (``vm-42`` -> 42); 400 when malformed."""
    return parse_prefixed_id(raw, (PREFIX[kind],), field)[1]


def parse_folder(raw: str, field: str) -> Ref:
    """What a folder identifier names: the root, a hidden folder, or one of our folders."""
    prefix, number = parse_prefixed_id(raw, FOLDER_PREFIXES, field)
    if prefix == "group-d":
        return Ref("root_folder", number)  # only group-d1 exists
    category = next(c for c, letter in FOLDER_LETTER.items() if prefix == f"group-{letter}")
    return Ref("hidden_folder", number // 2, category) if number % 2 == 0 else Ref("folder", (number - 1) // 2, category)


ROOT = Ref("root_folder", 1)


def name_of(ref: Ref) -> str:
    """The vSphere identifier of a folder ``Ref`` (the inverse of parse_folder)."""
    if ref.kind == "root_folder":
        return f"group-d{ref.id}"
    if ref.kind == "hidden_folder":
        return hidden_folder_id(ref.category or "vm", ref.id)
    return folder_id(ref.category or "vm", ref.id)
