"""Event and task feeds (issue 18 item 3) on SQLite and PostgreSQL: lists read from a point
(?after_id=, ?since= with a time zone), the live streams (server-sent events) read as a client
reads them, the task long poll (?wait=) and the per-user stream cap.

The streams and the long poll are served by uvicorn in a thread (in-process, the app of the
test's settings): a TestClient buffers a whole response, and a stream never ends by itself.
Timers are compressed (FEEDS): a poll every 50 ms, a keep-alive comment every 300 ms. A
keep-alive is how a test knows a stream has sent everything it had: it is only written after
a poll that found nothing."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from tests.apihelpers import app_for, finish_as_agent, login, make_admin, register_host, wait_for

FEEDS = {
    "feed_poll_period": 0.05,
    "feed_keepalive_period": 0.3,
    "feed_gap_grace": 2.0,
    "feed_stream_max_lifetime": 30.0,
    "feed_streams_per_user": 2,
    "task_wait_max": 5.0,
}
WAIT_BOUND = 5.0


@pytest.fixture
def feed_settings(settings):
    settings = settings.model_copy(update=FEEDS)
    make_admin(settings)
    return settings


@contextmanager
def served(settings) -> Iterator[httpx.Client]:
    """An API replica: the app under a real HTTP server on a free loopback port, and a client of it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = app_for(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, what="uvicorn started")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=15) as client:
            client.vc_runtime = app.state.runtime  # type: ignore[attr-defined]  # a test may change the server's settings
            yield client
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture
def api(feed_settings) -> Iterator[httpx.Client]:
    with served(feed_settings) as client:
        yield client


def _id(response: httpx.Response) -> int:
    assert response.status_code in (200, 201, 202), response.text
    return response.json()["id"]


@pytest.fixture
def world(api, feed_settings) -> dict[str, Any]:
    """A host with two VMs; user ``vmuser`` may see vm1 only (Read-only on it)."""
    admin = login(api)
    dc = _id(api.post("/api/v1/datacenters", headers=admin, json={"name": "dc1"}))
    host, agent = register_host(api, admin, dc, "h1")
    state = {"facts": {"hostname": "h1", "cpu_model": "Skylake", "cpu_cores": 4, "cpu_mhz": 2000, "memory_mib": 8192, "hypervisor": "qemu"}, "domains": []}
    assert api.post(f"/api/v1/agent/hosts/{host['id']}/state", json=state, headers=agent).status_code == 200
    vms = {}
    for name in ("vm1", "vm2"):
        task = api.post("/api/v1/vms", headers=admin, json={"name": name, "host_id": host["id"], "memory_mib": 64})
        assert task.status_code == 202, task.text
        vms[name] = finish_as_agent(api, feed_settings, agent, task.json())["id"]
    user_id = _id(api.post("/api/v1/users", headers=admin, json={"username": "vmuser", "password": "vmuser-password"}))
    read_only = next(r["id"] for r in api.get("/api/v1/roles", headers=admin).json() if r["name"] == "Read-only")
    grant = {"principal_type": "user", "principal_id": user_id, "role_id": read_only, "object_type": "vm", "object_id": vms["vm1"]}
    assert api.post("/api/v1/permissions", headers=admin, json=grant).status_code == 201
    return {"admin": admin, "agent": agent, "vms": vms, "user": login(api, "vmuser", "vmuser-password"), "settings": feed_settings}


def _power(api, world, vm: str, action: str = "on") -> dict:
    r = api.post(f"/api/v1/vms/{world['vms'][vm]}/power/{action}", headers=world["admin"])
    assert r.status_code == 202, r.text
    return r.json()


def _finish(api, world, task: dict, power_state: str) -> None:
    finish_as_agent(api, world["settings"], world["agent"], task, power_state=power_state)


# --- a client reading server-sent events --------------------------------------------------


