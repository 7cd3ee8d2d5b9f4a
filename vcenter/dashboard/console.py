"""The console proxy: a websocket from the browser (xterm.js) to the host agent's console
endpoint (workers.agent.console), opened by a one-time ticket (vcenter.services.compute.console).

The browser's session cookie (an API client: its bearer credential) must belong to the user
the ticket was issued to. The server
connects to the host over TLS and accepts the host's certificate from the cluster CA (issued
to that host, naming the address dialled, one of its standing serials in the grant: neither
revoked nor superseded) or, from an agent that has none yet, the self-signed certificate
whose thumbprint the operator confirmed at registration; it sends the signed
``console.open`` request, and
then copies bytes both ways: websocket binary/text frames -> the guest's serial input, the
guest's output -> binary frames. Errors close the websocket with code 4xxx and a reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import ssl
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool

from vcenter.core.clock import utcnow
from vcenter.core.errors import Unauthorized
from vcenter.core.host_pki import issued_for
from vcenter.dashboard.web import COOKIE, ui_public
from vcenter.services.access import auth
from vcenter.services.certificates import host_certificates
from vcenter.services.compute import console as console_service

log = logging.getLogger(__name__)
router = APIRouter(prefix="/ui", include_in_schema=False)


def thumbprint_of_der(der: bytes) -> str:
    digest = hashlib.sha256(der).hexdigest().upper()
    return "SHA256:" + ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _pinned_context() -> ssl.SSLContext:
    # Trust is decided after the handshake (host_certificate_accepted): the pinned thumbprint
    # or the cluster CA with the grant's serials, which no verify_mode expresses.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def host_certificate_accepted(settings: Any, der: bytes, grant: dict[str, Any]) -> bool:
    """The pinned self-signed certificate, or one the cluster CA issued to this host that stands."""
    if thumbprint_of_der(der) == grant["thumbprint"]:
        return True
    serials = grant.get("certificate_serials") or []
    return bool(serials) and issued_for(der, host_certificates.ca(settings).cert_pem.encode(), serials, grant["address"], utcnow())


async def open_host_console(runtime: Any, grant: dict[str, Any]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    settings = runtime.settings
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(grant["address"], settings.agent_console_port, ssl=_pinned_context(), server_hostname=None), timeout=settings.console_connect_timeout
    )
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    if der is None or not host_certificate_accepted(settings, der, grant):
        writer.close()
        raise ConnectionError(f"host {grant['host_id']} presented a certificate other than the confirmed one or a standing one of the cluster CA for it")
    writer.write(await run_in_threadpool(console_service.open_request, runtime.signer, grant))
    await writer.drain()
    answer = json.loads(await asyncio.wait_for(reader.readline(), timeout=settings.console_connect_timeout) or b"{}")
    if not answer.get("ok"):
        writer.close()
        raise ConnectionError(f"{answer.get('code', 'CLOSED')}: {answer.get('message', 'the host closed the console')}")
    return reader, writer


@router.websocket("/console/ws")
async def console_ws(websocket: WebSocket, _: Annotated[None, ui_public("authorized by its one-time console ticket and the session cookie")]) -> None:
    runtime = websocket.app.state.runtime
    ticket = websocket.query_params.get("ticket", "")
    # The browser's session cookie, or the bearer credential of an API client (`vcenter vm
    # console`, its ticket from POST /api/v1/vms/{id}/console/ticket): a page cannot set that
    # header on a websocket, so it opens no cross-site door the Origin check below must close.
    scheme, _, bearer = websocket.headers.get("authorization", "").partition(" ")
    token = websocket.cookies.get(COOKIE, "") or (bearer.strip() if scheme.lower() == "bearer" else "")

    def admit() -> tuple[dict[str, Any] | None, int | None]:
        # Redis and the database block: off the event loop.
        grant = console_service.redeem(runtime.redis, ticket)
        if grant is None or not token:
            return grant, None
        with runtime.transaction() as session:
            try:
                return grant, auth.authenticate(session, token, runtime.settings).id
            except Unauthorized:
                return grant, None

    origin = websocket.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != websocket.headers.get("host"):
        # A page of another site opening our websocket with the user's cookie: refuse before
        # the ticket is spent.
        await websocket.accept()
        await websocket.close(code=4403, reason="cross-site console request")
        return
    grant, user_id = await run_in_threadpool(admit)
    await websocket.accept()
    if grant is None:
        await websocket.close(code=4403, reason="unknown, used or expired console ticket")
        return
    if user_id is None or user_id != grant.get("user_id"):
        await websocket.close(code=4401, reason="log in as the user the ticket was issued to")
        return
    try:
        reader, writer = await open_host_console(runtime, grant)
    except (OSError, ConnectionError, asyncio.TimeoutError, ValueError) as exc:
        log.warning("console of VM %s: %s", grant["vm_id"], exc)
        await websocket.close(code=4502, reason=str(exc)[:120] or "cannot reach the host's console")
        return

    async def guest_to_browser() -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            await websocket.send_bytes(data)

    async def browser_to_guest() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes") or (message.get("text") or "").encode()
            if data:
                writer.write(data)
                await writer.drain()

    tasks = [asyncio.create_task(guest_to_browser()), asyncio.create_task(browser_to_guest())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    except WebSocketDisconnect:
        pass
    finally:
        for task in tasks:
            task.cancel()
        writer.close()
        try:
            await websocket.close(code=1000, reason="console closed")
        except RuntimeError:
            pass  # already closed by the browser
