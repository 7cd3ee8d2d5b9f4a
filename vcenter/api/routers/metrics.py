"""Performance statistics: the counters catalogue, an object's series, and the agents' samples
coming in (with their host's own credential).

``GET /api/v1/metrics/{object_type}/{object_id}?counter=cpu.usage&counter=mem.usage&tier=&start=&end=``
(host, vm, cluster: a cluster's series is made from its hosts') answers one series per counter; without ``tier`` the finest tier that reaches back to
``start`` (default: an hour ago) is used. Times are ISO 8601 (UTC when no zone) or epoch seconds.
"""

from typing import Annotated, Any

from fastapi import Query

from vcenter.api import v1
from vcenter.api.deps import AgentHostId, CurrentUserInfo, DbDep, SettingsDep, public, requires
from vcenter.core.errors import NotFound
from vcenter.core.object_ids import ObjectIdPath
from vcenter.messaging.contracts import MetricsReport
from vcenter.schemas import alarms as s
from vcenter.schemas.agent import MetricsStored
from vcenter.services.inventory import inventory
from vcenter.services.monitoring import metrics as svc

router = v1.router(prefix="/api/v1/metrics", tags=["performance"])
agent_router = v1.router(prefix="/api/v1/agent/hosts/{host_id}", tags=["agent"], dependencies=[public("an agent's own host credential, valid for its host only")])


@router.get("/counters", response_model=s.CatalogueRead, summary="The performance counters and the statistics tiers")
def counters(settings: SettingsDep, user: Annotated[CurrentUserInfo, requires("System.View")]) -> Any:
    return svc.catalogue(settings)


def _series_route(object_type: str) -> None:
    @router.get(f"/{object_type}/{{object_id}}", response_model=s.MetricsRead, name=f"metrics_{object_type}", summary=f"Performance series of a {object_type}")
    def series(
        object_id: ObjectIdPath,
        db: DbDep,
        settings: SettingsDep,
        user: Annotated[CurrentUserInfo, requires("System.View", on=object_type, param="object_id")],
        counter: list[str] = Query(["cpu.usage"], description="one or more counters (see /api/v1/metrics/counters)"),
        tier: str | None = Query(None, description="realtime | day | week | month | year; default from the range"),
        start: str | None = Query(None, description="ISO 8601 or epoch seconds; default end - 1 hour"),
        end: str | None = Query(None, description="ISO 8601 or epoch seconds; default now"),
    ) -> Any:
        return svc.query(db, settings, object_type, object_id, counter, tier, start, end)


for _kind in svc.OBJECT_TYPES:
    _series_route(_kind)


@router.get("/{object_type}/{object_id}", include_in_schema=False, name="metrics_unknown_type")
def unknown_type(object_type: str, object_id: ObjectIdPath, user: Annotated[CurrentUserInfo, requires("System.View")]) -> Any:
    raise NotFound(f"no statistics for {object_type} objects; they exist for {', '.join(svc.OBJECT_TYPES)}", code="UNKNOWN_OBJECT_TYPE")


@agent_router.post("/metrics", response_model=MetricsStored, summary="Agent: a performance sample of the host and its running VMs")
@v1.conflicts(False)
def agent_metrics(body: MetricsReport, host_id: AgentHostId, db: DbDep) -> dict[str, Any]:
    return svc.ingest(db, inventory.get(db, "host", host_id), body)
