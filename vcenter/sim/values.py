"""What a scenario file says, read into numbers: memory sizes and CPU speeds with their units,
and the error a malformed scenario raises. Shared by the scenario runner and its DRS part."""

from __future__ import annotations

import re
from typing import Any


class ScenarioError(Exception):
    """The scenario itself is malformed (an unknown VM, a bad event)."""


_MEM = re.compile(r"^\s*([0-9.]+)\s*(k|ki|kib|m|mi|mib|g|gi|gib|t|ti|tib)?\s*$", re.I)
_MEM_FACTOR = {None: 1, "m": 1, "mi": 1, "mib": 1, "g": 1024, "gi": 1024, "gib": 1024, "t": 1024**2, "ti": 1024**2, "tib": 1024**2}


def parse_mem(value: Any) -> int:
    """MiB from 4096, '4096', '4G', '4GiB', '512M'."""
    if isinstance(value, (int, float)):
        return int(value)
    m = _MEM.match(str(value))
    if not m:
        raise ScenarioError(f"bad memory size {value!r}")
    unit = m.group(2).lower() if m.group(2) else None
    if unit in ("k", "ki", "kib"):
        return int(float(m.group(1)) / 1024)
    return int(float(m.group(1)) * _MEM_FACTOR[unit])


def parse_mhz(value: Any, default_unit: str = "MHz") -> float:
    """MHz from 2500, '2500MHz', '2.5GHz'; a bare number is in ``default_unit``."""
    if isinstance(value, (int, float)):
        return float(value) * (1000.0 if default_unit == "GHz" else 1.0)
    s = str(value).strip().lower()
    if s.endswith("ghz"):
        return float(s[:-3]) * 1000.0
    if s.endswith("mhz"):
        return float(s[:-3])
    return parse_mhz(float(s), default_unit)