class Reader:
    """Parses a text/event-stream response: messages as dicts (event, id, data), comments as
    {"comment": text}; ``until`` reads until a message matches or the deadline passes."""

    def __init__(self, response: httpx.Response):
        self.response = response
        self.lines = response.iter_lines()
        self.messages: list[dict[str, Any]] = []
        self.last_id: str | None = None
        self.ended = False

    def _next(self) -> dict[str, Any] | None:
        message: dict[str, Any] = {}
        for line in self.lines:
            if line == "":
                if message:
                    return message
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "":
                return {"comment": value}
            if field == "data":
                message["data"] = json.loads(value)
            elif field in ("event", "id", "retry"):
                message[field] = value
        self.ended = True
        return None

    def until(self, predicate, timeout: float = 10.0, what: str = "message") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self._next()
            if message is None:
                raise AssertionError(f"stream ended before {what}; read {self.messages}")
            if "id" in message:
                self.last_id = message["id"]
            if "data" in message:
                self.messages.append(message)
            if predicate(message):
                return message
        raise AssertionError(f"no {what} within {timeout} s; read {self.messages}")

    def quiet(self) -> None:
        """Until a keep-alive: every row committed before this call has been sent."""
        self.until(lambda m: "comment" in m and "keep-alive" in m["comment"], what="keep-alive")

    def of(self, event: str) -> list[dict[str, Any]]:
        return [m["data"] for m in self.messages if m.get("event") == event]


@contextmanager
def stream(api: httpx.Client, path: str, headers: dict[str, str], **extra: Any) -> Iterator[Reader]:
    with api.stream("GET", path, headers={**headers, **extra.pop("add_headers", {})}, params=extra or None) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Reader(response)


def _task_is(task_id: int, state: str):
    return lambda m: m.get("event") == "task" and m["data"]["id"] == task_id and m["data"]["state"] == state


# --- reading from a point -------------------------------------------------------------------


@pytest.fixture
def client(feed_settings):
    with TestClient(app_for(feed_settings)) as c:
        yield c


def test_lists_read_from_a_point_in_ascending_order_with_the_same_paging_and_filter(client):
    admin = login(client)
    before = client.get("/api/v1/events", headers=admin, params={"limit": 1}).json()["items"]
    mark = before[0]["id"] if before else 0
    start = datetime.now(timezone.utc)
    for n in range(5):
        _id(client.post("/api/v1/datacenters", headers=admin, json={"name": f"dc{n}"}))
    page = client.get("/api/v1/events", headers=admin, params={"after_id": mark}).json()
    ids = [e["id"] for e in page["items"]]
    assert ids == sorted(ids) and ids and min(ids) > mark and page["total"] == len(ids)
    assert [e["kind"] for e in page["items"]].count("datacenter.created") == 5
    # paging from the point, and the list's own filters still apply
    first = client.get("/api/v1/events", headers=admin, params={"after_id": mark, "limit": 2}).json()
    second = client.get("/api/v1/events", headers=admin, params={"after_id": first["items"][-1]["id"], "limit": 2}).json()
    assert [e["id"] for e in first["items"] + second["items"]] == ids[:4]
    created = client.get("/api/v1/events", headers=admin, params={"after_id": mark, "kind": "datacenter.created"}).json()
    assert created["total"] == 5
    # an explicit sort still wins
    assert [e["id"] for e in client.get("/api/v1/events", headers=admin, params={"after_id": mark, "sort": "-id"}).json()["items"]] == ids[::-1]
    # since: an instant with its zone, any zone
    since = client.get("/api/v1/events", headers=admin, params={"since": start.isoformat()}).json()["items"]
    assert [e["id"] for e in since] == ids
    later = start.astimezone(timezone.utc).replace(year=start.year + 1).isoformat().replace("+00:00", "+02:00")
    assert client.get("/api/v1/events", headers=admin, params={"since": later}).json()["total"] == 0
    # tasks too
    tasks = client.get("/api/v1/tasks", headers=admin, params={"after_id": 0}).json()
    assert [t["id"] for t in tasks["items"]] == sorted(t["id"] for t in tasks["items"])
    assert client.get("/api/v1/tasks", headers=admin, params={"since": start.isoformat()}).status_code == 200


