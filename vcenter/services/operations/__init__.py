"""Operations as objects: each long operation kind is handled by one object, found by its
Task kind in ``REGISTRY``.

When a Task's agent reports a result, services.orchestration.reports finds the task and calls
``operation_for(task.kind).on_result``; the reaper (services.housekeeping.reaper) asks the same object
whether a silent task already reached its aim (``reconciled``) and what to undo
(``rollback``); a cancel while queued rolls back through it too (services.tasks). A kind
without an object of its own (e.g. ``vm.reconfigure``, ``vm.guestCommand``, ``vm.cpuCheck``)
is a plain agent command: ``Operation`` itself.

Why a package under ``vcenter.services``: the operations write the inventory through the
services (tasks, events) and continue the sagas the services started (migration slots,
relocation phases), so they stand on the services; inside ``vcenter.services`` they fall
under its import contracts (no web layer, no hypervisor). The dependency points one way:
operations import services; of the services only the dispatchers (reports, maintenance) import
this package, and the cancel of a queued task (services.orchestration.cancel).

Adding an operation: one module here with one ``Operation`` subclass naming its ``kinds``, and
one line in ``REGISTRY`` below (see docs/development.md).
"""

from __future__ import annotations

from vcenter.services.operations.backup import Backup, Restore
from vcenter.services.operations.base import AgentResult, Ending, Operation
from vcenter.services.operations.clone import Clone
from vcenter.services.operations.cluster import EnableEvc
from vcenter.services.operations.ha_restart import HaRestart
from vcenter.services.operations.host import Evacuate, ExitStandby
from vcenter.services.operations.library import Deploy, Export, LibraryCommand, TemplateDelete, TemplateFromVm, TemplateToVm
from vcenter.services.operations.migrate import Migrate
from vcenter.services.operations.relocate import Relocate
from vcenter.services.operations.snapshot import Promote, SnapshotCreate, SnapshotDelete, SnapshotRevert
from vcenter.services.operations.vm import VmCreate, VmDelete, VmPower

__all__ = ["REGISTRY", "AgentResult", "Ending", "Operation", "by_kind", "operation_for"]


def by_kind(*operations: Operation) -> dict[str, Operation]:
    """Index operations by their kinds; a kind claimed twice is a programming error."""
    registry: dict[str, Operation] = {}
    for operation in operations:
        for kind in operation.kinds:
            if kind in registry:
                raise ValueError(f"two operations claim the task kind {kind!r}")
            registry[kind] = operation
    return registry


REGISTRY: dict[str, Operation] = by_kind(
    VmCreate(),
    VmDelete(),
    VmPower(),
    Migrate(),
    Relocate(),
    SnapshotCreate(),
    SnapshotRevert(),
    SnapshotDelete(),
    Promote(),
    Clone(),
    Backup(),
    Restore(),
    TemplateFromVm(),
    TemplateToVm(),
    TemplateDelete(),
    Deploy(),
    Export(),
    LibraryCommand(),
    EnableEvc(),
    HaRestart(),
    Evacuate(),
    ExitStandby(),
)
_PLAIN = Operation()


def operation_for(kind: str) -> Operation:
    """The operation of a Task kind; a plain agent command for a kind without its own."""
    return REGISTRY.get(kind, _PLAIN)
