"""Users and login sessions: argon2 password hashes, server-side sessions with an idle
timeout and an absolute lifetime, revocable (logout).

Every password set here passes the policy (vcenter.services.access.passwords: WEAK_PASSWORD); no user
takes the name of one of the system's own actors (vcenter.services.tasks.events.SYSTEM_ACTORS:
RESERVED_USERNAME). Changing or deleting a user needs an actor that holds everything the user
holds (vcenter.services.access.delegation); deleting one removes its permissions, group memberships,
API tokens and sessions in the same transaction (its id is never given again).
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError, InvalidHashError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from vcenter.core.audit import request_source
from vcenter.core.clock import utcnow
from vcenter.core.errors import Conflict, Invalid, NotFound, RateLimited, Unauthorized
from vcenter.core.ids import new_token, token_hash
from vcenter.core.settings import Settings, get_settings
from vcenter.db.models import ApiToken, Event, GroupMember, LoginSession, Permission, Role, User
from vcenter.services.tasks.events import SYSTEM_ACTORS, is_system_actor, record_event
from vcenter.services.access.authz import LOGIN_SESSION_TOKENS
from vcenter.services.access.passwords import check_password

if TYPE_CHECKING:
    from vcenter.services.access.delegation import Actor


@lru_cache(maxsize=4)
def _hasher_of(time_cost: int, memory_cost: int, parallelism: int) -> tuple[PasswordHasher, str]:
    """The argon2id hasher of these costs, and a hash of it to verify against when the user
    does not exist: that keeps the time of "no such user" equal to "wrong password"."""
    hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism)
    return hasher, hasher.hash("not-a-password")


def _hasher(settings: Settings | None = None) -> tuple[PasswordHasher, str]:
    """The hasher of the password_hash_* settings: ``settings``, else the environment's
    (create_user and set_password are called without settings, as check_password is)."""
    settings = settings or get_settings()
    return _hasher_of(settings.password_hash_time_cost, settings.password_hash_memory_cost, settings.password_hash_parallelism)


def check_username(username: str) -> None:
    """A user never takes a system actor's name: events and tasks of the system would read as
    that user's (and, before ids, were shown to it)."""
    if is_system_actor(username):
        raise Invalid(f"{username!r} is the name of one of the system's own actors ({', '.join(sorted(SYSTEM_ACTORS))})", code="RESERVED_USERNAME", details={"field": "username"})


def create_user(session: Session, username: str, password: str, is_admin: bool, by: str = "system", *, min_password_length: int | None = None) -> User:
    check_username(username)
    if session.scalar(select(User).where(User.username == username)) is not None:
        raise Conflict(f"user {username} exists", code="USER_EXISTS")
    check_password(password, username, min_password_length)
    user = User(username=username, password_hash=_hasher()[0].hash(password), is_admin=is_admin)
    session.add(user)
    session.flush()
    record_event(session, "user.created", f"user {username} created{' (administrator)' if is_admin else ''}", username=by, object_type="user", object_id=user.id, object_name=username)
    return user


def set_password(session: Session, username: str, password: str, *, min_password_length: int | None = None) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise Conflict(f"user {username} does not exist", code="USER_NOT_FOUND")
    check_password(password, username, min_password_length)
    user.password_hash = _hasher()[0].hash(password)
    for login in session.scalars(select(LoginSession).where(LoginSession.user_id == user.id, LoginSession.revoked.is_(False))):
        login.revoked = True
    # Tokens too: one an attacker made with a stolen password must die with it.
    for api_token in session.scalars(select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked.is_(False))):
        api_token.revoked = True
    return user


def _recent_failures(session: Session, username: str, settings: Settings) -> int:
    since = utcnow() - timedelta(seconds=settings.login_lockout_window)
    return session.scalar(select(func.count()).select_from(Event).where(Event.kind == "session.login_failed", Event.username == username[:80], Event.at > since)) or 0


def _recent_failures_from(session: Session, source: str, settings: Settings) -> int:
    since = utcnow() - timedelta(seconds=settings.login_lockout_window)
    return session.scalar(select(func.count()).select_from(Event).where(Event.kind == "session.login_failed", Event.source == source, Event.at > since)) or 0


def _recent(session: Session, kind: str, settings: Settings, condition: Any) -> bool:
    """Whether an Event ``kind`` matching ``condition`` was written within the lockout window."""
    since = utcnow() - timedelta(seconds=settings.login_lockout_window)
    return session.scalar(select(Event.id).where(Event.kind == kind, condition, Event.at > since).limit(1)) is not None


