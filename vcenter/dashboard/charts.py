"""Chart data for the monitor tab: the statistics of one host or VM, one counter, one tier,
as ``{"available", "unit", "tier", "points": [[epoch seconds, value], ...]}`` for uPlot.

The statistics themselves (tiers, rollups, retention) belong to vcenter.services.metrics;
this only reshapes them for the browser, which cannot send the API's bearer token.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from vcenter.core.errors import VcError
from vcenter.dashboard.web import UiUser, ui_requires

router = APIRouter(prefix="/ui", include_in_schema=False)


def chart_points(request: Request, kind: str, object_id: int, counter: str, tier: str) -> JSONResponse:
    try:
        from vcenter.services import metrics
    except ImportError:
        return JSONResponse({"available": False, "message": "this server keeps no performance statistics yet"})
    reader = getattr(metrics, "chart_series", None)
    if reader is None:
        return JSONResponse({"available": False, "message": "this server's statistics offer no chart series"})
    try:
        with request.app.state.runtime.transaction() as session:
            series: dict[str, Any] = reader(session, request.app.state.runtime.settings, kind, object_id, counter, tier)
    except VcError as exc:
        return JSONResponse({"available": False, **exc.to_dict()}, status_code=exc.status)
    return JSONResponse({"available": True, **series})


def _route(kind: str) -> None:
    @router.get(f"/data/metrics/{kind}/{{{kind}_id}}", name=f"ui_metrics_{kind}")
    def data(request: Request, user: Annotated[UiUser, ui_requires("System.View", on=kind)],
             counter: str = Query("cpu.usage", max_length=40), tier: str = Query("realtime", max_length=16)) -> JSONResponse:
        return chart_points(request, kind, int(request.path_params[f"{kind}_id"]), counter, tier)


for _kind in ("host", "vm"):
    _route(_kind)
