"""Which cluster settings documents are valid: each part a service reads is checked when the
settings are written (422 with the part's code), so that a pass reading them later never meets
a bad one."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from vcenter.core.errors import Invalid
from vcenter.schemas.maintenance import MaintenanceSettings


def maintenance_settings(settings: Any) -> dict[str, Any]:
    """Validate a cluster's ``maintenance`` settings document (422 INVALID_MAINTENANCE_SETTINGS)."""
    try:
        return MaintenanceSettings.model_validate(settings or {}).model_dump()
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in ("maintenance", *err["loc"]))
        raise Invalid(f"settings.{field}: {err['msg']} (got {err.get('input')!r})", code="INVALID_MAINTENANCE_SETTINGS", details={"field": f"settings.{field}"}) from exc


def check_cluster_settings(settings: dict[str, Any] | None) -> None:
    """Refuse a settings document whose parts read by a service are invalid (422 with the
    part's code, e.g. INVALID_MAINTENANCE_SETTINGS)."""
    if settings and "maintenance" in settings:
        maintenance_settings(settings["maintenance"])
