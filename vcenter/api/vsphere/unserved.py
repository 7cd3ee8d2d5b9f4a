"""What the vSphere-compatible API does not serve: every other operation under
``/api/vcenter/`` and ``/rest/`` answers 404 OPERATION_NOT_FOUND in vSphere's format, naming
the operation and where the served subset is listed (docs/api.md, "vSphere Automation
compatibility"), instead of our /api/v1 error body a vSphere client cannot read. Included after
every served route: Starlette prefers a route matching path and method to this one."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from vcenter.api.deps import public
from vcenter.api.vsphere.route import router as vsphere_router
from vcenter.core.errors import NotFound

router = vsphere_router()
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
NOT_SERVED = public("answers only that the operation is not served")


def refuse(request: Request) -> Any:
    raise NotFound(
        f"{request.method} {request.url.path[:200]} is not an operation virtcenter serves of the vSphere Automation API (the subset served: docs/api.md, 'vSphere Automation compatibility')",
        code="OPERATION_NOT_FOUND",
    )


@router.api_route("/api/vcenter/{rest:path}", methods=METHODS, dependencies=[NOT_SERVED], name="vsphere_unserved_api")
def unserved_api(request: Request) -> Any:
    return refuse(request)


@router.api_route("/rest/{rest:path}", methods=METHODS, dependencies=[NOT_SERVED], name="vsphere_unserved_rest")
def unserved_rest(request: Request) -> Any:
    return refuse(request)
