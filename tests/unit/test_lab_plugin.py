"""The lab is a plugin (issue 16): the product names no lab module, the lab fills the product's
seams (power type, boot image, port-group mode) through entry points, and the lab guest's
/init is a packaged file.

lint-imports (`make test`'s "imports" suite) proves the same contract with indirect imports;
this test reads the contract's module list, checks that it covers every package of the
product, and checks the direct imports itself, so that a new package or a removed line of
the contract is caught here too.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import subprocess
import sys
import textwrap
import tomllib
from importlib.metadata import distribution
from pathlib import Path

import pytest

from tests.conftest import make_settings
from vcenter.core import plugins
from vcenter.hypervisor.base import DriverError
from vcenter.hypervisor.bootimages import BOOT_IMAGES_GROUP, BootFiles, resolve_boot_image, with_boot_files
from vcenter.lab import guest
from vcenter.lab.network import vxlan_portgroups
from vcenter.lab.power import LAB_POWER, LabDriver
from vcenter.messaging.contracts import VmSpec
from vcenter.power.drivers import make_driver, power_type, power_type_names
from workers.agent.network import (
    PORTGROUP_MODES_GROUP,
    BridgeHostNetwork,
    SimulatedHostNetwork,
    make_network,
    make_plain_bridge,
)

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Outside the product on purpose: the lab itself, and the command line (the composition root
# that mounts `vcenter lab`; see the contract's comment in pyproject.toml).
NOT_PRODUCT = {"vcenter.lab", "vcenter.cli"}


def _contract(contract_id: str) -> dict:
    return next(c for c in PYPROJECT["tool"]["importlinter"]["contracts"] if c.get("id") == contract_id)


def _names_the_lab(node: ast.AST) -> bool:
    if isinstance(node, ast.Import):
        return any(a.name == "vcenter.lab" or a.name.startswith("vcenter.lab.") for a in node.names)
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return node.module == "vcenter.lab" or node.module.startswith("vcenter.lab.") or (node.module == "vcenter" and any(a.name == "lab" for a in node.names))
    return False


def test_the_contract_covers_every_package_of_the_product():
    contract = _contract("product-not-lab")
    assert contract["forbidden_modules"] == ["vcenter.lab"]
    sources = set(contract["source_modules"])
    ours = {f"vcenter.{p.stem if p.suffix else p.name}" for p in (ROOT / "vcenter").iterdir() if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.stem != "__init__")}
    ours |= {"workers", "templates_store"}
    assert "vcenter.api" in ours and "vcenter.power" in ours
    assert ours - NOT_PRODUCT - sources == set(), "add the new package to the contract product-not-lab"


def test_product_code_names_no_lab_module():
    files = [f for m in _contract("product-not-lab")["source_modules"] for f in sorted((ROOT / m.replace(".", "/")).rglob("*.py"))]
    assert len(files) > 100
    found = [f"{f.relative_to(ROOT)}:{node.lineno}" for f in files for node in ast.walk(ast.parse(f.read_text(), str(f))) if _names_the_lab(node)]
    assert found == []


def test_the_lab_imports_no_agent_module():
    assert _contract("lab-not-agent")["forbidden_modules"] == ["workers"]
    found = [
        f"{f.relative_to(ROOT)}:{node.lineno}"
        for f in sorted((ROOT / "vcenter/lab").rglob("*.py"))
        for node in ast.walk(ast.parse(f.read_text(), str(f)))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        and any(n == "workers" or n.startswith("workers.") for n in ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]))
    ]
    assert found == []


def test_installed_entry_points_are_those_of_pyproject():
    declared = {(group, name, value) for group, entries in PYPROJECT["project"]["entry-points"].items() for name, value in entries.items()}
    installed = {(ep.group, ep.name, ep.value) for ep in distribution("virtcenter").entry_points if ep.group.startswith("virtcenter.")}
    assert installed == declared, "the installed metadata is stale: run `make install`"


def test_the_lab_fills_each_seam():
    assert "lab" in power_type_names() and power_type("lab") is LAB_POWER
    assert plugins.load(BOOT_IMAGES_GROUP, "tiny-linux") is guest.boot_files
    assert plugins.load(PORTGROUP_MODES_GROUP, "vxlan") is vxlan_portgroups
    assert plugins.load(PORTGROUP_MODES_GROUP, "nothing") is None


def test_a_plugin_is_imported_only_when_its_name_is_asked_for(tmp_path):
    probe = textwrap.dedent(f"""
        import sys
        from tests.conftest import make_settings
        from vcenter.power.drivers import make_driver
        from workers.agent.network import make_network
        from pathlib import Path
        make_driver({{"type": "ipmi", "address": "10.0.0.5", "username": "a", "password": "b"}})
        try:
            make_driver({{"type": "nope"}})
        except ValueError as e:
            assert "lab" in str(e)
        make_network(make_settings(Path({str(tmp_path)!r})), False)
        before = sorted(m for m in sys.modules if m.startswith("vcenter.lab"))
        make_driver({{"type": "lab", "host": "host1"}})
        print(before, "vcenter.lab.power" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]", "True"]


