"""The FastAPI application: /api/v1 routers, OpenAPI docs served from local assets,
/livez, /readyz (database and Redis), /metrics (Prometheus).

Around every request, outermost first: the client address (``X-Forwarded-For`` from trusted
proxies only, vcenter.api.client_address), the security headers (vcenter.api.headers), then
Starlette's error handling, the request metrics and the input guards (vcenter.api.guards).

/metrics on the API port is not anonymous (``metrics_access``): the ``metrics_token`` bearer
credential, or a user holding System.View. ``metrics_listen`` adds a separate plain listener
serving only the metrics, for a Prometheus that scrapes an address nobody else reaches. What it
serves: this application's HTTP counters, the process's catalogue (vcenter.observability.metrics:
task transitions, queue wait, migration downtime, the database pool) and the system's gauges read
at scrape time (vcenter.services.monitoring.scrape: open tasks, outbox lag, heartbeat ages).
"""

from __future__ import annotations

import gc
import html
import logging
import time
from typing import Any
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import fastapi.routing
from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from vcenter.api.client_address import ClientAddress
from vcenter.api.errors import declare_json, install_error_handlers
from vcenter.api.guards import InputGuard, streamed_upload_matcher
from vcenter.api.headers import SecurityHeaders
from vcenter.core.audit import request_source
from vcenter.core.errors import Unauthorized
from vcenter.core.release import release
from vcenter.api.routers import access, agent, clusters, feeds, inventory, tasks, users, vms
from vcenter.core.settings import Settings, get_settings
from vcenter.observability.listener import bearer_of, is_metrics_token, readiness
from vcenter.observability.metrics import PoolCollector, ProcessCatalogue, ServerStateCollector, set_role
from vcenter.services.access import auth, authz
from vcenter.schemas.health import Health
from vcenter.services.tasks.runtime import Runtime

log = logging.getLogger(__name__)

STATIC_DOCS = "/static/docs"
# Third-party assets, copied unchanged from npm (static/vendor/README.txt: versions, licences, updates).
VENDOR = f"{STATIC_DOCS}/vendor"


def operation_id(route: APIRoute) -> str:
    """An operation's OpenAPI ``operationId``: its route's name (``list_datacenters``,
    ``get_host``, ``migrate_vm``), which clients generated from the document keep as method
    names; FastAPI's default appends the path and method (``..._api_v1_datacenters_get``) and
    changes with them. Unique: tests/api/test_openapi_contract.py fails on a repeated name."""
    return route.name


def swagger_page(openapi_url: str) -> str:
    """The /docs page: the vendored Swagger UI 5 (it reads OpenAPI 3.1) and its start-up script,
    all files of ours, so the page runs under the CSP without inline script (FastAPI's
    get_swagger_ui_html inlines it and loads its assets from a CDN)."""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>virtcenter API</title>
<link rel="stylesheet" href="{VENDOR}/swagger-ui/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{html.escape(openapi_url)}"></div>
<script src="{VENDOR}/swagger-ui/swagger-ui-bundle.js"></script>
<script src="{STATIC_DOCS}/swagger-init.js"></script>
</body>
</html>
"""


def redoc_page(openapi_url: str, style_nonce: str) -> str:
    """The /redoc page: the vendored Redoc, started by a script of ours. Redoc inserts its styles
    at run time; our script hands it the nonce of this response from the ``csp-nonce`` meta
    element (vcenter.api.headers allows that nonce on this page only)."""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta property="csp-nonce" nonce="{html.escape(style_nonce)}">
<title>virtcenter API reference</title>
</head>
<body>
<div id="redoc-root" data-openapi-url="{html.escape(openapi_url)}"></div>
<script src="{VENDOR}/redoc/redoc.standalone.js"></script>
<script src="{STATIC_DOCS}/redoc-init.js"></script>
</body>
</html>
"""


