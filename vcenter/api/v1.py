"""The /api/v1 API as a whole: what every one of its routes does beyond its own handler.

Every router of /api/v1 is made by ``router()``, whose routes are ``V1Route``s:

- an exception raised while serving one becomes our error body by /api/v1's own mapping
  (vcenter.api.errors.error_response), which the route hands Starlette for its requests: another
  API mounted in the process (the vSphere-compatible one) maps errors its own way;
- its OpenAPI operation documents the error statuses it can answer, with the real error
  schema (vcenter.api.errors.error_statuses decides which);
- a ``202 Accepted`` answering a Task carries ``Location: /api/v1/tasks/{id}``, declared in
  the document too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import Any, get_args, get_origin

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security.base import SecurityBase
from fastapi.utils import create_model_field
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from vcenter.api.errors import ERROR_DESCRIPTIONS, ErrorBody, error_response, error_statuses, handle_with
from vcenter.services.tasks import idempotency

# /api/v1's exception mapping: one handler for every exception (error_response tells them apart).
_V1_HANDLERS: tuple[dict[Any, Any], dict[Any, Any]] = ({Exception: error_response}, {})

PREFIX = "/api/v1"
TASK_PATH = f"{PREFIX}/tasks/{{task_id}}"
LOCATION_HEADER = {
    "Location": {
        "description": "the Task's own URL, to poll (GET, with ?wait=) or to cancel",
        "schema": {"type": "string", "format": "uri-reference", "examples": ["/api/v1/tasks/42"]},
    }
}

# Every operation answering a Task takes one (vcenter.services.tasks.idempotency).
IDEMPOTENCY_PARAMETER = {
    "name": idempotency.HEADER,
    "in": "header",
    "required": False,
    "description": (
        "A key of the client's choosing (a UUID) that makes a retry safe: the same key from the same user within the retention window "
        "(setting idempotency_retention, default a day) answers the first request's 202 and Task instead of starting another; "
        "the same key with another method, path or body is 422 IDEMPOTENCY_KEY_REUSED."
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": idempotency.MAX_KEY_LENGTH, "pattern": "^[!-~]+$", "examples": ["5f0c6a2e-8d1b-4a43-9b57-0f4f3c1d2e7a"]},
}
REPLAYED_HEADER = {
    "Idempotent-Replayed": {
        "description": "`true` when this 202 repeats the answer to an earlier request with the same Idempotency-Key (no new Task was started)",
        "schema": {"type": "string", "enum": ["true"]},
    }
}


def task_location(task_id: int) -> str:
    return TASK_PATH.format(task_id=task_id)


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    stack = [dependant]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(current.dependencies)


def _names_objects(annotation: Any) -> bool:
    """Whether a body of this type has an ``*_id`` field (an object the operation looks up)."""
    models = [a for a in (annotation, *get_args(annotation)) if isinstance(a, type) and issubclass(a, BaseModel)]
    return any(name.endswith(("_id", "_ids")) for model in models for name in model.model_fields)


def _access(dependants: list[Dependant], reads: bool) -> str:
    """Who may call the operation, from the privilege its dependencies declare."""
    for dependant in dependants:
        call = dependant.call
        privilege = getattr(call, "privilege", None)
        if privilege == "System.Anonymous":
            return f"No user privilege: {call.reason}."  # type: ignore[union-attr]
        if privilege:
            kind = getattr(call, "object_kind", None)
            if getattr(call, "deferred", False):
                if reads:
                    return f"Needs `{privilege}` on what it shows (a list leaves out the objects the caller may not see)."
                return f"Needs `{privilege}` on the objects its body names."
            return f"Needs `{privilege}` on the {kind} in the path." if kind else f"Needs `{privilege}` on the root folder."
    return "Takes the bearer credential."


def _answer(status: int | None, response_model: Any, media_types: Iterable[str] = ()) -> str:
    status = status or 200
    if status == 204:
        return "Answers 204 without a body."
    other = [m for m in media_types if m != "application/json"]
    if other:  # a file, a stream: its own media type
        return f"Answers {status} with {' or '.join(f'`{m}`' for m in other)}, not JSON."
    from vcenter.schemas.inventory import TaskRead

    if status == 202 and response_model is TaskRead:
        return "Answers 202 with the Task it started (`Location`: the Task's URL); follow it to its end with GET /api/v1/tasks/{task_id}?wait=."
    items = get_args(response_model) if get_origin(response_model) is list else ()
    if items and isinstance(items[0], type):
        return f"Answers {status} with a list of `{items[0].__name__}`."
    name = getattr(response_model, "__name__", None)
    return f"Answers {status} with a `{name}`." if name and name not in ("dict", "list", "Any") else f"Answers {status} with a JSON document."


def describe(summary: str, dependants: list[Dependant], status: int | None, response_model: Any, methods: set[str], media_types: Iterable[str] = ()) -> str:
    """An operation's description when its route function has no docstring: what it does
    (its summary), who may call it (its privilege) and what it answers (``media_types``: of
    its success answer, when the route declares them)."""
    what = summary[0].upper() + summary[1:]
    return f"{what.rstrip('.')}. {_access(dependants, reads=methods <= {'GET', 'HEAD'})} {_answer(status, response_model, media_types)}"


class V1Route(APIRoute):
    """A route of /api/v1 (see the module's docstring)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self._document_errors()
        if not any(isinstance(d.call, SecurityBase) for d in _dependants(self.dependant)):
            # public (login, registration): an empty requirement says so, for tools and linters
            self.openapi_extra = {"security": [], **(self.openapi_extra or {})}
        if not self.description:  # the route function's docstring, when it has one, wins
            media_types = (self.responses.get(self.status_code or 200) or {}).get("content", {})
            self.description = describe(self.summary or self.name, list(_dependants(self.dependant)), self.status_code, self.response_model, self.methods, media_types)
        from vcenter.schemas.inventory import TaskRead

        self.answers_task = self.status_code == 202 and self.response_model is TaskRead
        if self.answers_task:
            self.responses.setdefault(202, {}).setdefault("headers", {**LOCATION_HEADER, **REPLAYED_HEADER})
            extra = dict(self.openapi_extra or {})
            extra["parameters"] = [*extra.get("parameters", []), IDEMPOTENCY_PARAMETER]
            self.openapi_extra = extra

    def _document_errors(self) -> None:
        dependants = list(_dependants(self.dependant))
        statuses = error_statuses(
            methods=self.methods,
            from_dependencies={status for d in dependants for status in getattr(d.call, "error_statuses", ())},
            path_params=any(d.path_params for d in dependants),
            inputs=any(d.query_params or d.header_params or d.cookie_params for d in dependants),
            body=self.body_field is not None or bool({"requestBody", "x-streamed-upload"} & set(self.openapi_extra or {})),
            body_names_objects=self.body_field is not None and _names_objects(self.body_field.field_info.annotation),
            conflicts=getattr(self.endpoint, "conflicts", None),
        )
        for status in sorted(statuses):
            self.responses.setdefault(status, {"model": ErrorBody, "description": ERROR_DESCRIPTIONS[status]})
        for status, response in self.responses.items():
            if response.get("model") is ErrorBody and status not in self.response_fields:
                self.response_fields[status] = create_model_field(name=f"Response_{status}_{self.unique_id}", type_=ErrorBody, mode="serialization")

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await handle_with(_V1_HANDLERS, super().handle, scope, receive, send)  # /api/v1's error mapping

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        route = self  # read at request time: APIRoute builds a handler before __init__ ends

        async def located(request: Request) -> Response:
            key = request.headers.get(idempotency.HEADER) if getattr(route, "answers_task", False) else None
            if key is None:
                response = await handler(request)
            else:
                response = await _idempotent(request, handler, key)
            if getattr(route, "answers_task", False) and response.status_code == 202 and "location" not in response.headers:
                response.headers["Location"] = task_location(json.loads(bytes(response.body))["id"])
            return response

        return located


async def _idempotent(request: Request, handler: Callable[[Request], Coroutine[Any, Any, Response]], key: str) -> Response:
    """Serve an operation sent with an Idempotency-Key (vcenter.services.tasks.idempotency):
    a repeat answers the first request's 202 and Task, marked ``Idempotent-Replayed: true``."""
    runtime = request.app.state.runtime
    token = idempotency.begin(key, idempotency.fingerprint(request.method, request.url.path, await request.body()), runtime.settings)
    try:
        return await handler(request)
    except idempotency.IdempotentReplay as replay:
        task = await run_in_threadpool(_task_body, runtime, replay.task_id)
        return JSONResponse(task, status_code=202, headers={"Location": task_location(replay.task_id), "Idempotent-Replayed": "true"})
    finally:
        idempotency.end(token)


def _task_body(runtime: Any, task_id: int) -> dict[str, Any]:
    from vcenter.schemas.inventory import TaskRead
    from vcenter.services.tasks.tasks import get_task

    with runtime.transaction() as session:
        return TaskRead.model_validate(get_task(session, task_id)).model_dump(mode="json")


def router(**kwargs: Any) -> APIRouter:
    """An APIRouter of /api/v1 (``prefix`` starts with PREFIX)."""
    return APIRouter(route_class=V1Route, **kwargs)


def conflicts(answers: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a route function that can (``True``: a read that refuses on state) or cannot
    (``False``: a write without any 409) answer 409, where its method does not say it."""

    def mark(endpoint: Callable[..., Any]) -> Callable[..., Any]:
        endpoint.conflicts = answers  # type: ignore[attr-defined]
        return endpoint

    return mark
