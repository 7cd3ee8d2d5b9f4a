"""The audit of refused credentials, read-only, for those who read the audit log
(Global.Diagnostics): counts per source, credential kind and minute (vcenter.services.access.refusals)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Query
from pydantic import ConfigDict

from vcenter.api import v1
from vcenter.core.examples import ExampleModel
from vcenter.api.deps import CurrentUserInfo, DbDep, requires
from vcenter.services.access import refusals

router = v1.router(prefix="/api/v1/audit", tags=["events"])

CredentialKind = Literal["user_token", "password", "agent", "registration", "registration_proof"]
_INT32_MAX = 2**31 - 1  # what both databases hold as an offset


class RefusedCredentialRead(ExampleModel):
    model_config = ConfigDict(from_attributes=True)
    minute: datetime
    source: str
    credential: str
    count: int
    last_at: datetime
    last_detail: str


class RefusedCredentialPage(ExampleModel):
    total: int
    offset: int
    limit: int
    items: list[RefusedCredentialRead]


@router.get(
    "/refused-credentials",
    response_model=RefusedCredentialPage,
    summary="Refused credentials (user tokens, passwords, agent credentials, registration tokens and proofs), counted per source, kind and minute, newest first",
)
def list_refused_credentials(
    db: DbDep,
    user: Annotated[CurrentUserInfo, requires("Global.Diagnostics")],
    offset: int = Query(0, ge=0, le=_INT32_MAX),
    limit: int = Query(50, ge=1, le=500),
    credential: CredentialKind | None = Query(None, description="only this kind of credential"),
    source: str | None = Query(None, max_length=64, description="only this source (an IPv6 source is its /64)"),
) -> Any:
    total, rows = refusals.list_refusals(db, offset, limit, credential=credential, source=source)
    return {"total": total, "offset": offset, "limit": limit, "items": rows}
