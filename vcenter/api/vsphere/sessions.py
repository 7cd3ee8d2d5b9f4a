"""Sessions of the vSphere-compatible API, and the caller of its other routes.

vSphere clients log in with HTTP basic authentication at ``POST /rest/com/vmware/cis/session``
(answers ``{"value": "<id>"}``, what Ansible's vmware.vmware_rest does) or ``POST /api/session``
(answers the id as a JSON string), send the id in the ``vmware-api-session-id`` header, read
the session at ``GET /api/session`` (or ``POST /rest/com/vmware/cis/session?~action=get``) and
log out with ``DELETE`` on either path.

Decisions:
- A vSphere session IS one of our login sessions: the id is the token auth.login returns, so
  the users, the password check, the lockout and the per-address rate limit, the audit events
  (session.login, session.login_failed, ...), the idle timeout and lifetime, and the store in
  the database (every API replica sees it) are our own, unchanged. An API token of ours is
  accepted in the header too, narrowing the caller to its role as everywhere.
- The caller of every other vSphere route is read by ``requires``: the session id header
  authenticated by auth.authenticate; the privilege named is checked by the route on the object
  its vSphere id names (authz.check through CurrentUserInfo.require), or applied to a list as
  the visibility of its rows, so a list never answers 403.
- A basic credential that is no ``user:password`` in base64, or outside our bounds (user name
  1-80, password 1-1024 characters), is 401 like a wrong password, without a password check.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Request, Response, status
from pydantic import ValidationError

from vcenter.api import deps
from vcenter.api.deps import DbDep, RuntimeDep, SettingsDep, public
from vcenter.api.vsphere.errors import SESSION_HEADER
from vcenter.api.vsphere.route import router as vsphere_router
from vcenter.core.clock import utcnow
from vcenter.core.errors import Invalid, Unauthorized
from vcenter.schemas.inventory import LoginRequest
from vcenter.services.access import auth

router = vsphere_router()

_MAX_BASIC = 2048  # base64 of the longest user name and password we accept, with room


def session_id(request: Request) -> str:
    token = request.headers.get(SESSION_HEADER, "").strip()
    if not token:
        raise Unauthorized(f"log in first (POST /api/session with basic authentication), then send the session id in the '{SESSION_HEADER}' header", code="NOT_AUTHENTICATED")
    return token


SessionIdDep = Annotated[str, Depends(session_id)]


def requires(privilege: str) -> Any:
    """Dependency: the caller of a vSphere route, by its session id; ``privilege`` is checked
    by the route on the object it names (deferred: a vSphere id is decoded first)."""
    return deps.requires(privilege, deferred=True, credential=session_id)


def basic_credentials(header: str | None) -> LoginRequest:
    """The user name and password of an ``Authorization: Basic`` header, within our bounds."""
    scheme, _, encoded = (header or "").strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        raise Unauthorized("log in with HTTP basic authentication (Authorization: Basic base64(user:password))", code="NOT_AUTHENTICATED")
    try:
        if len(encoded) > _MAX_BASIC:
            raise ValueError("too long")
        username, sep, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
        if not sep:
            raise ValueError("no ':'")
        return LoginRequest(username=username, password=password)
    except (ValueError, binascii.Error, UnicodeDecodeError, ValidationError):
        raise Unauthorized("wrong user name or password", code="BAD_CREDENTIALS") from None


def _login(request: Request, db: Any, settings: Any) -> str:
    credentials = basic_credentials(request.headers.get("authorization"))
    token, _session, _user = auth.login(db, credentials.username, credentials.password, settings)
    return token


def _time(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def _info(db: Any, runtime: Any, token: str) -> dict[str, str]:
    user = auth.authenticate(db, token, runtime.settings)
    # An API token used as a session id has no login session: both times are now.
    created, last = auth.session_times(db, token) or (utcnow(), utcnow())
    return {"user": user.username, "created_time": _time(created), "last_accessed_time": _time(last)}


LOGIN = public("logging in is how a caller gets a session")
OWN = public("answers about, or ends, the caller's own session")


@router.post("/rest/com/vmware/cis/session", dependencies=[LOGIN], name="vsphere_rest_session_create")
def rest_session(request: Request, db: DbDep, runtime: RuntimeDep, settings: SettingsDep) -> Any:
    """Log in (the legacy REST path the collection uses): ``{"value": "<session id>"}``; with
    ``?~action=get`` and a session id, that session's information instead."""
    action = request.query_params.get("~action")
    if action is None:
        return {"value": _login(request, db, settings)}
    if action == "get":
        return {"value": _info(db, runtime, session_id(request))}
    raise Invalid(f"~action: {action[:40]!r} is not an operation of this path (only 'get')", code="UNKNOWN_ACTION")


@router.delete("/rest/com/vmware/cis/session", dependencies=[OWN], name="vsphere_rest_session_delete")
def rest_logout(db: DbDep, runtime: RuntimeDep, token: SessionIdDep) -> Response:
    auth.authenticate(db, token, runtime.settings)
    auth.logout(db, token)
    return Response(status_code=status.HTTP_200_OK)


@router.post("/api/session", status_code=status.HTTP_201_CREATED, dependencies=[LOGIN], name="vsphere_session_create")
def api_session(request: Request, db: DbDep, settings: SettingsDep) -> Any:
    """Log in: the session id as a JSON string."""
    return _login(request, db, settings)


@router.get("/api/session", dependencies=[OWN], name="vsphere_session_get")
def api_session_info(db: DbDep, runtime: RuntimeDep, token: SessionIdDep) -> Any:
    return _info(db, runtime, token)


@router.delete("/api/session", status_code=status.HTTP_204_NO_CONTENT, dependencies=[OWN], name="vsphere_session_delete")
def api_logout(db: DbDep, runtime: RuntimeDep, token: SessionIdDep) -> Response:
    auth.authenticate(db, token, runtime.settings)
    auth.logout(db, token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