class HttpMetrics:
    """What /metrics serves for one application's runtime, in a registry of its own: its
    request counters (several applications in one process, as in the tests, each count their
    own), the process's catalogue, the runtime's database pool and the system's gauges read at
    scrape time."""

    def __init__(self, runtime: Runtime | None = None) -> None:
        self.registry = CollectorRegistry()
        self.requests_total = Counter("vcenter_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("vcenter_http_request_seconds", "HTTP request latency", ["method", "route"], registry=self.registry)
        self.registry.register(ProcessCatalogue())
        if runtime is not None:
            from vcenter.services.monitoring.scrape import read_state

            self.registry.register(PoolCollector(runtime.database_pools))
            self.registry.register(ServerStateCollector(lambda: read_state(runtime)))


class RequestMetrics:
    """ASGI middleware: counts each HTTP request by method, route and status, and observes its
    latency until the response starts; sets the request's source address for the audit
    (vcenter.core.audit.request_source). Plain ASGI, not Starlette's BaseHTTPMiddleware, whose
    task group and body streams cost about 1 ms of CPU per request (a third of a /livez)."""

    def __init__(self, app: Any, metrics: Callable[[], HttpMetrics]):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        client = scope.get("client")
        request_source.set(client[0] if client else None)

        async def observed(message: Any) -> None:
            if message["type"] == "http.response.start":
                path = getattr(scope.get("route"), "path", "unmatched")
                metrics = self.metrics()
                metrics.requests_total.labels(scope["method"], path, str(message["status"])).inc()
                metrics.latency.labels(scope["method"], path).observe(time.perf_counter() - start)
            await send(message)

        await self.app(scope, receive, observed)


_STARTED = {"frozen": False}


def freeze_start_up_objects(app: FastAPI) -> None:
    """Once per process, when the first application starts serving: move every object alive by
    then (modules, routes, schemas, the ORM's mappings: hundreds of thousands) out of the
    garbage collector's reach. They live as long as the process; left to it, each full
    collection walked them all again, about 1 ms of CPU per list request on average. FastAPI
    (0.165) builds each route's request handling on first use: built here first, so that it
    is frozen too (what the first requests would have built, the same objects)."""
    if _STARTED["frozen"]:
        return
    _STARTED["frozen"] = True
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)  # older FastAPI builds them eagerly
    if contexts is not None:
        for _context in contexts(app.routes):
            pass
    gc.collect()
    gc.freeze()


