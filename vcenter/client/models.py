"""Typed results of the API: a Task, an Event, an inventory item with its path. Each keeps the
answer's whole document in ``raw`` (what ``--json`` prints) and names the fields a program
switches on; unknown fields are ignored, so a newer server's additions break nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FINISHED = frozenset({"success", "error", "cancelled"})


@dataclass(frozen=True)
class Task:
    id: int
    kind: str
    state: str
    step: str
    progress: int
    object_type: str
    object_id: int
    error_code: str | None
    error_message: str | None
    result: dict[str, Any] | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def succeeded(self) -> bool:
        return self.state == "success"

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Task:
        return cls(
            id=int(doc["id"]),
            kind=str(doc.get("kind", "")),
            state=str(doc.get("state", "")),
            step=str(doc.get("step") or ""),
            progress=int(doc.get("progress") or 0),
            object_type=str(doc.get("object_type") or ""),
            object_id=int(doc.get("object_id") or 0),
            error_code=doc.get("error_code"),
            error_message=doc.get("error_message"),
            result=doc.get("result"),
            raw=doc,
        )


@dataclass(frozen=True)
class Event:
    id: int
    at: str
    kind: str
    username: str
    object_type: str | None
    object_id: int | None
    object_name: str | None
    message: str
    task_id: int | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Event:
        return cls(
            id=int(doc["id"]),
            at=str(doc.get("at", "")),
            kind=str(doc.get("kind", "")),
            username=str(doc.get("username", "")),
            object_type=doc.get("object_type"),
            object_id=doc.get("object_id"),
            object_name=doc.get("object_name"),
            message=str(doc.get("message", "")),
            task_id=doc.get("task_id"),
            raw=doc,
        )


@dataclass(frozen=True)
class InventoryItem:
    """An object of the inventory tree, or one of its fixed nodes (the root, a datacenter's
    ``vm``/``host``/``datastore``/``network`` folders: ``kind`` "root" / "category", no id)."""

    kind: str
    name: str
    path: str
    id: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "name": self.name, "path": self.path, "object": self.raw or None}