def login(session: Session, username: str, password: str, settings: Settings) -> tuple[str, LoginSession, User]:
    source = request_source.get()
    # Refusals while limited are counted per source and minute (vcenter.services.access.refusals); only
    # the first of a window is also an Event, so a flood of guesses cannot fill the audit log.
    if source is not None and _recent_failures_from(session, source, settings) >= settings.login_source_failures:
        # Guessing across many user names from one address: slow that address down, not the users.
        first = not _recent(session, "session.login_rate_limited", settings, Event.source == source)
        raise RateLimited(
            f"too many failed logins from {source}; try again later",
            code="LOGIN_RATE_LIMITED",
            audit={
                "kind": "session.login_rate_limited",
                "message": f"login of {username[:80]!r} from {source} refused: rate limited",
                "username": username[:80],
                "user_id": None,
                "object_type": "user",
                "reason": "LOGIN_RATE_LIMITED",
            }
            if first
            else None,
        )
    if _recent_failures(session, username, settings) >= settings.login_lockout_failures:
        # Temporary by design: the window ends by itself, so an attacker who guesses wrong on
        # purpose can delay the last administrator, never lock them out for good.
        first = not _recent(session, "session.login_locked", settings, Event.username == username[:80])
        raise Unauthorized(
            f"too many failed logins; try again within {settings.login_lockout_window:.0f} s",
            code="LOCKED_OUT",
            audit={
                "kind": "session.login_locked",
                "message": f"login of {username[:80]!r} refused: locked out",
                "username": username[:80],
                "user_id": None,
                "object_type": "user",
                "reason": "LOCKED_OUT",
            }
            if first
            else None,
        )
    user = session.scalar(select(User).where(User.username == username))
    try:
        hasher, dummy_hash = _hasher(settings)
        hasher.verify(user.password_hash if user else dummy_hash, password)
        ok = user is not None and not user.disabled
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok:
        raise Unauthorized(
            "wrong user name or password",
            code="BAD_CREDENTIALS",
            audit={"kind": "session.login_failed", "message": f"failed login for {username[:80]!r}", "username": username[:80], "user_id": None, "object_type": "user", "reason": "BAD_CREDENTIALS"},
        )
    token = new_token()
    now = utcnow()
    login_session = LoginSession(token_hash=token_hash(token), user_id=user.id, created_at=now, last_seen_at=now, expires_at=now + timedelta(seconds=settings.session_max_lifetime))
    session.add(login_session)
    record_event(session, "session.login", f"{username} logged in", username=username, user_id=user.id, object_type="user", object_id=user.id, object_name=username)
    return token, login_session, user


def authenticate(session: Session, token: str, settings: Settings) -> User:
    hashed = token_hash(token)
    login_session = session.scalar(select(LoginSession).where(LoginSession.token_hash == hashed))
    now = utcnow()
    if login_session is None:
        return _authenticate_api_token(session, token)
    # Remembered for this transaction: the privilege check after it need not look for an API token.
    session.info.setdefault(LOGIN_SESSION_TOKENS, set()).add(hashed)
    if login_session.revoked:
        raise Unauthorized("not logged in", code="NOT_AUTHENTICATED")
    if now >= login_session.expires_at or now - login_session.last_seen_at > timedelta(seconds=settings.session_idle_timeout):
        raise Unauthorized("session expired", code="SESSION_EXPIRED")
    # Touch at most every few seconds: a database write per request is wasteful.
    if now - login_session.last_seen_at > timedelta(seconds=5):
        login_session.last_seen_at = now
    user = session.get(User, login_session.user_id)
    if user is None or user.disabled:
        raise Unauthorized("user disabled", code="NOT_AUTHENTICATED")
    return user


def session_times(session: Session, token: str) -> tuple[Any, Any] | None:
    """When the login session of ``token`` was created and last used (None: an API token)."""
    login_session = session.scalar(select(LoginSession).where(LoginSession.token_hash == token_hash(token)))
    return None if login_session is None else (login_session.created_at, login_session.last_seen_at)


def logout(session: Session, token: str) -> None:
    login_session = session.scalar(select(LoginSession).where(LoginSession.token_hash == token_hash(token)))
    if login_session is not None:
        login_session.revoked = True


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.id)))


def _administrators(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(User).where(User.is_admin.is_(True), User.disabled.is_(False))) or 0