BAD_POINTS = [
    ({"since": "2026-01-01T00:00:00"}, "INVALID"),  # no time zone: a guess could leave rows out
    ({"since": "2026-01-01 00:00"}, "INVALID"),
    ({"since": "yesterday"}, "INVALID"),
    ({"since": "0001-01-01T00:00:00+01:00"}, "INVALID"),  # out of range once in UTC
    ({"after_id": "-1"}, "INVALID_ID"),  # the one id parser's refusals
    ({"after_id": "+5"}, "INVALID_ID"),
    ({"after_id": "99999999999999999999"}, "INVALID_ID"),
    ({"after_id": "x"}, "INVALID_ID"),
    ({"after_id": "5", "limit": "501"}, "INVALID"),  # the same paging bounds
]


def test_a_bad_point_is_a_422_with_a_stable_code(client):
    admin = login(client)
    for params, code in BAD_POINTS:
        for path in ("/api/v1/events", "/api/v1/tasks"):
            r = client.get(path, headers=admin, params=params)
            assert r.status_code == 422 and r.json()["code"] == code, (path, params, r.status_code, r.text)


# --- the streams --------------------------------------------------------------------------------


def test_the_task_stream_follows_a_task_resumes_without_duplicates_hides_other_objects_and_ends_at_logout(api, world):
    user = world["user"]
    with stream(api, "/api/v1/tasks/stream", user) as s1:
        t1 = _power(api, world, "vm1")  # visible to the user
        t2 = _power(api, world, "vm2")  # not
        s1.until(_task_is(t1["id"], "queued"), what="task created")
        _finish(api, world, t1, "poweredOn")
        s1.until(_task_is(t1["id"], "success"), what="task finished")
        s1.quiet()
        resume_at = s1.last_id
    first = s1.of("task")
    assert {t["id"] for t in first} == {t1["id"]}, first  # never vm2's task
    assert [t["state"] for t in first] == ["queued", "success"]
    assert resume_at is not None and resume_at.split(":")[0] == str(max(t1["id"], t2["id"]))

    t3 = _power(api, world, "vm1", "off")  # while no stream was open
    with stream(api, "/api/v1/tasks/stream", user, add_headers={"Last-Event-ID": resume_at}) as s2:
        s2.until(_task_is(t3["id"], "queued"), what="the task created while disconnected")
        s2.quiet()
        assert [t["id"] for t in s2.of("task")] == [t3["id"]]  # nothing of the first stream again
        assert api.delete("/api/v1/session", headers=user).status_code == 204
        end = s2.until(lambda m: m.get("event") == "end", what="the end of the session")
        assert end["data"]["reason"] == "session"
        assert s2._next() is None and s2.ended  # the server closed the stream


def test_the_task_stream_first_sends_the_unfinished_tasks_and_ends_when_the_session_expires(api, world):
    from sqlalchemy import update

    from vcenter.core.clock import utcnow
    from vcenter.db.models import LoginSession
    from vcenter.db.session import session_scope
    from vcenter.services.access.auth import token_hash

    running = _power(api, world, "vm1")  # before the stream: sent first, as it is
    hidden = _power(api, world, "vm2")
    user = world["user"]
    with stream(api, "/api/v1/tasks/stream", user) as s:
        first = s.until(lambda m: m.get("event") == "task", what="the unfinished task")
        assert first["data"]["id"] == running["id"] and first["data"]["state"] == "queued"
        s.quiet()
        assert [t["id"] for t in s.of("task")] == [running["id"]] and hidden["id"] not in {t["id"] for t in s.of("task")}
        # the session's absolute lifetime ends (as if hours passed): the next poll ends the stream
        with session_scope(world["settings"].database_url) as session:
            token = user["Authorization"].split()[1]
            session.execute(update(LoginSession).where(LoginSession.token_hash == token_hash(token)).values(expires_at=utcnow()))
        end = s.until(lambda m: m.get("event") == "end", what="the end of the expired session")
        assert end["data"]["reason"] == "session" and s._next() is None
    assert api.get("/api/v1/tasks", headers=user).status_code == 401


