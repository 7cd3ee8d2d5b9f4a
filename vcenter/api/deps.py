"""Typed dependencies declared once: the transaction, the logged-in user, the agent's host."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Header, Request

from vcenter.core.errors import Unauthorized
from vcenter.core.settings import Settings
from vcenter.services import auth, inventory
from vcenter.services.runtime import Runtime


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


def bearer_token(authorization: Annotated[str | None, Header()] = None) -> str:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthorized("log in first: POST /api/v1/session, then send 'Authorization: Bearer <token>'", code="NOT_AUTHENTICATED")
    return authorization[7:].strip()


TokenDep = Annotated[str, Depends(bearer_token)]


class CurrentUserInfo:
    def __init__(self, username: str, is_admin: bool, user_id: int):
        self.username = username
        self.is_admin = is_admin
        self.id = user_id


def get_current_user(runtime: RuntimeDep, token: TokenDep) -> CurrentUserInfo:
    with runtime.transaction() as session:
        user = auth.authenticate(session, token, runtime.settings)
        return CurrentUserInfo(user.username, user.is_admin, user.id)


CurrentUser = Annotated[CurrentUserInfo, Depends(get_current_user)]


def get_agent_host_id(host_id: int, runtime: RuntimeDep, token: TokenDep) -> int:
    """The host whose agent is calling; a host's token is valid only for that host."""
    with runtime.transaction() as session:
        host = inventory.host_by_token(session, host_id, token)
        if host is None:
            raise Unauthorized(f"not the agent of host {host_id}", code="BAD_AGENT_CREDENTIAL")
        return host.id


AgentHostId = Annotated[int, Depends(get_agent_host_id)]