def update_user(session: Session, actor: "Actor", user_id: int, changes: dict, *, min_password_length: int | None = None) -> User:
    """Change a user's password, administrator flag or enabled state. The actor must hold
    everything the user holds (a password is the user's every privilege); only an
    administrator changes the administrator flag."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found", code="USER_NOT_FOUND")
    if changes.get("is_admin") is not None:
        actor.require_administrator(f"the administrator flag of {user.username}")
    actor.require_covers_user(user)
    losing_admin = user.is_admin and not user.disabled and (changes.get("is_admin") is False or changes.get("disabled") is True)
    if losing_admin and _administrators(session) <= 1:
        raise Conflict(f"{user.username} is the last administrator", code="LAST_ADMINISTRATOR")
    if changes.get("password"):
        set_password(session, user.username, changes["password"], min_password_length=min_password_length)
    for field in ("is_admin", "disabled"):
        if changes.get(field) is not None:
            setattr(user, field, changes[field])
    if changes.get("disabled"):
        for login_session in session.scalars(select(LoginSession).where(LoginSession.user_id == user.id, LoginSession.revoked.is_(False))):
            login_session.revoked = True
    record_event(
        session,
        "user.updated",
        f"user {user.username} updated: {', '.join(sorted(k for k, v in changes.items() if v is not None and k != 'password') + (['password'] if changes.get('password') else []))}",
        username=actor.name,
        user_id=actor.user.id,
        object_type="user",
        object_id=user.id,
        object_name=user.username,
    )
    return user


def delete_user(session: Session, actor: "Actor", user_id: int) -> None:
    """Delete a user with everything that names it by id: its permissions, group memberships,
    API tokens and sessions, in this transaction (a later user never inherits them)."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found", code="USER_NOT_FOUND")
    actor.require_covers_user(user)
    if user.is_admin and not user.disabled and _administrators(session) <= 1:
        raise Conflict(f"{user.username} is the last administrator", code="LAST_ADMINISTRATOR")
    name = user.username
    removed = session.execute(delete(Permission).where(Permission.principal_type == "user", Permission.principal_id == user.id)).rowcount
    session.execute(delete(GroupMember).where(GroupMember.user_id == user.id))
    session.execute(delete(ApiToken).where(ApiToken.user_id == user.id))
    session.execute(delete(LoginSession).where(LoginSession.user_id == user.id))
    session.delete(user)
    session.flush()
    record_event(
        session,
        "user.deleted",
        f"user {name} deleted with its {removed} permission(s), group memberships, tokens and sessions",
        username=actor.name,
        user_id=actor.user.id,
        object_type="user",
        object_id=user_id,
        object_name=name,
    )


# --- API tokens: long-lived, for scripts; narrowed to a role (see services.access.authz) ---------


def _authenticate_api_token(session: Session, token: str) -> User:
    api_token = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash(token)))
    now = utcnow()
    if api_token is None or api_token.revoked:
        raise Unauthorized("not logged in", code="NOT_AUTHENTICATED")
    if api_token.expires_at is not None and now >= api_token.expires_at:
        raise Unauthorized("API token expired", code="TOKEN_EXPIRED")
    if api_token.last_used_at is None or now - api_token.last_used_at > timedelta(seconds=60):
        api_token.last_used_at = now
    user = session.get(User, api_token.user_id)
    if user is None or user.disabled:
        raise Unauthorized("user disabled", code="NOT_AUTHENTICATED")
    return user


def create_api_token(session: Session, user: User, name: str, role_id: int, lifetime_s: float | None) -> tuple[str, ApiToken]:
    role = session.get(Role, role_id)
    if role is None:
        raise Invalid(f"role {role_id} does not exist", code="INVALID_REFERENCE", details={"field": "role_id"})
    token = "vct_" + new_token()
    api_token = ApiToken(name=name, token_hash=token_hash(token), user_id=user.id, role_id=role.id, expires_at=utcnow() + timedelta(seconds=lifetime_s) if lifetime_s else None)
    session.add(api_token)
    session.flush()
    record_event(
        session,
        "token.created",
        f"API token {name!r} of {user.username} created, narrowed to role {role.name}",
        username=user.username,
        user_id=user.id,
        object_type="user",
        object_id=user.id,
        object_name=user.username,
    )
    return token, api_token


def list_api_tokens(session: Session, user: User) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)))


def revoke_api_token(session: Session, user: User, token_id: int) -> None:
    api_token = session.get(ApiToken, token_id)
    if api_token is None or api_token.user_id != user.id:
        raise NotFound(f"token {token_id} not found", code="TOKEN_NOT_FOUND")
    api_token.revoked = True
    record_event(
        session, "token.revoked", f"API token {api_token.name!r} of {user.username} revoked", username=user.username, user_id=user.id, object_type="user", object_id=user.id, object_name=user.username
    )
