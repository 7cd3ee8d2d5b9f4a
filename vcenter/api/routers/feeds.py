"""Live feeds: events and tasks as server-sent events (``text/event-stream``).

A stream polls the database every ``feed_poll_period`` (vcenter.services.tasks.feeds), so any
API replica serves it and a reconnect may land on another one. Each poll re-authenticates the
caller's token (the stream ends with ``event: end`` when the session does) and re-evaluates
what the caller may see (the list's visibility clause). Messages are ``event: event`` (an
event, as GET /events lists it) or ``event: task`` (a task, as GET /tasks/{id} answers it);
the last message of each poll carries ``id:``, the position to resume from with
``Last-Event-ID`` (or ``?after_id=``): nothing is lost or repeated across a reconnect that
happens between polls. Without a position a stream starts at the newest row; the task stream
then first sends the caller's unfinished tasks as they are.

Bounds: ``feed_streams_per_user`` open streams per user across replicas (429 STREAM_LIMIT,
vcenter.services.tasks.stream_slots), a comment every ``feed_keepalive_period`` when idle,
and an end after ``feed_stream_max_lifetime`` (``event: end``, reason ``lifetime``).
Everything that can refuse a stream does so before its status line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from vcenter.api import v1
from vcenter.api.errors import declare
from vcenter.api.deps import CurrentUserInfo, requires
from vcenter.core.errors import Invalid, Unauthorized
from vcenter.core.object_ids import parse_object_id
from vcenter.domain.feed_cursor import BadPosition, Cursor, parse_position, position
from vcenter.schemas import inventory as s
from vcenter.services.access import auth, authz
from vcenter.services.tasks import feeds, tasks
from vcenter.services.tasks.stream_slots import StreamSlot

log = logging.getLogger(__name__)
router = v1.router(prefix="/api/v1")

_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_POSITION_MAX = 2048  # characters of a position: feed_max_gaps ids at most, each 10 digits


def _stream_responses(kind: str, example: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI of a stream: before 3.2 a text/event-stream ``schema`` describes one event."""
    one_event = {
        "type": "object",
        "required": ["data"],
        "properties": {
            "event": {"type": "string", "enum": [kind, "end"], "description": f"`{kind}`: a row; `end`: the stream ends (data: reason `session`, `lifetime` or `unavailable`)"},
            "data": {"type": "string", "contentMediaType": "application/json", "description": f"JSON: the {kind} as the list shows it, or the end's reason and message"},
            "id": {"type": "string", "description": "the position to resume from (Last-Event-ID), on the last message of a batch"},
        },
        "example": {"id": "42", "event": kind, "data": json.dumps(example, separators=(",", ":"))},
    }
    # 429 STREAM_LIMIT: the user's streams are all open; 503 when Redis cannot count them.
    return {200: {"content": {"text/event-stream": {"schema": one_event}}, "description": "server-sent events until the session or the stream's lifetime ends"}, **declare(429, 503)}


_AFTER = Query(
    None,
    max_length=_POSITION_MAX,
    description="resume after this position (an id, or the `id:` of a message); the Last-Event-ID header wins when both are sent",
)


def sse(kind: str, data: Any, event_id: str | None = None) -> str:
    """One server-sent event; JSON data is one line."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def start_cursor(request: Request, after_id: str | None, settings: Any) -> Cursor | None:
    """The position the caller resumes from (Last-Event-ID, else ?after_id=), None for none;
    422 INVALID_ID for an id not written canonically, INVALID_POSITION for another shape."""
    header = request.headers.get("last-event-id") or None  # empty: the client has no id yet (EventSource)
    field = "Last-Event-ID" if header is not None else "after_id"
    text = header if header is not None else after_id
    if text is None:
        return None
    try:
        if len(text) > _POSITION_MAX:
            raise BadPosition("too long")
        return parse_position(text, time.monotonic(), settings.feed_max_gaps, lambda part: parse_object_id(part, field))
    except BadPosition as exc:
        raise Invalid(f"not a stream position: {exc}", code="INVALID_POSITION", details={"field": field}) from None


class _Stream:
    """One open stream: its feed, the caller's token, the model and how rows are written."""

    def __init__(self, runtime: Any, token: str, feed: Any, model: Any, kind: str, schema: Any):
        self.runtime, self.token, self.feed, self.model, self.kind, self.schema = runtime, token, feed, model, kind, schema

    def _messages(self, rows: list[Any]) -> list[str]:
        last = len(rows) - 1
        at = position(self.feed.cursor)
        return [sse(self.kind, self.schema.model_validate(row).model_dump(mode="json"), at if i == last else None) for i, row in enumerate(rows)]

    def _visible(self, session: Any) -> Any:
        user = auth.authenticate(session, self.token, self.runtime.settings)
        return authz.event_visibility_clause(session, user, self.model, token=self.token)

    def open(self, snapshot: bool) -> list[str]:
        """Before the status line: the first messages (the task stream's unfinished tasks)."""
        with self.runtime.transaction() as session:
            restrict = self._visible(session)
            if isinstance(self.feed, feeds.TaskFeed):
                running = self.feed.follow_running(session, restrict)
                return self._messages(running) if snapshot else []
            return []

    def poll(self) -> tuple[list[str], bool] | None:
        """The next messages and whether to poll again at once; None when the session ended."""
        with self.runtime.transaction() as session:
            try:
                restrict = self._visible(session)
            except Unauthorized:
                return None
            rows, full = self.feed.poll(session, restrict, time.monotonic())
            return self._messages(rows), full