def test_the_event_stream_sends_each_visible_event_once_and_resumes_with_after_id(api, world):
    user = world["user"]
    with stream(api, "/api/v1/events/stream", user) as s1:
        t2 = _power(api, world, "vm2")
        _finish(api, world, t2, "poweredOn")  # vm2's events first: hidden
        t1 = _power(api, world, "vm1")
        _finish(api, world, t1, "poweredOn")
        s1.until(lambda m: m.get("event") == "event" and m["data"]["kind"] == "task.success" and m["data"]["task_id"] == t1["id"], what="vm1's task.success")
        s1.quiet()
        resume_at = s1.last_id
    seen = s1.of("event")
    assert seen and {e["object_id"] for e in seen} == {world["vms"]["vm1"]}, seen
    assert len({e["id"] for e in seen}) == len(seen)
    # the list answers the same rows from the same point
    listed = api.get("/api/v1/events", headers=user, params={"after_id": seen[0]["id"] - 1}).json()["items"]
    assert [e["id"] for e in listed] == [e["id"] for e in seen]

    t3 = _power(api, world, "vm1", "off")
    _finish(api, world, t3, "poweredOff")
    with stream(api, "/api/v1/events/stream", user, after_id=resume_at) as s2:
        s2.until(lambda m: m.get("event") == "event" and m["data"]["task_id"] == t3["id"], what="the event of the task finished while disconnected")
        s2.quiet()
    again = s2.of("event")
    assert not {e["id"] for e in again} & {e["id"] for e in seen}
    assert {e["object_id"] for e in again} == {world["vms"]["vm1"]}


def test_a_permission_removed_stops_the_rows_at_the_next_poll(api, world):
    admin, user = world["admin"], world["user"]
    with stream(api, "/api/v1/events/stream", user) as s:
        t1 = _power(api, world, "vm1")
        _finish(api, world, t1, "poweredOn")
        s.until(lambda m: m.get("event") == "event" and m["data"]["task_id"] == t1["id"], what="vm1's event")
        for permission in api.get("/api/v1/permissions", headers=admin).json():
            if permission["object_type"] == "vm":
                assert api.delete(f"/api/v1/permissions/{permission['id']}", headers=admin).status_code == 204
        s.quiet()
        t2 = _power(api, world, "vm1", "off")
        _finish(api, world, t2, "poweredOff")
        s.quiet()
        s.quiet()
    assert not [e for e in s.of("event") if e["task_id"] == t2["id"]]


def test_a_bad_resume_position_is_refused_before_the_stream_starts(api, world):
    cases = [
        ({"Last-Event-ID": "-1"}, {}, "INVALID_ID"),  # ids by the one id parser
        ({}, {"after_id": "abc"}, "INVALID_ID"),
        ({"Last-Event-ID": "5:07"}, {}, "INVALID_ID"),
        ({"Last-Event-ID": "5:7"}, {}, "INVALID_POSITION"),  # a shape the server does not write
        ({}, {"after_id": "1:" + ",".join("0" * 200)}, "INVALID_POSITION"),
    ]
    for headers, params, code in cases:
        r = api.get("/api/v1/events/stream", headers={**world["user"], **headers}, params=params)
        assert r.status_code == 422 and r.json()["code"] == code, (headers, params, r.text)
    assert api.get("/api/v1/tasks/stream").status_code == 401


