"""A cluster's maintenance settings document: ``settings["maintenance"]``."""

from __future__ import annotations

from typing import Literal

from vcenter.schemas.base import ExampleModel
from pydantic import ConfigDict, Field


class MaintenanceSettings(ExampleModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # NaN and Infinity are JSON to Python, not numbers to us

    powered_off: Literal["leave", "refuse", "move"] = Field(
        "leave",
        description="What entering maintenance does with the host's powered-off VMs: leave them registered there (default), "
        "refuse maintenance while there are any, or move them to other hosts (defined on a host that mounts their "
        "datastores, chosen by placement; a VM that cannot move is named and the host stays out of maintenance).",
    )
