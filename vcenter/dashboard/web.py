"""What every dashboard route shares: the cookie session, CSRF tokens, permission checks, and
the Jinja2 templates.

Vocabulary:
- session cookie: ``vc_session`` holds the token of a login session of vcenter.services.access.auth
  (the same sessions as the API's bearer tokens: idle timeout, lifetime, logout revokes).
  HttpOnly and SameSite=Strict; Secure when ``ui_cookie_secure``.
- CSRF token: HMAC-SHA256 of the session token under a fixed label, so it needs no storage
  and changes with every login. Every POST carries it (form field ``csrf`` or header
  ``X-CSRF-Token``, which htmx sends from ``hx-headers`` on <body>). The login form, before any
  session, uses a double-submit cookie ``vc_login_csrf``.
- ui_requires(privilege, on, param): the route's declared privilege (as the API's
  ``requires``): the user must be logged in and hold it on the object, or gets 403.
- permission_checker(): the same check as a boolean, to decide which buttons a page offers.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates

from vcenter.core.audit import request_source
from vcenter.core.errors import Forbidden, Unauthorized, VcError
from vcenter.core.object_ids import checked_object_id
from vcenter.core.release import release
from vcenter.domain.privileges import PRIVILEGES
from vcenter.services.access import auth, authz, refusals

log = logging.getLogger(__name__)

COOKIE = "vc_session"
LOGIN_CSRF_COOKIE = "vc_login_csrf"
HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.globals["server_release"] = release()  # a host page says when its agent is older


class LoginRequired(Exception):
    """No valid session: pages redirect to the login form (handler in vcenter.dashboard)."""


@dataclass
class UiUser:
    username: str
    is_admin: bool
    id: int
    token: str

    @property
    def csrf(self) -> str:
        return csrf_for(self.token)


def csrf_for(token: str) -> str:
    return hmac.new(token.encode(), b"virtcenter-dashboard-csrf", hashlib.sha256).hexdigest()


def new_login_csrf() -> str:
    return secrets.token_urlsafe(24)


async def form_of(request: Request) -> dict[str, str]:
    """The url-encoded form body (first value of each field)."""
    body = (await request.body()).decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


# The form as a dependency, so that routes stay plain ``def`` and run in the thread pool: a
# database call inside an ``async def`` would block the event loop, and with SQLite deadlock
# against a request whose commit waits for that loop.
PostedForm = Annotated[dict[str, str], Depends(form_of)]


def _runtime(request: Request) -> Any:
    return request.app.state.runtime


def permission_checker(session: Any, settings: Any, user: UiUser) -> Callable[..., bool]:
    """``can(privilege, kind=None, object_id=None)`` for one page: does the user hold the
    privilege there? No audit record (it only decides which buttons a page shows; a refused
    POST goes through ui_requires and is recorded)."""
    row = auth.authenticate(session, user.token, settings)
    cache: dict[tuple, bool] = {}
    held: dict[tuple, frozenset[str]] = {}
    privileges_of = getattr(authz, "privileges", None)

    def can(privilege: str, kind: str | None = None, object_id: int | None = None) -> bool:
        if privileges_of is not None:  # one inheritance walk per object, however many buttons
            where = (kind, object_id)
            if where not in held:
                held[where] = privileges_of(session, row, kind, object_id, token=user.token)
            return privilege in held[where]
        key = (privilege, kind, object_id)
        if key not in cache:
            try:
                authz.check(session, row, privilege, kind, object_id, token=user.token)
                cache[key] = True
            except Forbidden:
                cache[key] = False
        return cache[key]

    return can


def visibility_filter(session: Any, settings: Any, user: UiUser) -> Callable[[list[Any]], list[Any]]:
    """``keep(nodes)``: the tree nodes (kind, id) the user may see (System.View), one
    decision per kind (authz.visible_ids) rather than one check per node."""
    visible_ids = getattr(authz, "visible_ids", None)
    row = auth.authenticate(session, user.token, settings)
    if visible_ids is None or row.is_admin:
        return lambda nodes: nodes
    cache: dict[str, set[int] | None] = {}

    def keep(nodes: list[Any]) -> list[Any]:
        out = []
        for node in nodes:
            if node.kind not in cache:
                cache[node.kind] = visible_ids(session, row, node.kind, token=user.token)
            ids = cache[node.kind]
            if ids is None or node.id in ids:
                out.append(node)
        return out

    return keep


def panel_filter(session: Any, settings: Any, user: UiUser) -> Callable[[Any], Any]:
    """``where(model)``: the clause restricting Task or Event rows to those about objects the
    user may see (authz.event_visibility_clause), or None for no restriction."""
    clause = getattr(authz, "event_visibility_clause", None)
    row = auth.authenticate(session, user.token, settings)
    if clause is None or row.is_admin:
        return lambda model: None
    return lambda model: clause(session, row, model, token=user.token)


def count_refused_credential(runtime: Any, request: Request, exc: VcError) -> None:
    """The dashboard's refusals of a presented credential (a session cookie, a password) are
    audited like the API's (vcenter.services.access.refusals), in a transaction of their own; a
    failure to count is logged, never shown to the user."""
    kind = refusals.credential_kind(exc.code, credential_presented=True)
    if kind is None:
        return
    try:
        refusals.record_refusal(runtime.sessions, request_source.get() or (request.client.host if request.client else None), kind, f"{exc.code} {request.method} {request.url.path}")
    except Exception:
        log.exception("could not count a refused %s credential", kind)


def ui_requires(privilege: str, on: str | None = None, param: str | None = None, anywhere: bool = False) -> Any:
    """Dependency declaring the route's privilege; answers the UiUser or raises
    LoginRequired / Forbidden (403). ``anywhere``: a page every logged-in user gets (home,
    search, the live panel), whose content is filtered to what the user may see, since a user
    may hold System.View below the root only."""
    if privilege not in PRIVILEGES:
        raise ValueError(f"unknown privilege {privilege!r}")
    param = param or (f"{on}_id" if on else None)

    def check_privilege(request: Request) -> UiUser:
        token = request.cookies.get(COOKIE)
        if not token:
            raise LoginRequired()
        runtime = _runtime(request)
        with runtime.transaction() as session:
            try:
                user = auth.authenticate(session, token, runtime.settings)
            except Unauthorized as exc:
                refused = exc
            else:
                refused = None
            if refused is not None:
                session.rollback()
                count_refused_credential(runtime, request, refused)
                raise LoginRequired() from None
            if anywhere:
                return UiUser(user.username, user.is_admin, user.id, token)
            # The API's parser (422 INVALID_ID on a spelling it refuses), so the page and this
            # check read the same object.
            authz.check(session, user, privilege, on, checked_object_id(request.path_params, on, param), token=token)
            return UiUser(user.username, user.is_admin, user.id, token)

    check_privilege.privilege = privilege  # type: ignore[attr-defined]
    check_privilege.object_kind = on  # type: ignore[attr-defined]
    check_privilege.anywhere = anywhere  # type: ignore[attr-defined]
    check_privilege.param = param  # type: ignore[attr-defined]
    return Depends(check_privilege)


def ui_public(reason: str) -> Any:
    def no_session() -> None:
        return None

    no_session.privilege = "System.Anonymous"  # type: ignore[attr-defined]
    no_session.reason = reason  # type: ignore[attr-defined]
    return Depends(no_session)


def verify_csrf(request: Request, user: UiUser, form: dict[str, str] | None = None) -> None:
    sent = request.headers.get("x-csrf-token") or (form or {}).get("csrf") or ""
    if not hmac.compare_digest(sent, user.csrf):
        raise Forbidden("missing or wrong CSRF token: reload the page", code="CSRF_FAILED")
