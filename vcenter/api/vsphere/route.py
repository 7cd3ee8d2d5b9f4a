"""What every route of the vSphere-compatible API does beyond its own handler.

- Its errors are vSphere's (vcenter.api.vsphere.errors), whatever the application's default
  mapping is: the route hands Starlette its own exception handlers, as /api/v1's routes do.
- It answers over HTTPS only: a request whose scheme is not ``https`` (the socket's, or a
  trusted proxy's ``X-Forwarded-Proto``: vcenter.api.client_address) is refused with 400
  INVALID_REQUEST before any credential is read, so a password or session id sent in clear
  never gets a session nor an answer that used it.
- It stays out of our OpenAPI document (``include_in_schema=False``): these routes follow
  vSphere's own specification (tests/data/vsphere/, which tests validate the answers against),
  not our v1 contract, and a second vocabulary of errors and ids there would mislead clients
  generated from it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.types import Receive, Scope, Send

from vcenter.api.errors import handle_with
from vcenter.api.vsphere.errors import answer, vsphere_error_response

_HANDLERS: tuple[dict[Any, Any], dict[Any, Any]] = ({Exception: vsphere_error_response}, {})


def plain_http_refusal(path: str) -> Any:
    return answer(
        400,
        "INVALID_REQUEST",
        f"the vSphere Automation API answers over HTTPS only: send this request to https://<server>{path} (nothing was read from it, no session was made)",
    )


class VsphereRoute(APIRoute):
    """A route of the vSphere-compatible API (see the module's docstring)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("scheme") != "https":
            await plain_http_refusal(scope.get("path", ""))(scope, receive, send)
            return
        await handle_with(_HANDLERS, super().handle, scope, receive, send)


def router(**kwargs: Any) -> APIRouter:
    return APIRouter(route_class=VsphereRoute, include_in_schema=False, **kwargs)
