"""No private name crosses a module boundary: a name starting with one underscore belongs to its
module. Read from the source (AST), over vcenter/, workers/ and templates_store/:

- ``from vcenter.x import _name`` (or ``from . import _name``) in another module, and
- ``x._name`` where ``x`` is one of our modules imported by the reading module

are reported with file and line. Dunder names (``__version__``) are public by convention.
A module's own private names, and a package's ``__init__`` re-exporting its submodules'
names, are not crossings.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("vcenter", "workers", "templates_store")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str | None, level: int, here: str, is_package: bool) -> str:
    """The absolute module a ``from`` import names."""
    if level == 0:
        return module or ""
    base = here.split(".") if is_package else here.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _ours(module: str) -> bool:
    return module.split(".")[0] in PACKAGES


def crossings(path: Path) -> list[str]:
    """Every private name of another of our modules that ``path`` uses."""
    here = _module_name(path)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    aliases: dict[str, str] = {}  # local name -> one of our modules
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if _ours(a.name):
                    aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(node.module, node.level, here, is_package)
            if not _ours(source):
                continue
            for a in node.names:
                target = f"{source}.{a.name}"
                if (ROOT / Path(*target.split("."))).with_suffix(".py").exists() or (ROOT / Path(*target.split(".")) / "__init__.py").exists():
                    aliases[a.asname or a.name] = target  # a module imported from its package
                    continue
                if _private(a.name) and source != here and not (is_package and source.startswith(here + ".")):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {source} import {a.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and _private(node.attr):
            module = aliases.get(node.value.id)
            if module is not None and module != here:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr} ({module})")
    return found


def test_no_private_name_is_used_across_modules():
    found = [c for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py")) for c in crossings(path)]
    assert found == [], "private names used across modules (make them public, or move the use):\n" + "\n".join(found)


def test_the_check_sees_both_kinds_of_crossing(tmp_path, monkeypatch):
    """The walk is not vacuous: it reports an imported private name and a module's private attribute."""
    package = tmp_path / "vcenter"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def _helper():\n    return 1\n")
    (package / "b.py").write_text("from vcenter import a\nfrom vcenter.a import _helper\n\nx = a._helper() + _helper()\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    assert [c.split(": ", 1)[1] for c in crossings(package / "b.py")] == ["from vcenter.a import _helper", "a._helper (vcenter.a)"]
    assert crossings(package / "a.py") == []