def test_a_user_opens_at_most_the_cap_of_streams_across_feeds_and_replicas(api, world):
    user = world["user"]
    with served(world["settings"]) as other_replica:
        with stream(api, "/api/v1/events/stream", user), stream(other_replica, "/api/v1/tasks/stream", user) as elsewhere:
            for replica in (api, other_replica):
                r = replica.get("/api/v1/tasks/stream", headers=user)
                assert r.status_code == 429 and r.json()["code"] == "STREAM_LIMIT" and r.json()["details"] == {"limit": 2}, r.text
            # another user has slots of its own
            with stream(api, "/api/v1/events/stream", world["admin"]):
                pass
            # the other replica's stream sees a task started through this one
            task = _power(api, world, "vm1")
            elsewhere.until(_task_is(task["id"], "queued"), what="the task on the other replica's stream")

    def reopened() -> bool:  # the slots come back once the servers have seen the streams close
        with api.stream("GET", "/api/v1/tasks/stream", headers=user) as response:
            return response.status_code == 200

    wait_for(reopened, timeout=10, what="a slot freed by a closed stream")


def test_a_dead_replicas_slots_expire(api, world):
    """A replica that dies holding slots (never releasing them) blocks the user only until the
    slots' ttl passes without a renewal."""
    from vcenter.services.tasks.stream_slots import StreamSlot

    runtime = api.vc_runtime
    user_id = next(u["id"] for u in api.get("/api/v1/users", headers=world["admin"]).json() if u["username"] == "vmuser")
    for _ in range(2):
        StreamSlot(runtime.redis, user_id, ttl=3.0).take(cap=2)  # a replica opened two, then died
    r = api.get("/api/v1/events/stream", headers=world["user"])
    assert r.status_code == 429 and r.json()["code"] == "STREAM_LIMIT"

    def admitted() -> bool:
        with api.stream("GET", "/api/v1/events/stream", headers=world["user"]) as response:
            return response.status_code == 200

    wait_for(admitted, timeout=10, what="the dead replica's slots to expire")


def test_a_failing_poll_ends_the_stream_with_a_reason_and_frees_its_slot(api, world, monkeypatch):
    """After the status line an error cannot become a 5xx: the stream says why it ends."""
    from vcenter.api.routers import feeds as feed_routes

    def broken(self):
        raise RuntimeError("database gone")

    monkeypatch.setattr(feed_routes._Stream, "poll", broken)
    for _ in range(3):  # more than the cap: each stream's slot was given back
        with stream(api, "/api/v1/events/stream", world["user"]) as s:
            assert s.until(lambda m: m.get("event") == "end", what="the end")["data"]["reason"] == "unavailable"


def test_without_redis_a_stream_is_refused_with_503_not_500():
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from vcenter.core.errors import Unavailable
    from vcenter.services.tasks.stream_slots import StreamSlot

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # no retries: redis-py's default (10, backing off up to 1 s) only delays the same refusal
    unreachable = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    slot = StreamSlot(unreachable, 1, ttl=5.0)
    with pytest.raises(Unavailable) as refused:
        slot.take(cap=2)
    assert refused.value.status == 503 and refused.value.code == "UNAVAILABLE"
    slot.release()  # and the end of a stream does not fail on it either


def test_a_stream_ends_after_its_lifetime_and_sends_keep_alives_meanwhile(api, world):
    runtime = api.vc_runtime
    runtime.settings = runtime.settings.model_copy(update={"feed_stream_max_lifetime": 1.0})
    started = time.monotonic()
    with stream(api, "/api/v1/events/stream", world["user"]) as s:
        assert s.until(lambda m: "retry" in m, what="the retry hint")["retry"] == "100"
        s.quiet()
        end = s.until(lambda m: m.get("event") == "end", what="the end of the stream's life")
        assert end["data"]["reason"] == "lifetime" and s._next() is None
    assert 1.0 <= time.monotonic() - started < 10


# --- waiting for a task ----------------------------------------------------------------------


