"""A trace as the simulator holds it (per-VM demand series), and the error of one that cannot be
read; shared by the trace readers (vcenter.sim.trace) and the synthetic generator
(vcenter.sim.synthetic)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class TraceError(ValueError):
    """A trace that cannot be read: the message names the file and line."""


@dataclass(frozen=True)
class Trace:
    """Per-VM demand as fractions of the VM's size: ``series[k]`` is (intervals x 2), CPU and memory."""

    source: str
    names: tuple[str, ...]
    series: tuple[np.ndarray, ...]
    clipped: int = 0  # values above 100 % clipped to 100 %

    def __len__(self) -> int:
        return len(self.names)