def test_lab_power_settings(tmp_path):
    d = make_driver({"type": "lab", "host": "host1"})
    assert isinstance(d, LabDriver) and d.workdir == Path("/run/virtcenter-lab") and d.action_timeout == 120
    d = make_driver({"type": "lab", "host": "host1", "workdir": str(tmp_path), "action_timeout": 5})
    assert d.workdir == tmp_path and d.action_timeout == 5
    for config, message in [
        ({"type": "lab", "host": ""}, "lab power settings need a non-empty host"),
        ({"type": "lab", "host": 3}, "host must be a string"),
        ({"type": "lab", "host": "h", "port": 1}, "unknown lab power settings: port"),
        ({"type": "nope"}, "power type must be one of ipmi, lab, redfish, wol, not 'nope'"),
    ]:
        with pytest.raises(ValueError) as e:
            make_driver(config)
        assert str(e.value) == message


def _built_image(cache: Path) -> Path:
    entry = cache / "6.1.0-test-0123456789abcdef"
    entry.mkdir(parents=True)
    (entry / "meta.json").write_text(json.dumps({"cmdline": guest.BASE_CMDLINE, "packages": {}}))
    return entry


def test_boot_image_tiny_linux(tmp_path):
    settings = make_settings(tmp_path, lab_guest_cache=str(tmp_path / "cache"))
    with pytest.raises(DriverError) as e:
        resolve_boot_image("tiny-linux", settings, vm_name="web 1", ip=None)
    assert e.value.code == "BOOT_IMAGE_UNAVAILABLE"
    assert str(tmp_path / "cache") in str(e.value) and "vcenter lab up builds it" in str(e.value)
    entry = _built_image(tmp_path / "cache")
    boot = resolve_boot_image("tiny-linux", settings, vm_name="-web_1.example-", ip="10.99.0.11/24")
    assert boot == BootFiles(kernel=str(entry / "vmlinuz"), initrd=str(entry / "initrd.gz"), cmdline=f"{guest.BASE_CMDLINE} vc.hostname=web-1-example vc.ip=10.99.0.11/24")
    assert resolve_boot_image("tiny-linux", settings, vm_name="___", ip=None).cmdline.endswith("vc.hostname=guest")
    with pytest.raises(ValueError):
        resolve_boot_image("tiny-linux", settings, vm_name="web", ip="10.99.0.11")
    with pytest.raises(DriverError) as e:
        resolve_boot_image("windows-2025", settings, vm_name="web", ip=None)
    assert e.value.code == "BOOT_IMAGE_UNAVAILABLE"
    spec = VmSpec(name="web", uuid="6f1c1a52-0000-4000-8000-00000000000a", vcpus=1, memory_mib=96)
    assert with_boot_files(spec, settings) is spec
    booted = with_boot_files(spec.model_copy(update={"image": "tiny-linux"}), settings)
    assert (booted.kernel, booted.initrd) == (str(entry / "vmlinuz"), str(entry / "initrd.gz"))
    assert booted.cmdline == f"{guest.BASE_CMDLINE} vc.hostname=web"


def test_portgroup_modes(tmp_path):
    assert isinstance(make_network(make_settings(tmp_path), True), SimulatedHostNetwork)
    plain = make_network(make_settings(tmp_path), False)
    assert isinstance(plain, BridgeHostNetwork) and plain.make is make_plain_bridge
    with pytest.raises(SystemExit, match="VCENTER_AGENT_ADDRESS is required with VCENTER_AGENT_PORTGROUP_MODE=vxlan"):
        make_network(make_settings(tmp_path, agent_portgroup_mode="vxlan"), False)
    vxlan = make_network(make_settings(tmp_path, agent_portgroup_mode="vxlan", agent_address="10.213.0.11"), False)
    assert isinstance(vxlan, BridgeHostNetwork) and vxlan.make.__module__ == "vcenter.lab.network"


def test_the_guest_init_script_is_a_packaged_file():
    script = ROOT / "vcenter/lab" / guest.INIT_SCRIPT_FILE
    assert guest.INIT_SCRIPT == script.read_text() and guest.INIT_SCRIPT.startswith("#!/bin/sh\n")
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"].get("vcenter.lab", [])
    assert any(fnmatch.fnmatch(script.name, p) for p in patterns), "package-data must ship the script"
