"""Typed dependencies declared once: the transaction, the logged-in user, the agent's host."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from vcenter.core.errors import Unauthorized, VcError
from vcenter.core.object_ids import ObjectIdPath, checked_object_id
from vcenter.core.settings import Settings
from vcenter.messaging.contracts import PROTOCOL_HEADER, UnsupportedProtocol, report_protocol
from vcenter.services.access import auth, authz, users
from vcenter.services.inventory import inventory
from vcenter.services.tasks import idempotency
from vcenter.services.tasks.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_settings_dep(runtime: RuntimeDep) -> Settings:
    return runtime.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_db(runtime: RuntimeDep) -> Iterator[Any]:
    # scope="function": commit (and relay the outbox) before the response is sent, so a client
    # that reads right after a 2xx sees the change.
    with runtime.transaction() as session:
        yield session


DbDep = Annotated[Any, Depends(get_db, scope="function")]


# Declared as an OpenAPI security scheme ("bearerAuth"), not as a header parameter: clients
# and fuzzers then send the token as a credential instead of treating it as data to vary.
# auto_error=False: a missing or non-Bearer header is our 401 with its stable code, not
# FastAPI's generic one.
_bearer_scheme = HTTPBearer(auto_error=False, scheme_name="bearerAuth", description="A token from POST /api/v1/session (users) or from registration (agents).")


def bearer_token(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer_scheme)] = None) -> str:
    if credentials is None or not credentials.credentials:
        raise Unauthorized("log in first: POST /api/v1/session, then send 'Authorization: Bearer <token>'", code="NOT_AUTHENTICATED")
    return credentials.credentials


# What each dependency can refuse with: the operations using it document these statuses
# (vcenter.api.errors.error_statuses).
bearer_token.error_statuses = (401,)  # type: ignore[attr-defined]

TokenDep = Annotated[str, Depends(bearer_token)]


class CurrentUserInfo:
    """The caller: who, through which token, and the privilege its route declared."""

    def __init__(self, username: str, is_admin: bool, user_id: int, token: str | None = None, privilege: str | None = None):
        self.username = username
        self.is_admin = is_admin
        self.id = user_id
        self.token = token
        self.privilege = privilege

    def _user(self, session: Any) -> Any:
        return users.get_user(session, self.id)

    def require(self, session: Any, kind: str | None, object_id: int | None, privilege: str | None = None) -> None:
        """Check the route's privilege (or another) on an object named in the body."""
        authz.check(session, self._user(session), privilege or self.privilege or "", kind, object_id, token=self.token)

    def allowed(self, session: Any, privilege: str, kind: str | None = None, object_id: int | None = None) -> bool:
        return authz.allowed(session, self._user(session), privilege, kind, object_id, token=self.token)

    def visible(self, session: Any, kind: str, model: Any) -> Any:
        """WHERE clause restricting a list of ``kind`` to what the caller may see (None: all)."""
        return authz.visibility_clause(session, self._user(session), kind, model, token=self.token)


def get_current_user(runtime: RuntimeDep, token: TokenDep) -> CurrentUserInfo:
    with runtime.transaction() as session:
        user = auth.authenticate(session, token, runtime.settings)
        return CurrentUserInfo(user.username, user.is_admin, user.id, token=token)


def _replay_for(runtime: Runtime, user_id: int) -> None:
    with runtime.transaction() as session:
        idempotency.replay_for(session, user_id)


def _bound_to_actor(authenticate: Any) -> Any:
    """Wrap an authenticating dependency so that the caller becomes the request's actor
    (events and tasks it causes carry its user id). Async on purpose: a context variable set
    in a sync dependency stays in its worker thread; set here it reaches the route."""
    from vcenter.services.tasks.events import bind_actor

    async def bound(request: Request, user: CurrentUserInfo = Depends(authenticate)) -> CurrentUserInfo:  # a default, not Annotated: annotations are strings here
        bind_actor(user.id, user.username)
        if idempotency.active():
            # An operation retried with its Idempotency-Key: answered here, by who asked, before
            # the route judges the object (vcenter.services.tasks.idempotency).
            await run_in_threadpool(_replay_for, request.app.state.runtime, user.id)
        return user

    return bound


CurrentUser = Annotated[CurrentUserInfo, Depends(_bound_to_actor(get_current_user))]


def requires(privilege: str, on: str | None = None, param: str | None = None, deferred: bool = False, credential: Any = bearer_token) -> Any:
    """Dependency: the logged-in user, who must hold ``privilege`` on the object of kind
    ``on`` whose id is the path parameter ``param`` (default ``<on>_id``; on the root when
    ``on`` is None). With ``deferred`` the route checks it itself on an object named in the
    body (``user.require(db, "datacenter", body.datacenter_id)``) — creation checks the parent.

    Every route declares its privilege this way (``System.View`` for reads); a test walks
    ``app.routes`` and fails on a route without one. Use:
    ``user: Annotated[CurrentUserInfo, requires("VirtualMachine.PowerOn", on="vm")]``

    ``credential``: the dependency reading the caller's token (the bearer header; the
    vSphere-compatible API passes its session id header).
    """
    from vcenter.domain.privileges import PRIVILEGES

    if privilege not in PRIVILEGES:
        raise ValueError(f"unknown privilege {privilege!r}: add it to vcenter.domain.privileges.PRIVILEGES")
    param = param or (f"{on}_id" if on else None)

    def check_privilege(request: Request, runtime: RuntimeDep, token: str = Depends(credential)) -> CurrentUserInfo:  # a default: annotations are strings here
        with runtime.transaction() as session:
            user = auth.authenticate(session, token, runtime.settings)
            if not deferred:
                authz.check(session, user, privilege, on, checked_object_id(request.path_params, on, param), token=token)
            return CurrentUserInfo(user.username, user.is_admin, user.id, token=token, privilege=privilege)

    check_privilege.privilege = privilege  # type: ignore[attr-defined]
    check_privilege.error_statuses = (401, 403)  # type: ignore[attr-defined]
    check_privilege.object_kind = on  # type: ignore[attr-defined]
    check_privilege.deferred = deferred  # type: ignore[attr-defined]
    check_privilege.param = param  # type: ignore[attr-defined]
    return Depends(_bound_to_actor(check_privilege))


def public(reason: str) -> Any:
    """Dependency marking a route that needs no user privilege (login, agent routes with their
    own host credential, the caller's own session and tokens); the reason is documentation."""

    def no_privilege() -> None:
        return None

    no_privilege.privilege = "System.Anonymous"  # type: ignore[attr-defined]
    no_privilege.reason = reason  # type: ignore[attr-defined]
    return Depends(no_privilege)


def get_agent_host_id(host_id: ObjectIdPath, runtime: RuntimeDep, token: TokenDep, request: Request) -> int:
    """The host whose agent is calling; a host's token is valid only for that host, and its
    requests must be of a protocol version this server reads."""
    with runtime.transaction() as session:
        host = inventory.host_by_token(session, host_id, token)
        if host is None:
            raise Unauthorized(f"not the agent of host {host_id}", code="BAD_AGENT_CREDENTIAL")
    try:
        report_protocol(request.headers.get(PROTOCOL_HEADER))
    except UnsupportedProtocol as exc:
        raise VcError(str(exc), code="PROTOCOL_VERSION_UNSUPPORTED") from None
    return host.id


get_agent_host_id.error_statuses = (400, 401)  # type: ignore[attr-defined]

AgentHostId = Annotated[int, Depends(get_agent_host_id)]
