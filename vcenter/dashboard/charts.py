"""Chart data for the monitor tab: the statistics of one host or VM, one counter, one tier,
as ``{"available", "unit", "tier", "points": [[epoch seconds, value], ...]}`` for uPlot.

The statistics themselves (tiers, rollups, retention) belong to vcenter.services.monitoring.metrics (the
same query as ``GET /api/v1/metrics/...``); this only reshapes them for the browser, which
holds a session cookie, not the API's bearer token.
"""

import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from vcenter.core.errors import VcError
from vcenter.core.object_ids import parse_object_id
from vcenter.dashboard.web import UiUser, ui_requires

router = APIRouter(prefix="/ui", include_in_schema=False)


# How far back each tier's chart reaches (vCenter's real-time, past day/week/month/year views).
RANGES = {"realtime": 3600.0, "day": 86400.0, "week": 7 * 86400.0, "month": 30 * 86400.0, "year": 365 * 86400.0}


def chart_points(request: Request, kind: str, object_id: int, counter: str, tier: str) -> JSONResponse:
    from vcenter.services.monitoring import metrics

    if tier not in RANGES:
        return JSONResponse({"available": False, "code": "UNKNOWN_TIER", "message": f"unknown tier {tier!r}"}, status_code=422)
    runtime = request.app.state.runtime
    start = time.time() - RANGES[tier] * runtime.settings.metrics_tier_scale
    try:
        with runtime.transaction() as session:
            answer: dict[str, Any] = metrics.query(session, runtime.settings, kind, object_id, [counter], tier, str(start))
    except VcError as exc:
        return JSONResponse({"available": False, **exc.to_dict()}, status_code=exc.status)
    series = answer["series"][0]
    points = [[datetime.fromisoformat(p["at"]).timestamp(), p["avg"]] for p in series["points"]]
    return JSONResponse({"available": True, "unit": series["unit"], "tier": answer["tier"], "interval_s": answer["interval_s"], "points": points})


def _route(kind: str) -> None:
    @router.get(f"/data/metrics/{kind}/{{{kind}_id}}", name=f"ui_metrics_{kind}")
    def data(
        request: Request, user: Annotated[UiUser, ui_requires("System.View", on=kind)], counter: str = Query("cpu.usage", max_length=40), tier: str = Query("realtime", max_length=16)
    ) -> JSONResponse:
        return chart_points(request, kind, parse_object_id(request.path_params[f"{kind}_id"], f"{kind}_id"), counter, tier)


for _kind in ("host", "vm"):
    _route(_kind)
