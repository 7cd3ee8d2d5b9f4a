"""The operation registry: every Task kind the services start is handled by one operation
object, found by its kind (vcenter.services.operations)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from vcenter.services import operations
from vcenter.services.operations import REGISTRY, Operation, operation_for
from vcenter.services.operations.migrate import Migrate
from vcenter.services.operations.vm import VmCreate, VmPower

SERVICES = Path(operations.__file__).resolve().parents[1]
# Kinds whose result is a plain agent command's (the task's result is the agent's answer):
# Operation's defaults are theirs.
PLAIN = {"vm.reconfigure", "vm.guestCommand", "vm.cpuCheck"}


def _started_kinds() -> set[str]:
    """The literal kinds passed to start_task(...) or Task(...) anywhere in vcenter/services."""
    kinds = set()
    for path in SERVICES.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name not in ("start_task", "Task"):
                continue
            for kw in node.keywords:
                if kw.arg == "kind" and isinstance(kw.value, ast.Constant):
                    kinds.add(kw.value.value)
    return kinds


def test_every_started_kind_has_its_operation_or_is_a_plain_command():
    started = _started_kinds()
    assert "vm.migrate" in started and "vm.create" in started  # the scan reads the services
    unhandled = sorted(k for k in started if k not in REGISTRY and k not in PLAIN)
    assert unhandled == [], f"register an operation for {unhandled} in vcenter/services/operations/__init__.py"


def test_kinds_built_at_run_time_are_registered():
    # Power actions (f"vm.{action}") and exports (f"{object_type}.export") are not literals.
    for kind in ("vm.powerOn", "vm.powerOff", "vm.shutdownGuest", "vm.reset", "vm.suspend", "vm.resume", "vm.export", "template.export"):
        assert kind in REGISTRY


def test_lookup_by_kind():
    assert isinstance(operation_for("vm.migrate"), Migrate)
    assert isinstance(operation_for("vm.create"), VmCreate)
    assert isinstance(operation_for("vm.powerOn"), VmPower)
    plain = operation_for("vm.reconfigure")
    assert type(plain) is Operation and operation_for("vm.guestCommand") is plain


def test_two_operations_cannot_claim_one_kind():
    with pytest.raises(ValueError, match="vm.create"):
        operations.by_kind(VmCreate(), VmCreate())
