"""The error mapping belongs to the API that mounts it (issue 18 item 2): a route of /api/v1
(vcenter.api.v1.router) answers our error body even in an application whose own handlers answer
another format, as the vSphere-compatible API will; a route outside it gets the application's."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from vcenter.api import v1
from vcenter.core.errors import NotFound, VcError


def _app() -> FastAPI:
    app = FastAPI()

    @app.exception_handler(VcError)
    async def other_format(_: Request, exc: Exception) -> JSONResponse:  # another API's format
        return JSONResponse({"error_type": "NOT_FOUND", "messages": [str(exc)]}, status_code=404)

    ours = v1.router(prefix="/api/v1")
    theirs = APIRouter(prefix="/rest")

    @ours.get("/vms/{vm_id}")
    def get_vm(vm_id: int) -> None:
        raise NotFound(f"no vm {vm_id}", code="VM_NOT_FOUND")

    @theirs.get("/vcenter/vm/{vm}")
    def get_their_vm(vm: str) -> None:
        raise NotFound(f"no vm {vm}", code="VM_NOT_FOUND")

    app.include_router(ours)
    app.include_router(theirs)
    return app


def test_each_mounted_api_answers_errors_in_its_own_format():
    client = TestClient(_app())
    ours = client.get("/api/v1/vms/7")
    assert (ours.status_code, ours.json()) == (404, {"code": "VM_NOT_FOUND", "message": "no vm 7"})
    invalid = client.get("/api/v1/vms/x")
    assert invalid.status_code == 422 and invalid.json()["code"] == "INVALID"
    theirs = client.get("/rest/vcenter/vm/vm-7")
    assert (theirs.status_code, theirs.json()) == (404, {"error_type": "NOT_FOUND", "messages": ["no vm vm-7"]})