async def _respond(request: Request, user: CurrentUserInfo, after_id: str | None, model: Any, kind: str, schema: Any, make_feed: Callable[[Cursor, Any], Any]) -> StreamingResponse:
    runtime = request.app.state.runtime
    settings = runtime.settings
    resumed = start_cursor(request, after_id, settings)
    token = user.token or ""  # a user's stream: requires() authenticated a token

    def opening() -> tuple[_Stream, list[str]]:
        with runtime.transaction() as session:
            cursor = resumed or Cursor(last=feeds.latest_id(session, model))
        stream = _Stream(runtime, token, make_feed(cursor, settings), model, kind, schema)
        return stream, stream.open(snapshot=resumed is None)

    stream, first = await run_in_threadpool(opening)
    slot = StreamSlot(runtime.redis, user.id, settings.feed_stream_slot_ttl)
    await run_in_threadpool(slot.take, settings.feed_streams_per_user)

    async def body() -> AsyncIterator[str]:
        try:
            yield f"retry: {int(settings.feed_poll_period * 2000)}\n\n"
            for message in first:
                yield message
            started = quiet_since = time.monotonic()
            while not await request.is_disconnected():
                try:
                    polled = await run_in_threadpool(stream.poll)
                    await run_in_threadpool(slot.renew)
                except Exception:  # after the status line an error can only end the stream: say so, the client reconnects
                    log.exception("feed stream of user %s: a poll failed", user.id)
                    yield sse("end", {"reason": "unavailable", "message": "the server cannot read the feed now: reconnect with Last-Event-ID"})
                    return
                if polled is None:
                    yield sse("end", {"reason": "session", "message": "the session ended: log in again"})
                    return
                messages, full = polled
                now = time.monotonic()
                if messages:
                    yield "".join(messages)
                    quiet_since = now
                elif now - quiet_since >= settings.feed_keepalive_period:
                    yield ": keep-alive\n\n"
                    quiet_since = now
                if now - started >= settings.feed_stream_max_lifetime:
                    yield sse("end", {"reason": "lifetime", "message": "reconnect with Last-Event-ID"})
                    return
                if not full:
                    await asyncio.sleep(settings.feed_poll_period)
        finally:
            slot.release()

    return StreamingResponse(body(), media_type="text/event-stream", headers=_HEADERS)


def _event_feed(cursor: Cursor, settings: Any) -> feeds.EventFeed:
    return feeds.EventFeed(cursor, grace=settings.feed_gap_grace, max_gaps=settings.feed_max_gaps, batch=settings.feed_batch)


def _task_feed(cursor: Cursor, settings: Any) -> feeds.TaskFeed:
    return feeds.TaskFeed(cursor, grace=settings.feed_gap_grace, max_gaps=settings.feed_max_gaps, batch=settings.feed_batch, max_tracked=settings.feed_tracked_tasks)


@router.get(
    "/events/stream",
    response_class=StreamingResponse,
    responses=_stream_responses("event", {"id": 42, "kind": "task.success", "object_type": "vm", "object_id": 7, "message": "task vm.powerOn on vm 7 succeeded", "task_id": 12}),
    tags=["events"],
    summary="Follow events live (server-sent events), resumable with Last-Event-ID",
)
async def stream_events(request: Request, user: Annotated[CurrentUserInfo, requires("System.View", deferred=True)], after_id: str | None = _AFTER) -> StreamingResponse:
    return await _respond(request, user, after_id, tasks.EVENT_MODEL, "event", s.EventRead, _event_feed)


@router.get(
    "/tasks/stream",
    response_class=StreamingResponse,
    responses=_stream_responses("task", {"id": 42, "kind": "vm.powerOn", "state": "running", "step": "running", "progress": 50, "object_type": "vm", "object_id": 7}),
    tags=["tasks"],
    summary="Follow tasks live (server-sent events): each task when created and when its state, step or progress changes",
)
async def stream_tasks(request: Request, user: Annotated[CurrentUserInfo, requires("System.View", deferred=True)], after_id: str | None = _AFTER) -> StreamingResponse:
    return await _respond(request, user, after_id, tasks.TASK_MODEL, "task", s.TaskRead, _task_feed)
