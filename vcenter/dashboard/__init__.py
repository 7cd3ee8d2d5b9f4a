"""The operator dashboard at /ui: server-rendered pages (Jinja2 + htmx), a live tasks and
events panel (server-sent events), the VM serial console (xterm.js over a websocket proxy) and
charts (uPlot). Every asset is served from static/ (vendored from npm; see
static/vendor/README.txt): the dashboard works without reaching any other site.

``install(app)`` mounts it on the FastAPI application. Imports services, schemas and core only.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    from vcenter.dashboard import charts, console, live, pages
    from vcenter.dashboard.web import LoginRequired

    for module in (pages, live, console, charts):
        app.include_router(module.router)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")

    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, _exc: LoginRequired) -> Response:
        target = "/ui/login?next=" + request.url.path if request.method == "GET" else "/ui/login"
        if request.headers.get("hx-request"):
            return Response(status_code=401, headers={"HX-Redirect": target})
        if request.method != "GET" or request.url.path == "/ui/live":
            from fastapi.responses import JSONResponse

            return JSONResponse({"code": "NOT_AUTHENTICATED", "message": "log in first"}, status_code=401)
        return RedirectResponse(target, status_code=303)
