"""The live panel: recent tasks and events pushed to the browser as server-sent events.

Every ``ui_poll_period`` the stream reads the recent tasks and the events after the last one
sent; it sends ``event: tasks`` (the whole recent-tasks table, as HTML) when any listed task
moved, and ``event: events`` (new event rows, as HTML) when there are new events. The browser
swaps them in (static/app.js): no reload. The stream ends when the login session does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from vcenter.core.errors import Unauthorized
from vcenter.core.object_ids import ObjectIdQuery
from vcenter.dashboard.web import UiUser, panel_filter, templates, ui_requires
from vcenter.services.access import auth
from vcenter.services.monitoring import overview

router = APIRouter(prefix="/ui", include_in_schema=False)


def sse(event: str, html: str) -> str:
    lines = html.strip().splitlines() or [""]
    return f"event: {event}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"


def _poll(runtime: Any, user: UiUser, after_event: int) -> tuple[tuple, str, list[Any], str] | None:
    with runtime.transaction() as session:
        try:
            auth.authenticate(session, user.token, runtime.settings)
        except Unauthorized:
            return None
        where = panel_filter(session, runtime.settings, user)
        tasks = overview.recent_tasks(session, where=where(overview.TASK_MODEL))
        events = overview.recent_events(session, 50, after_id=after_event, where=where(overview.EVENT_MODEL))
        tasks_html = templates.get_template("_tasks.html").render(tasks=tasks)
        events_html = templates.get_template("_events.html").render(events=list(reversed(events)), rows_only=True) if events else ""
        return overview.task_fingerprint(tasks), tasks_html, [e.id for e in events], events_html


@router.get("/live")
async def live(request: Request, user: Annotated[UiUser, ui_requires("System.View", anywhere=True)], after: ObjectIdQuery = 0) -> StreamingResponse:
    runtime = request.app.state.runtime
    period = max(0.05, runtime.settings.ui_poll_period)

    async def stream() -> AsyncIterator[str]:
        last_fp: tuple | None = None
        last_event = after
        idle = 0.0
        yield f"retry: {int(period * 2000)}\n\n"
        while not await request.is_disconnected():
            polled = await run_in_threadpool(_poll, runtime, user, last_event)
            if polled is None:
                yield sse("logout", "session ended")
                return
            fp, tasks_html, event_ids, events_html = polled
            if fp != last_fp:
                last_fp = fp
                yield sse("tasks", tasks_html)
                idle = 0.0
            if event_ids:
                last_event = max(last_event, *event_ids)
                yield sse("events", events_html)
                idle = 0.0
            idle += period
            if idle >= 15:  # a comment keeps proxies from closing an idle stream
                yield ": keep-alive\n\n"
                idle = 0.0
            await asyncio.sleep(period)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
