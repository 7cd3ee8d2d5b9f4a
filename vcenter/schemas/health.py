"""The health probes' answer (/livez, /readyz): a status and, for readiness, each check's."""

from __future__ import annotations

from pydantic import Field

from vcenter.core.examples import ExampleModel


class Health(ExampleModel):
    status: str = Field(description="ok, or unavailable (readiness: a check failed)", examples=["ok"])
    checks: dict[str, str] | None = Field(None, description="readiness: each dependency's answer, ok or the error's kind", examples=[{"database": "ok", "redis": "ok"}])
