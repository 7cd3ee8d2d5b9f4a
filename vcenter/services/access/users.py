"""The user an id names, for a request already authenticated (by session, token or the
dashboard's cookie): a user deleted since is refused as not authenticated."""

from __future__ import annotations

from sqlalchemy.orm import Session

from vcenter.core.errors import Unauthorized
from vcenter.db.models import User


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise Unauthorized("user no longer exists", code="NOT_AUTHENTICATED")
    return user
