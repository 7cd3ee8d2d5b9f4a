"""govc-style inventory paths over the public API, resolved on the client.

The tree: ``/`` holds datacenters; a datacenter holds four fixed folders, ``vm`` (VM folders,
nested, and VMs), ``host`` (clusters and hosts outside a cluster; a cluster holds its hosts),
``datastore`` and ``network`` (port groups and switches). So ``/dc1/vm/web1``,
``/dc1/vm/prod/web1``, ``/dc1/host/cluster1/host1``, ``/dc1/datastore/ds1``,
``/dc1/network/pg10``. Each step is one list request filtered by parent and name (the lists'
filters; the server applies the caller's permissions, so a path through objects one may not
see does not resolve). An object is named by its path, its id (digits) or, when unique among
what the caller sees, its bare name.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator
from typing import Any

from vcenter.client.api import Client
from vcenter.client.errors import ApiError, PathError

__all__ = ["KINDS", "Inventory", "PathError", "split"]
from vcenter.client.models import InventoryItem

CATEGORIES = ("vm", "host", "datastore", "network")
PLURAL = {
    "datacenter": "datacenters",
    "folder": "folders",
    "cluster": "clusters",
    "host": "hosts",
    "vm": "vms",
    "datastore": "datastores",
    "switch": "switches",
    "portgroup": "portgroups",
    "pool": "pools",
}
KINDS = tuple(PLURAL)


def split(path: str) -> list[str]:
    """The components of an absolute or relative path (``.`` and empty ones dropped)."""
    parts = [p for p in path.strip().split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PathError(f"{path!r}: '..' is not supported; give the path from /", code="INVALID_PATH")
    return parts


def join(*parts: str) -> str:
    return "/" + "/".join(p for p in parts if p)


def _item(kind: str, doc: dict[str, Any], parent: str) -> InventoryItem:
    return InventoryItem(kind=kind, name=doc["name"], path=join(parent.strip("/"), doc["name"]), id=doc["id"], raw=doc)


class Inventory:
    def __init__(self, client: Client) -> None:
        self.client = client

    # --- listing one level -----------------------------------------------------------------
    def _list(self, of: str, **filters: Any) -> list[dict[str, Any]]:
        return list(self.client.list_all(PLURAL[of], **filters))

    def _named(self, of: str, name: str, **filters: Any) -> list[dict[str, Any]]:
        # the name filter takes '*' as a wildcard: compare exactly here
        return [doc for doc in self._list(of, name=name, **filters) if doc["name"] == name]

    def children(self, item: InventoryItem) -> list[InventoryItem]:
        """What ``ls`` shows inside ``item`` (nothing for a leaf)."""
        if item.kind == "root":
            return [_item("datacenter", d, "") for d in self._list("datacenter", sort="name")]
        if item.kind == "datacenter":
            return [InventoryItem(kind="category", name=c, path=join(item.name, c), raw={"datacenter_id": item.id}) for c in CATEGORIES]
        if item.kind == "category":
            dc = item.raw["datacenter_id"]
            if item.name == "vm":
                return self._vm_folder_children(dc, None, item.path)
            if item.name == "host":
                clusters = [_item("cluster", c, item.path) for c in self._list("cluster", datacenter_id=dc, sort="name")]
                return clusters + [_item("host", h, item.path) for h in self._list("host", datacenter_id=dc, sort="name") if h["cluster_id"] is None]
            if item.name == "datastore":
                return [_item("datastore", d, item.path) for d in self._list("datastore", datacenter_id=dc, sort="name")]
            return [_item("portgroup", p, item.path) for p in self._list("portgroup", datacenter_id=dc, sort="name")] + [
                _item("switch", s, item.path) for s in self._list("switch", datacenter_id=dc, sort="name")
            ]
        if item.kind == "folder":
            return self._vm_folder_children(item.raw["datacenter_id"], item.id, item.path)
        if item.kind == "cluster":
            return [_item("host", h, item.path) for h in self._list("host", cluster_id=item.id, sort="name")]
        return []

    def _vm_folder_children(self, dc: int, folder: int | None, parent: str) -> list[InventoryItem]:
        folders = [f for f in self._list("folder", datacenter_id=dc, kind="vm", sort="name") if f["parent_id"] == folder]
        vms = self._list("vm", datacenter_id=dc, sort="name") if folder is None else self._list("vm", folder_id=folder, sort="name")
        return [_item("folder", f, parent) for f in folders] + [_item("vm", v, parent) for v in vms if v["folder_id"] == folder]

    # --- resolving a path ------------------------------------------------------------------
    def resolve(self, path: str) -> InventoryItem:
        parts = split(path)
        item = InventoryItem(kind="root", name="/", path="/")
        for depth, part in enumerate(parts):
            item = self._step(item, part, depth)
        return item

    def _step(self, item: InventoryItem, part: str, depth: int) -> InventoryItem:
        found: list[InventoryItem]
        where = join(item.path.strip("/"), part)
        if item.kind == "root":
            found = [_item("datacenter", d, "") for d in self._named("datacenter", part)]
        elif item.kind == "datacenter":
            if part not in CATEGORIES:
                raise PathError(f"{where}: a datacenter holds {', '.join(CATEGORIES)}")
            return InventoryItem(kind="category", name=part, path=where, raw={"datacenter_id": item.id})
        elif item.kind == "category" and item.name == "vm" or item.kind == "folder":
            dc = item.raw["datacenter_id"]
            parent = None if item.kind == "category" else item.id
            found = [_item("folder", f, item.path) for f in self._named("folder", part, datacenter_id=dc, kind="vm") if f["parent_id"] == parent]
            found += [_item("vm", v, item.path) for v in self._named("vm", part, datacenter_id=dc) if v["folder_id"] == parent]
        elif item.kind == "category" and item.name == "host":
            dc = item.raw["datacenter_id"]
            found = [_item("cluster", c, item.path) for c in self._named("cluster", part, datacenter_id=dc)]
            found += [_item("host", h, item.path) for h in self._named("host", part, datacenter_id=dc) if h["cluster_id"] is None]
        elif item.kind == "category":
            dc = item.raw["datacenter_id"]
            kinds = ("datastore",) if item.name == "datastore" else ("portgroup", "switch")
            found = [_item(kind, d, item.path) for kind in kinds for d in self._named(kind, part, datacenter_id=dc)]
        elif item.kind == "cluster":
            found = [_item("host", h, item.path) for h in self._named("host", part, cluster_id=item.id)]
        else:
            raise PathError(f"{where}: {item.path} is a {item.kind}, it holds nothing")
        if not found:
            raise PathError(f"{where}: not found")
        if len(found) > 1:
            raise PathError(f"{where}: names {len(found)} objects ({', '.join(i.kind for i in found)}): use an id", code="AMBIGUOUS_PATH")
        return found[0]

    # --- walking ---------------------------------------------------------------------------
    def walk(self, item: InventoryItem) -> Iterator[InventoryItem]:
        """Every item below ``item``, depth first."""
        for child in self.children(item):
            yield child
            yield from self.walk(child)

    def find(self, path: str = "/", kinds: Iterable[str] = (), name: str | None = None) -> list[InventoryItem]:
        wanted = set(kinds)
        return [i for i in self.walk(self.resolve(path)) if i.kind not in ("category",) and (not wanted or i.kind in wanted) and (name is None or fnmatch.fnmatchcase(i.name, name))]

    # --- one object by path, id or name ----------------------------------------------------
    def object(self, ref: str, kind: str) -> InventoryItem:
        """The ``kind`` object ``ref`` names: a path, an id, or a name unique to the caller."""
        if ref.startswith("/"):
            item = self.resolve(ref)
            if item.kind != kind:
                raise PathError(f"{ref}: a {item.kind}, not a {kind}", code="WRONG_KIND")
            return item
        if ref.isascii() and ref.isdigit():
            doc = self.client.get(f"{PLURAL[kind]}/{ref}")
            return InventoryItem(kind=kind, name=doc["name"], path=self.path_of(kind, doc), id=doc["id"], raw=doc)
        found = self._named(kind, ref)
        if not found:
            raise PathError(f"no {kind} named {ref!r}", code=f"{kind.upper()}_NOT_FOUND")
        if len(found) > 1:
            raise PathError(f"{len(found)} {PLURAL[kind]} named {ref!r}: give a path or an id", code="AMBIGUOUS_NAME")
        return InventoryItem(kind=kind, name=found[0]["name"], path=self.path_of(kind, found[0]), id=found[0]["id"], raw=found[0])

    def path_of(self, kind: str, doc: dict[str, Any]) -> str:
        """The path of an object read from the API (a request per ancestor)."""
        try:
            if kind == "datacenter":
                return join(doc["name"])
            dc = self.client.get(f"datacenters/{doc['datacenter_id']}")["name"]
            if kind == "vm":
                names, folder = [doc["name"]], doc.get("folder_id")
                while folder is not None:
                    f = self.client.get(f"folders/{folder}")
                    names.insert(0, f["name"])
                    folder = f["parent_id"]
                return join(dc, "vm", *names)
            if kind == "host":
                cluster = self.client.get(f"clusters/{doc['cluster_id']}")["name"] if doc.get("cluster_id") else ""
                return join(dc, "host", cluster, doc["name"])
            if kind == "cluster":
                return join(dc, "host", doc["name"])
            if kind == "datastore":
                return join(dc, "datastore", doc["name"])
            if kind in ("portgroup", "switch"):
                return join(dc, "network", doc["name"])
        except ApiError:  # an ancestor the caller may not see: the path is not shown
            return ""
        return ""