def test_wait_answers_when_the_task_ends_and_at_the_bound_when_it_does_not(api, world):
    admin = world["admin"]
    task = _power(api, world, "vm1")
    # At the bound: the task still queued, answered after the wait, not before.
    started = time.monotonic()
    r = api.get(f"/api/v1/tasks/{task['id']}", headers=admin, params={"wait": 0.5})
    assert r.status_code == 200 and r.json()["state"] == "queued" and time.monotonic() - started >= 0.5
    # Early: finished from another thread while the request waits.
    answer: dict[str, Any] = {}
    sent = threading.Event()

    def waiter() -> None:
        sent.set()
        begun = time.monotonic()
        answer["asked_at"] = datetime.now(timezone.utc)
        answer["response"] = api.get(f"/api/v1/tasks/{task['id']}", headers=admin, params={"wait": WAIT_BOUND})
        answer["took"] = time.monotonic() - begun

    thread = threading.Thread(target=waiter)
    thread.start()
    sent.wait(5)
    _finish(api, world, task, "poweredOn")
    thread.join(WAIT_BOUND + 5)
    body = answer["response"].json()
    assert answer["response"].status_code == 200 and body["state"] == "success", body
    assert answer["took"] < WAIT_BOUND, answer["took"]
    # A finished task: at once, whatever the wait.
    started = time.monotonic()
    assert api.get(f"/api/v1/tasks/{task['id']}", headers=admin, params={"wait": WAIT_BOUND}).json()["state"] == "success"
    assert time.monotonic() - started < WAIT_BOUND


def test_wait_is_bounded_validated_and_checks_the_privilege_first(api, world):
    admin, user = world["admin"], world["user"]
    task = _power(api, world, "vm2")
    for wait, code in (("-1", "INVALID"), ("nan", "INVALID"), ("inf", "INVALID"), ("soon", "INVALID"), ("3601", "INVALID"), (str(WAIT_BOUND + 1), "INVALID_WAIT")):
        r = api.get(f"/api/v1/tasks/{task['id']}", headers=admin, params={"wait": wait})
        assert r.status_code == 422 and r.json()["code"] == code, (wait, r.text)
    started = time.monotonic()
    r = api.get(f"/api/v1/tasks/{task['id']}", headers=user, params={"wait": WAIT_BOUND})  # vm2: not the user's to see
    assert r.status_code == 403 and time.monotonic() - started < WAIT_BOUND
    assert api.get("/api/v1/tasks/999999", headers=admin, params={"wait": WAIT_BOUND}).status_code == 404


# --- the cursor against a database: ids committed out of order ---------------------------------


def test_an_event_committed_after_a_higher_id_is_still_streamed(feed_settings):
    """On PostgreSQL two real transactions: the first takes an id and commits after the second
    (the sequence's order is not the commit order). SQLite commits in id order, so there the
    lower id is inserted after the higher one."""
    from vcenter.db.models import Event
    from vcenter.db.session import session_scope
    from vcenter.domain.feed_cursor import Cursor
    from vcenter.services.tasks.feeds import EventFeed, latest_id

    url = feed_settings.database_url
    with session_scope(url) as session:
        feed = EventFeed(Cursor(last=latest_id(session, Event)), grace=5.0, max_gaps=10, batch=100)

    def poll(now: float) -> list[str]:
        with session_scope(url) as session:
            rows, _ = feed.poll(session, None, now)
            return [row.kind for row in rows]

    if url.startswith("postgresql"):
        with session_scope(url) as slow:
            slow.add(Event(kind="slow", message="takes its id first, commits last"))
            slow.flush()
            with session_scope(url) as fast:
                fast.add(Event(kind="fast", message="commits first"))
            assert poll(0.0) == ["fast"] and len(feed.cursor.gaps) == 1
        # (the slow transaction commits here)
    else:
        with session_scope(url) as session:
            top = latest_id(session, Event)
            session.add(Event(id=top + 2, kind="fast", message="commits first"))
        assert poll(0.0) == ["fast"] and feed.cursor.awaited() == [top + 1]
        with session_scope(url) as session:
            session.add(Event(id=top + 1, kind="slow", message="commits last"))
    assert poll(1.0) == ["slow"]
    assert poll(2.0) == [] and feed.cursor.gaps == {}
