"""The FastAPI application: /api/v1 routers, OpenAPI docs served from local assets,
/livez, /readyz (database and Redis), /metrics (Prometheus)."""
from __future__ import annotations

import time

import swagger_ui_bundle
from fastapi import FastAPI, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from vcenter.api.errors import install_error_handlers
from vcenter.api.guards import InputGuard
from vcenter.core.audit import request_source
from vcenter.api.routers import access, agent, clusters, inventory, tasks, users, vms
from vcenter.core.settings import Settings, get_settings
from vcenter.services.runtime import Runtime


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(title="virtcenter", version="0.1.0", docs_url=None, redoc_url=None,
                  description="Central management server for KVM/libvirt clusters.")
    app.state.runtime = runtime or Runtime.build(settings)
    install_error_handlers(app)
    app.add_middleware(InputGuard, max_json_body=settings.max_json_body)
    for module in (inventory, clusters, vms, tasks, users, access, agent):
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

    app.mount("/static/swagger", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="swagger")

    @app.get("/docs", include_in_schema=False)
    def docs() -> Response:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="virtcenter API",
            swagger_js_url="/static/swagger/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger/swagger-ui.css",
            swagger_favicon_url="/static/swagger/favicon-32x32.png",
        )

    registry = CollectorRegistry()
    requests_total = Counter("vcenter_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=registry)
    latency = Histogram("vcenter_http_request_seconds", "HTTP request latency", ["method", "route"], registry=registry)

    @app.middleware("http")
    async def _metrics(request: Request, call_next):
        start = time.perf_counter()
        request_source.set(request.client.host if request.client else None)
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        requests_total.labels(request.method, path, str(response.status_code)).inc()
        latency.labels(request.method, path).observe(time.perf_counter() - start)
        return response

    @app.get("/livez", tags=["health"], summary="The process is up")
    def livez() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Database and Redis answer")
    def readyz() -> Response:
        checks: dict[str, str] = {}
        for name, check in (("database", app.state.runtime.check_database), ("redis", app.state.runtime.check_redis)):
            try:
                check()
                checks[name] = "ok"
            except Exception as exc:  # report, do not crash: this is the health check
                checks[name] = f"error: {type(exc).__name__}"
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
