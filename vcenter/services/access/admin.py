"""Administrative use cases run from the command line."""

from __future__ import annotations

from sqlalchemy import select

from vcenter.core.settings import Settings
from vcenter.db.models import User
from vcenter.db.session import session_scope
from vcenter.services.access import auth


def create_admin(settings: Settings, username: str, password: str, exist_ok: bool = False) -> bool:
    """Create an administrator; with exist_ok, reset the password of an existing one."""
    with session_scope(settings.database_url) as session:
        existing = session.scalar(select(User).where(User.username == username))
        # The password policy holds here too (WEAK_PASSWORD); the CLI reports the refusal.
        if existing is not None and exist_ok:
            auth.set_password(session, username, password, min_password_length=settings.password_min_length)
            existing.is_admin = True
            return False
        auth.create_user(session, username, password, is_admin=True, by="cli", min_password_length=settings.password_min_length)
        return True
