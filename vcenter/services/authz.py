"""Authorization: does a user hold a privilege on an object (see vcenter.domain.privileges
for the vocabulary and the merge rule). Interim: administrators hold everything, others
System.View; replaced by permissions on the inventory tree."""
from __future__ import annotations

from sqlalchemy.orm import Session

from vcenter.core.errors import Forbidden
from vcenter.db.models import User
from vcenter.domain.privileges import VIEW


def check(session: Session, user: User, privilege: str, kind: str | None, object_id: int | None, token: str | None = None) -> None:
    if user.is_admin or privilege == VIEW:
        return
    raise Forbidden(f"{user.username} lacks {privilege}", code="FORBIDDEN", audit={
        "kind": "authz.refused", "message": f"{user.username} refused {privilege} on {kind or 'root'} {object_id or ''}".strip(),
        "username": user.username, "object_type": kind, "object_id": object_id, "reason": "FORBIDDEN"})