def bind(app: FastAPI, runtime: Runtime) -> FastAPI:
    """Give ``app`` a runtime (settings, database, Redis, Celery) and fresh request metrics.

    The application reads its settings only through ``app.state.runtime``, when the lifespan
    starts or the middleware stack is built (reset here, built again on the next request): so
    routes, OpenAPI and middleware classes built once serve another runtime. The tests rebind
    one built application for each test instead of building one each time, where FastAPI's
    analysis of every route on an application's first request cost 0.2-0.4 s of CPU."""
    app.state.runtime = runtime
    app.state.http_metrics = HttpMetrics(runtime)
    app.middleware_stack = None
    return app


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    settings = settings or get_settings()

    def current() -> Settings:
        return app.state.runtime.settings

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        freeze_start_up_objects(_app)
        # The separate metrics listener lives as long as the server (not the tests' apps).
        set_role("api", release())
        server = None
        listen = current().metrics_listen
        if listen:
            from prometheus_client import start_http_server

            host, _, port = listen.rpartition(":")
            server, _thread = start_http_server(int(port), addr=host.strip("[]"), registry=app.state.http_metrics.registry)
            log.info("metrics listener on http://%s/metrics", listen)
        try:
            yield
        finally:
            if server is not None:
                server.shutdown()
                server.server_close()

    app = FastAPI(
        title="virtcenter",
        version=release(),
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        description="Central management server for KVM/libvirt clusters.",
        generate_unique_id_function=operation_id,
        license_info={"name": "Apache-2.0", "identifier": "Apache-2.0"},
    )
    bind(app, runtime or Runtime.build(settings))
    install_error_handlers(app)
    app.add_middleware(InputGuard, max_json_body=lambda: current().max_json_body, is_streamed_upload=streamed_upload_matcher(lambda: app.routes))
    for module in (inventory, clusters, vms, feeds, tasks, users, access, agent):  # feeds first: /tasks/stream before /tasks/{task_id}
        app.include_router(module.router)
    app.include_router(agent.registration)
    from vcenter.api.routers import vmdata as vmdata_routes  # snapshots, clones, backups, restores

    app.include_router(vmdata_routes.router)
    from vcenter.api.routers import templates as template_routes  # template library, deploy, import/export, uploads

    app.include_router(template_routes.router)
    app.include_router(template_routes.agent_router)
    from vcenter.dashboard import install as install_dashboard  # the operator dashboard at /ui

    install_dashboard(app)
    from vcenter.api.routers import alarms as alarm_routes, metrics as metric_routes

    app.include_router(metric_routes.router)
    app.include_router(metric_routes.agent_router)
    app.include_router(alarm_routes.router)
    from vcenter.api.routers import ha as ha_routes  # HA configuration, capacity, status

    app.include_router(ha_routes.router)
    from vcenter.api.routers import audit as audit_routes  # refused credentials, for the audit (Global.Diagnostics)

    app.include_router(audit_routes.router)
    from vcenter.api.vsphere import install as install_vsphere  # the vSphere Automation API (issue 19)

    install_vsphere(app)

    from pathlib import Path

    app.mount(STATIC_DOCS, StaticFiles(directory=Path(__file__).parent / "static"), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    def docs() -> Response:
        return HTMLResponse(swagger_page(app.openapi_url or "/openapi.json"))

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> Response:
        return HTMLResponse(redoc_page(app.openapi_url or "/openapi.json", request.state.csp_style_nonce))

    app.add_middleware(RequestMetrics, metrics=lambda: app.state.http_metrics)

    def health_answer(example: dict[str, Any], description: str) -> dict[int | str, dict[str, Any]]:
        # 422: the input guard refuses a NUL in any query string (INVALID_CHARACTER)
        return {200: {"description": description, "model": Health, "content": {"application/json": {"examples": {"answer": {"value": example}}}}}, **declare_json(422)}

    anyone = {"security": []}  # public: declared as such, not left unsaid

    @app.get(
        "/livez",
        tags=["health"],
        response_model=Health,
        response_model_exclude_unset=True,
        summary="The process is up",
        responses=health_answer({"status": "ok"}, "the process answers"),
        openapi_extra=anyone,
    )
    def livez() -> Any:
        """The process is up: answers 200 `{"status": "ok"}` without a credential, whatever the
        database and Redis do (a liveness probe)."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        summary="Database and Redis answer",
        openapi_extra=anyone,
        responses={
            **health_answer({"status": "ok", "checks": {"database": "ok", "redis": "ok"}}, "the database and Redis answer"),
            503: {
                "description": "the database or Redis does not answer",
                "model": Health,
                "content": {"application/json": {"examples": {"redis-down": {"value": {"status": "unavailable", "checks": {"database": "ok", "redis": "error: ConnectionError"}}}}}},
            },
        },
    )
    def readyz() -> Response:
        """Whether this replica can serve: 200 when the database and Redis both answer, else 503
        naming the one that does not (a readiness probe; no credential)."""
        ready, checks = readiness({"database": app.state.runtime.check_database, "redis": app.state.runtime.check_redis})
        return JSONResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status_code=200 if ready else 503)

    def metrics_access(request: Request) -> None:
        """Who may read /metrics on the API port: the metrics token, else a user holding
        System.View on the root; anonymous is refused (401 NOT_AUTHENTICATED)."""
        token = bearer_of(request.headers.get("authorization"))
        if is_metrics_token(token, current().metrics_token):
            return
        if token is None:
            raise Unauthorized("/metrics needs a credential: the metrics token (setting metrics_token) or a user holding System.View, as 'Authorization: Bearer <token>'", code="NOT_AUTHENTICATED")
        runtime = app.state.runtime
        with runtime.transaction() as session:
            authz.check(session, auth.authenticate(session, token, runtime.settings), "System.View", None, None, token=token)

    @app.get(
        "/metrics",
        tags=["health"],
        summary="Prometheus metrics (the metrics token, or a user holding System.View)",
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "the Prometheus text format"}, **declare_json(401, 403)},
        response_class=PlainTextResponse,
        # metrics_access reads the header itself (the metrics token is no user's), so declare
        # the scheme here: it is the same 'Authorization: Bearer' credential.
        openapi_extra={"security": [{"bearerAuth": []}]},
    )
    def metrics(request: Request) -> Response:
        """This API replica's metrics in the Prometheus text format (request counters and
        latencies, task transitions, queue wait, migration downtime, its database pool) and the
        system's gauges read now (open tasks, outbox lag, agent heartbeat ages); needs the
        metrics token or a user holding System.View (401 without, 403 without the privilege)."""
        metrics_access(request)
        return Response(generate_latest(app.state.http_metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # Outermost, around Starlette's own error handling so that a 500 carries the headers too:
    # the client address first (the headers' HSTS reads the scheme it decides).
    build_stack = app.build_middleware_stack
    app.build_middleware_stack = lambda: ClientAddress(SecurityHeaders(build_stack()), current().trusted_proxies.split(","))  # type: ignore[method-assign]
    return app
