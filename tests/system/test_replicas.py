"""Issue 20, item 1: two API replicas behind HAProxy with the repository's configuration
(deploy/haproxy/haproxy.cfg, started by vcenter.lab.replicas as `make run` starts it), on
PostgreSQL and Redis. Whichever replica a request lands on: the session, the dashboard's CSRF,
the event stream and the login limits hold; the limits and the audit see the real client
addresses (clients bound to 127.0.0.2 and 127.0.0.3), never a forged X-Forwarded-For. And beat:
two `vcenter beat` processes schedule as one, the standby taking over when the active one dies.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time

import httpx
import pytest
import redis

from tests.apihelpers import wait_for
from tests.conftest import REDIS_URL, fresh_postgres, redis_db_url
from vcenter.lab import replicas
from vcenter.lab.stack import VCENTER, Stack, free_port

FORGED = "203.0.113.7"


@pytest.fixture(scope="module")
def shape(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("replicas")
    redis_url = redis_db_url(REDIS_URL, 14)
    redis.Redis.from_url(redis_url).flushdb()
    stack = Stack.create(workdir, fresh_postgres(), redis_url, login_source_failures=3, login_lockout_failures=100, reaper_period=1, host_monitor_period=0.5, feed_keepalive_period=1)
    try:
        yield replicas.start(stack, replicas=2, workers=1, beats=1)
    except BaseException:
        print(stack.log_tails())
        raise
    finally:
        stack.stop()


def _token(url: str, stack: Stack, **client: object) -> str:
    with httpx.Client(base_url=url, **client) as api:  # type: ignore[arg-type]
        answer = api.post("/api/v1/session", json={"username": stack.admin[0], "password": stack.admin[1]})
        assert answer.status_code == 201, answer.text
        return answer.json()["token"]


def test_a_session_made_through_the_balancer_works_on_every_replica(shape):
    stack = shape.stack
    auth = {"Authorization": f"Bearer {_token(stack.url, stack)}"}
    for name in shape.api_ports:  # each replica reached directly, bypassing the balancer
        assert httpx.get(shape.replica_url(name) + "/api/v1/datacenters", headers=auth).status_code == 200, name
    with httpx.Client(base_url=stack.url, headers=auth) as api:
        answers = [api.get("/api/v1/datacenters").status_code for _ in range(4)]  # round robin: both replicas
    assert answers == [200] * 4
    # The balancer checks /readyz: both replicas are in service.
    log = (stack.workdir / "haproxy.log").read_text()
    assert "api1" in log and "api2" in log, log[-2000:]


def _dashboard_login(ui: httpx.Client, stack: Stack) -> str:
    """Log in through the dashboard's form (its double-submit login token); the page's CSRF token."""
    form = ui.get("/ui/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    login = ui.post("/ui/login", data={"username": stack.admin[0], "password": stack.admin[1], "csrf": csrf, "next": "/ui"})
    assert login.status_code == 303, login.text
    page = ui.get("/ui")
    assert page.status_code == 200
    return re.search(r'data-csrf="([^"]+)"', page.text).group(1)


def test_the_dashboard_s_csrf_holds_on_both_replicas(shape):
    stack = shape.stack
    with httpx.Client(base_url=stack.url) as ui:
        token = _dashboard_login(ui, stack)
        with stack.client() as api:
            dc = api.post("/api/v1/datacenters", json={"name": "dc-csrf"}).json()
            cluster = api.post("/api/v1/clusters", json={"name": "cl-csrf", "datacenter_id": dc["id"]}).json()
        # Two POSTs in a row: one replica each (round robin); a third without the token is refused.
        for _ in range(2):
            done = ui.post(f"/ui/cluster/{cluster['id']}/drs/run", headers={"X-CSRF-Token": token})
            assert done.status_code == 200, done.text
        refused = ui.post(f"/ui/cluster/{cluster['id']}/drs/run")
        assert refused.status_code == 403 and "CSRF" in refused.text


def test_an_event_stream_receives_events_caused_through_either_replica(shape):
    stack = shape.stack
    auth = {"Authorization": f"Bearer {_token(stack.url, stack)}"}
    seen: list[str] = []
    opened = threading.Event()

    def follow() -> None:
        with httpx.Client(base_url=stack.url, headers=auth, timeout=httpx.Timeout(5, read=30)) as api:
            with api.stream("GET", "/api/v1/events/stream") as stream:
                opened.set()
                for line in stream.iter_lines():
                    if line.startswith("data:"):
                        seen.append(json.loads(line[5:])["message"])
                        if sum("dc-stream-" in m for m in seen) >= 2:
                            return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    assert opened.wait(15)
    time.sleep(0.5)  # the stream's first poll sets its cursor; events after it are what it follows
    for name in shape.api_ports:  # one event made on each replica: one of them is the other one
        assert httpx.post(shape.replica_url(name) + "/api/v1/datacenters", json={"name": f"dc-stream-{name}"}, headers=auth).status_code == 201
    reader.join(30)
    for name in shape.api_ports:
        assert any(f"dc-stream-{name}" in m for m in seen), seen


def test_limits_and_audit_see_the_real_clients_never_a_forged_header(shape):
    stack = shape.stack
    admin = {"Authorization": f"Bearer {_token(stack.url, stack)}"}
    clients = {source: httpx.Client(base_url=stack.url, transport=httpx.HTTPTransport(local_address=source)) for source in ("127.0.0.2", "127.0.0.3")}

    def fail(source: str) -> int:
        # Each client forges the same address: were it believed, both would share one count.
        return clients[source].post("/api/v1/session", json={"username": "nobody", "password": "wrong"}, headers={"X-Forwarded-For": FORGED}).status_code

    try:
        first = [fail("127.0.0.2") for _ in range(4)]  # over both replicas: the count is shared
        other = fail("127.0.0.3")
    finally:
        for c in clients.values():
            c.close()
    assert first == [401, 401, 401, 429], first
    assert other == 401
    events = httpx.get(stack.url + "/api/v1/events", params={"kind": "session.login_failed", "limit": 100}, headers=admin).json()["items"]
    sources = [e["source"] for e in events]
    assert set(sources) == {"127.0.0.2", "127.0.0.3"}, sources
    assert not any(FORGED in json.dumps(e) for e in events)


def _scheduled_by(broker: redis.Redis, task: str) -> list[str]:
    """The sender (Celery's origin: gen<pid>@host) of each queued message of ``task``."""
    senders = []
    for raw in broker.lrange("orchestrator", 0, -1):
        headers = json.loads(raw)["headers"]
        if headers.get("task") == task:
            senders.append(headers.get("origin", "?"))
    return senders


def test_two_beats_schedule_as_one_and_the_standby_takes_over(tmp_path):
    """No worker consumes here: the queue keeps every message beat sent, with its sender."""
    redis_url = redis_db_url(REDIS_URL, 11)
    broker = redis.Redis.from_url(redis_url)
    broker.flushdb()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VCENTER_")},
        "VCENTER_REDIS_URL": redis_url,
        "VCENTER_DATABASE_URL": f"sqlite:///{tmp_path / 'beat.db'}",
        "VCENTER_KEY_DIR": str(tmp_path / "keys"),
        "VCENTER_REAPER_PERIOD": "1",
        "VCENTER_HOST_MONITOR_PERIOD": "1",
        "VCENTER_BEAT_LOCK_TTL": "4",
    }
    beats = [subprocess.Popen([*VCENTER, "beat"], env=env, stdout=open(tmp_path / f"beat{i}.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True) for i in (1, 2)]
    task = "orchestrator.reap_tasks"
    try:
        wait_for(lambda: len(_scheduled_by(broker, task)) >= 8, 60, interval=0.2, what="eight scheduled reaper runs")
        senders = _scheduled_by(broker, task)
        active = {s for s in senders}
        assert len(active) == 1, f"two schedulers: {senders}"
        (origin,) = active
        pid = int(origin.split("@")[0].removeprefix("gen"))
        dead = next(b for b in beats if b.pid == pid)
        standby = next(b for b in beats if b.pid != pid)
        os.killpg(dead.pid, signal.SIGKILL)
        dead.wait(10)
        before = len(senders)
        # The standby takes the lock once it expires (beat_lock_ttl 4 s) and schedules alone.
        wait_for(lambda: sum(s.startswith(f"gen{standby.pid}@") for s in _scheduled_by(broker, task)) >= 3, 60, interval=0.2, what="the standby beat scheduling")
        after = _scheduled_by(broker, task)[before:]
        assert {s.split("@")[0] for s in after} <= {f"gen{pid}", f"gen{standby.pid}"}
        print(f"\nbeat: {before} runs scheduled by {origin} alone while two beats ran; {len(after)} after its SIGKILL, the standby's")
    finally:
        for b in beats:
            if b.poll() is None:
                os.killpg(b.pid, signal.SIGTERM)
                b.wait(10)
        broker.flushdb()


@pytest.fixture(scope="module")
def console_vm(shape) -> int:
    """A running VM on a host whose agent drives the simulated hypervisor."""
    stack = shape.stack
    with stack.client() as api:
        dc = api.post("/api/v1/datacenters", json={"name": "dc-console"}).json()
        host = stack.add_host("esx-console", dc["id"], simulated=True)
        wait_for(lambda: api.get(f"/api/v1/hosts/{host.host_id}").json()["connection_state"] == "connected", 60, what="the host connected")
        # Where the server reaches the agent's console endpoint: this machine.
        # (again when the agent's report changed the row under it: 409 STALE_VERSION)
        wait_for(lambda: api.patch(f"/api/v1/hosts/{host.host_id}", json={"address": "127.0.0.1"}).status_code == 200, 30, what="the host's address set")
        task = api.post("/api/v1/vms", json={"name": "console1", "host_id": host.host_id, "memory_mib": 32}).json()
        wait_for(lambda: api.get(f"/api/v1/tasks/{task['id']}").json()["state"] == "success", 60, what="the VM created")
        on = api.post(f"/api/v1/vms/{task['object_id']}/power/on").json()  # only a running VM has a console
        wait_for(lambda: api.get(f"/api/v1/tasks/{on['id']}").json()["state"] == "success", 60, what="the VM running")
        return task["object_id"]


def _console_close_code(base: str, ticket: str, cookie: str) -> int | None:
    """Open the console websocket with ``ticket``: the close code the server answers with
    (None: the console opened and sent something)."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    with connect(f"ws{base.removeprefix('http')}/ui/console/ws?ticket={ticket}", additional_headers={"Cookie": f"vc_session={cookie}"}, open_timeout=10) as ws:
        try:
            ws.recv(timeout=20)
            return None
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None


def test_a_console_ticket_from_one_replica_opens_once_through_the_balancer(shape, console_vm):
    """The ticket lives in Redis: issued by api1, redeemed over a websocket through HAProxy
    (whichever replica), refused when spent, on api2."""
    stack = shape.stack
    with httpx.Client(base_url=stack.url) as ui:
        token = _dashboard_login(ui, stack)
        cookie = ui.cookies["vc_session"]
    issued = httpx.post(shape.replica_url("api1") + f"/ui/vm/{console_vm}/console/ticket", headers={"X-CSRF-Token": token}, cookies={"vc_session": cookie})
    assert issued.status_code == 200, issued.text
    ticket = issued.json()["ticket"]
    # Redeemed: the console opens, or the host's console cannot be reached (4502); never the
    # refusals of an unknown ticket (4403) or of another user (4401).
    first = _console_close_code(stack.url, ticket, cookie)
    assert first not in (4403, 4401), first
    print(f"\nconsole through the balancer: {'opened' if first is None else f'closed {first}'}")
    assert _console_close_code(shape.replica_url("api2"), ticket, cookie) == 4403


def test_the_balancer_replaces_a_client_s_forwarding_headers(tmp_path):
    """The repository's configuration in front of a server that echoes what it received: the
    client's X-Forwarded-For and Forwarded never pass, the header names the client alone, and
    the request arrives from the balancer's own source address."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Echo(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            seen = {"peer": self.client_address[0], "xff": self.headers.get_all("X-Forwarded-For"), "forwarded": self.headers.get_all("Forwarded"), "proto": self.headers.get("X-Forwarded-Proto")}
            body = json.dumps(seen).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    echo = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    port = free_port()
    servers = tmp_path / "servers.cfg"
    servers.write_text(replicas.server_lines({"echo": echo.server_address[1]}))
    env = {**os.environ, "VCENTER_LB_BIND": f"127.0.0.1:{port}", "VCENTER_LB_SOURCE": replicas.LB_SOURCE}
    # The echo server has no /readyz; with its health check failing HAProxy would answer 503.
    plain = tmp_path / "no-check.cfg"
    plain.write_text(replicas.HAPROXY_CFG.read_text().replace("default-server check ", "default-server "))
    proxy = subprocess.Popen(["haproxy", "-db", "-f", str(plain), "-f", str(servers)], env=env, stdout=open(tmp_path / "haproxy.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", transport=httpx.HTTPTransport(local_address="127.0.0.2")) as client:

            def answer() -> dict | None:
                try:
                    return client.get("/", headers={"X-Forwarded-For": FORGED, "Forwarded": f"for={FORGED}"}).json()
                except (httpx.HTTPError, ValueError):
                    return None

            seen = wait_for(answer, 30, interval=0.2, what="HAProxy forwarding")
    finally:
        os.killpg(proxy.pid, signal.SIGTERM)
        proxy.wait(10)
        echo.shutdown()
    assert seen == {"peer": replicas.LB_SOURCE, "xff": ["127.0.0.2"], "forwarded": None, "proto": "http"}, seen
