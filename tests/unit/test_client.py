"""The API client (vcenter.client) without a server: error documents of either shape, paging,
a task followed to its end, server-sent events, inventory paths over a fake API (httpx's
MockTransport), and the contexts file (0600 in a 0700 directory, refused when others may read
it, the current context and VCENTER_CONTEXT)."""

from __future__ import annotations

import json
import os
import stat
from typing import Any

import httpx
import pytest

from vcenter.client import config
from vcenter.client.api import ApiError, Client, ClientError, parse_sse
from vcenter.client.paths import Inventory, PathError, split


def test_errors_are_read_from_either_shape():
    plain = ApiError.from_body(409, {"code": "HOST_HAS_VMS", "message": "host h1 has 2 VMs", "details": {"vms": [1, 2]}})
    assert (plain.status, plain.code, plain.message, plain.details) == (409, "HOST_HAS_VMS", "host h1 has 2 VMs", {"vms": [1, 2]})
    problem = ApiError.from_body(409, {"type": "about:blank", "title": "Conflict", "status": 409, "detail": "host h1 has 2 VMs", "code": "HOST_HAS_VMS", "vms": [1, 2]})
    assert (problem.code, problem.message, problem.details) == ("HOST_HAS_VMS", "host h1 has 2 VMs", {"vms": [1, 2]})
    assert ApiError.from_body(502, None, "<html>Bad gateway</html>").code == "HTTP_502"
    assert ApiError.from_body(422, {"detail": [{"loc": ["body"], "msg": "bad"}]}).code == "HTTP_422"


def test_server_sent_events_are_parsed():
    lines = [": keep-alive", "event: task", 'data: {"id": 1,', 'data: "state": "running"}', "", "id: 7", "event: task", 'data: {"id": 2}', "", "event: end", 'data: {"reason": "lifetime"}', ""]
    messages = list(parse_sse(lines))
    assert [(m.event, m.id) for m in messages] == [("task", None), ("task", "7"), ("end", "7")]
    assert messages[0].json() == {"id": 1, "state": "running"} and messages[2].json()["reason"] == "lifetime"


def fake_api(data: dict[str, list[dict[str, Any]]], tasks: list[dict[str, Any]] | None = None, seen: list[httpx.Request] | None = None) -> Client:
    """A Client on an in-memory API: lists filtered by equality (name exact; '*' not used
    here), paged; GET /tasks/{id} answers the next of ``tasks``."""
    answers = iter(tasks or [])

    def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        if request.headers.get("authorization") != "Bearer t0k":
            return httpx.Response(401, json={"code": "NOT_AUTHENTICATED", "message": "log in"})
        parts = request.url.path.removeprefix("/api/v1/").split("/")
        if parts[0] == "tasks":
            return httpx.Response(200, json=next(answers))
        rows = data.get(parts[0], [])
        if len(parts) == 2:
            found = [r for r in rows if str(r["id"]) == parts[1]]
            return httpx.Response(200, json=found[0]) if found else httpx.Response(404, json={"code": "NOT_FOUND", "message": "no such object"})
        params = dict(request.url.params)
        offset, limit = int(params.pop("offset", 0)), int(params.pop("limit", 50))
        params.pop("sort", None)
        matching = [r for r in rows if all(str(r.get(k)) == v for k, v in params.items())]
        return httpx.Response(200, json={"total": len(matching), "offset": offset, "limit": limit, "items": matching[offset : offset + min(limit, 2)]})

    return Client("http://vc.test", "t0k", http=httpx.Client(base_url="http://vc.test", transport=httpx.MockTransport(handle)))


INVENTORY = {
    "datacenters": [{"id": 1, "name": "dc1"}, {"id": 2, "name": "dc2"}],
    "folders": [{"id": 5, "name": "prod", "datacenter_id": 1, "parent_id": None, "kind": "vm"}, {"id": 6, "name": "db", "datacenter_id": 1, "parent_id": 5, "kind": "vm"}],
    "vms": [
        {"id": 10, "name": "web1", "datacenter_id": 1, "folder_id": None, "power_state": "poweredOn"},
        {"id": 11, "name": "pg1", "datacenter_id": 1, "folder_id": 6, "power_state": "poweredOff"},
        {"id": 12, "name": "web1", "datacenter_id": 2, "folder_id": None, "power_state": "poweredOff"},
    ],
    "clusters": [{"id": 3, "name": "cl1", "datacenter_id": 1, "settings": {}}],
    "hosts": [{"id": 20, "name": "h1", "datacenter_id": 1, "cluster_id": 3}, {"id": 21, "name": "h2", "datacenter_id": 1, "cluster_id": None}],
    "datastores": [],
    "portgroups": [],
    "switches": [],
}


def test_lists_are_paged_to_the_end():
    seen: list[httpx.Request] = []
    client = fake_api({"vms": [{"id": i, "name": f"v{i}"} for i in range(5)]}, seen=seen)
    assert [v["id"] for v in client.list_all("vms")] == [0, 1, 2, 3, 4]
    assert [r.url.params["offset"] for r in seen] == ["0", "2", "4"]
    assert [v["id"] for v in client.list_all("vms", max_items=3)] == [0, 1, 2]


def test_a_refusal_raises_with_its_code_and_no_server_is_a_client_error():
    with pytest.raises(ApiError) as refused:
        Client("http://vc.test", "wrong", http=fake_api({})._http).get("vms")
    assert refused.value.code == "NOT_AUTHENTICATED" and refused.value.status == 401
    with pytest.raises(ClientError) as unreachable:
        Client("http://127.0.0.1:9", "t0k", timeout=2).get("vms")
    assert not isinstance(unreachable.value, ApiError) and "cannot reach" in str(unreachable.value)


def test_a_task_is_followed_to_its_end_with_each_change():
    states = [("running", 10), ("running", 10), ("running", 60), ("success", 100)]
    docs = [{"id": 4, "kind": "vm.powerOn", "state": s, "step": "", "progress": p, "object_type": "vm", "object_id": 1} for s, p in states]
    seen: list[httpx.Request] = []
    client = fake_api({}, tasks=docs[1:], seen=seen)
    updates = []
    from vcenter.client.models import Task

    final = client.wait_task(Task.from_json(docs[0]), on_update=lambda t: updates.append((t.state, t.progress)), poll=0.5)
    assert final.succeeded and updates == [("running", 10), ("running", 60), ("success", 100)]
    assert all(r.url.params["wait"] == "0.5" for r in seen)


def test_paths_resolve_over_the_api():
    inventory = Inventory(fake_api(INVENTORY))
    assert [i.path for i in inventory.children(inventory.resolve("/"))] == ["/dc1", "/dc2"]
    assert [(i.path, i.kind) for i in inventory.children(inventory.resolve("/dc1/vm"))] == [("/dc1/vm/prod", "folder"), ("/dc1/vm/web1", "vm")]
    assert inventory.resolve("/dc1/vm/prod/db/pg1").id == 11
    assert [(i.path, i.id) for i in inventory.children(inventory.resolve("/dc1/host"))] == [("/dc1/host/cl1", 3), ("/dc1/host/h2", 21)]
    assert inventory.resolve("/dc1/host/cl1/h1").id == 20
    assert sorted(i.path for i in inventory.find("/", ["vm"], "web*")) == ["/dc1/vm/web1", "/dc2/vm/web1"]
    assert inventory.object("11", "vm").path == "/dc1/vm/prod/db/pg1"
    assert inventory.object("h1", "host").path == "/dc1/host/cl1/h1"
    for ref, code in (("/dc1/vm/nope", "PATH_NOT_FOUND"), ("/dc1/things", "PATH_NOT_FOUND"), ("web1", "AMBIGUOUS_NAME"), ("/dc1/host/cl1", "WRONG_KIND"), ("/dc1/../dc2", "INVALID_PATH")):
        with pytest.raises(PathError) as refused:
            inventory.object(ref, "vm")
        assert refused.value.code == code, ref
    assert split("dc1//vm/./web1") == ["dc1", "vm", "web1"]


def test_contexts_are_kept_0600_in_a_0700_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("VCENTER_CONTEXT", raising=False)
    assert config.config_dir() == tmp_path / "xdg" / "virtcenter"
    assert config.config_dir({"HOME": "/home/op"}) == config.Path("/home/op/.config/virtcenter")
    stored = config.Config(current="a", contexts={"a": config.Context(server="https://a:8080", username="op", token="s1"), "b": config.Context(server="https://b", token="vct_x", auth="token")})
    umask = os.umask(0o022)  # a usual umask would leave the file readable by all
    try:
        file = config.save(stored)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(file.stat().st_mode) == 0o600 and stat.S_IMODE(file.parent.stat().st_mode) == 0o700
    assert [p.name for p in file.parent.iterdir()] == ["config.json"]  # no temporary file left
    loaded = config.load()
    assert loaded.context() == ("a", stored.contexts["a"]) and loaded.context("b")[1].auth == "token"
    monkeypatch.setenv("VCENTER_CONTEXT", "b")
    assert loaded.context()[0] == "b"
    with pytest.raises(ClientError, match="no context 'c'"):
        loaded.context("c")
    file.chmod(0o644)
    with pytest.raises(ClientError, match="readable by others"):
        config.load()
    assert config.default_name("https://vc.example:8443/") == "vc.example:8443"
    assert json.loads(file.read_text())["contexts"]["a"]["token"] == "s1"


def test_no_context_means_not_logged_in(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("VCENTER_CONTEXT", raising=False)
    with pytest.raises(ClientError, match="not logged in"):
        config.load().context()


def test_a_feed_resumes_after_its_lifetime_and_ends_with_the_session(capsys):
    from vcenter.client_cli.commands import _follow

    streams = iter(
        [
            'id: 5\nevent: task\ndata: {"id": 5}\n\nevent: end\ndata: {"reason": "lifetime"}\n\n',
            'id: 6\nevent: task\ndata: {"id": 6}\n\nevent: end\ndata: {"reason": "session", "message": "session expired"}\n\n',
        ]
    )
    asked: list[str | None] = []

    def handle(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.params.get("after_id"))
        return httpx.Response(200, text=next(streams), headers={"content-type": "text/event-stream"})

    client = Client("http://vc.test", "t0k", http=httpx.Client(base_url="http://vc.test", transport=httpx.MockTransport(handle)))
    import typer

    with pytest.raises(typer.Exit) as ended:
        _follow(client, "tasks", True, None, lambda d: (d["id"],))
    assert ended.value.exit_code == 1 and asked == [None, "5"]
    out = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in out[:2]] == [{"id": 5}, {"id": 6}] and json.loads("\n".join(out[2:]))["error"]["code"] == "STREAM_ENDED_SESSION"
