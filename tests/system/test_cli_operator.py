"""The operator CLI (`vcenter login/ls/find/vm/host/cluster/tasks/events/context/logout`) run
as a user runs it, a subprocess per command, against a live server (API, worker, beat
processes; two agents over simulated hypervisors): contexts kept 0600 in the config directory,
inventory paths, a power-on followed with a progress bar, a failing VMotion (simulated hosts
cannot migrate), a task followed to its end, the feeds, a refusal that exits 1 naming its code, --json everywhere.
(tests/lab/test_cli_operator.py drives the same commands against real hosts.)"""

from __future__ import annotations

import json
import select
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.apihelpers import wait_for
from tests.clihelpers import cli_env, login, ok, vcenter
from tests.conftest import REDIS_URL, redis_db_url
from vcenter.lab.stack import Stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cli")
    redis_url = redis_db_url(REDIS_URL, 12)
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    s = Stack.create(workdir, None, redis_url, heartbeat_period=0.3, heartbeat_ttl=2, agent_report_period=1, reaper_period=1, host_monitor_period=0.5, agent_reconnect_delay=0.3)
    try:
        s.start_server()
        with s.client() as api:
            dc = api.post("/api/v1/datacenters", json={"name": "dc1"}).json()
            cl = api.post("/api/v1/clusters", json={"name": "cl1", "datacenter_id": dc["id"]}).json()
            for name in ("h1", "h2"):
                host = s.add_host(name, dc["id"], cl["id"], simulated=True)
                wait_for(lambda: api.get(f"/api/v1/hosts/{host.host_id}").json()["connection_state"] == "connected", 60, what=f"host {name} connected")
            task = api.post("/api/v1/vms", json={"name": "web1", "host_id": s.hosts["h1"].host_id, "memory_mib": 32}).json()
            wait_for(lambda: api.get(f"/api/v1/tasks/{task['id']}").json()["state"] == "success", 30, what="web1 created")
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def env(stack, tmp_path_factory):
    """Logged in as the stack's administrator, the password read from standard input."""
    env = cli_env(tmp_path_factory.mktemp("home") / "config")
    login(env, stack.url, stack.admin)
    return env


def test_login_keeps_the_session_in_a_0600_file_per_context(env, stack):
    file = Path(env["XDG_CONFIG_HOME"]) / "virtcenter" / "config.json"
    assert stat.S_IMODE(file.stat().st_mode) == 0o600 and stat.S_IMODE(file.parent.stat().st_mode) == 0o700
    doc = json.loads(file.read_text())
    assert doc["current"] == "lab" and doc["contexts"]["lab"]["server"] == stack.url and doc["contexts"]["lab"]["auth"] == "session"
    listed = json.loads(ok(vcenter(env, "context", "list", "--json")))
    assert listed == [{"name": "lab", "current": True, "server": stack.url, "username": "admin", "auth": "session", "ca_file": None}]
    bad = vcenter(env, "login", stack.url, "--user", "admin", "--password-stdin", "--name", "other", stdin="wrong-password-here\n")
    assert bad.returncode == 1 and "BAD_CREDENTIALS" in bad.stderr
    assert json.loads(file.read_text())["current"] == "lab"  # a refused login changes nothing


def test_ls_and_find_walk_the_inventory_paths(env, stack):
    assert [i["path"] for i in json.loads(ok(vcenter(env, "ls", "--json")))] == ["/dc1"]
    assert [i["path"] for i in json.loads(ok(vcenter(env, "ls", "/dc1", "--json")))] == ["/dc1/vm", "/dc1/host", "/dc1/datastore", "/dc1/network"]
    hosts = json.loads(ok(vcenter(env, "ls", "/dc1/host/cl1", "--json")))
    assert [(i["path"], i["kind"]) for i in hosts] == [("/dc1/host/cl1/h1", "host"), ("/dc1/host/cl1/h2", "host")]
    table = ok(vcenter(env, "ls", "/dc1/vm"))
    assert "/dc1/vm/web1" in table and "poweredOff" in table
    found = json.loads(ok(vcenter(env, "find", "/", "--type", "host", "--name", "h*", "--json")))
    assert sorted(i["path"] for i in found) == ["/dc1/host/cl1/h1", "/dc1/host/cl1/h2"]
    missing = vcenter(env, "ls", "/dc1/vm/nope")
    assert missing.returncode == 1 and "PATH_NOT_FOUND" in missing.stderr


def test_vm_power_on_with_a_progress_bar_and_a_failing_task(env, stack):
    # TTY_COMPATIBLE: rich draws its bar as on a terminal (the output is a pipe here)
    powered = vcenter({**env, "TTY_COMPATIBLE": "1"}, "vm", "power", "/dc1/vm/web1", "on")
    assert ok(powered).startswith("task ") and "vm.powerOn: success" in powered.stdout, powered.stdout
    assert "━" in powered.stderr and "100%" in powered.stderr, powered.stderr
    info = json.loads(ok(vcenter(env, "vm", "info", "web1", "--json")))
    assert info["power_state"] == "poweredOn" and info["path"] == "/dc1/vm/web1" and info["host_id"] == stack.hosts["h1"].host_id
    # Simulated hypervisors cannot migrate (the target answers no libvirt): the task fails,
    # the command exits 1 with the task's error code (the lab test migrates for real).
    failed = vcenter(env, "vm", "migrate", "/dc1/vm/web1", "--host", "/dc1/host/cl1/h2", "--json")
    task = json.loads(failed.stdout)
    assert failed.returncode == 1 and task["kind"] == "vm.migrate" and task["state"] == "error" and task["error_code"], task
    again = vcenter(env, "vm", "migrate", "web1", "--host", "h2")
    assert again.returncode == 1 and f"error: {task['error_code']}:" in again.stderr, again.stderr


def test_a_refusal_exits_1_with_its_code(env, stack):
    refused = vcenter(env, "host", "remove", "/dc1/host/cl1/h1")
    assert refused.returncode == 1 and "error: HOST_HAS_VMS:" in refused.stderr, (refused.stdout, refused.stderr)
    as_json = vcenter(env, "host", "remove", "h1", "--json")
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["error"]["code"] == "HOST_HAS_VMS"


def test_host_maintenance_and_standby(env, stack):
    entered = json.loads(ok(vcenter(env, "host", "maintenance", "/dc1/host/cl1/h2", "enter", "--json")))
    assert entered["state"] == "success" and entered["object_id"] == stack.hosts["h2"].host_id
    assert json.loads(ok(vcenter(env, "host", "info", "h2", "--json")))["maintenance"] is True
    again = vcenter(env, "host", "maintenance", "h2", "enter")
    assert again.returncode == 1 and "error: ALREADY_IN_MAINTENANCE:" in again.stderr, again.stderr
    assert "maintenance False" in ok(vcenter(env, "host", "maintenance", "h2", "exit"))
    assert json.loads(ok(vcenter(env, "host", "standby", "h2", "enter", "--json")))["standby"] is True
    assert json.loads(ok(vcenter(env, "host", "standby", "h2", "exit", "--json")))["standby"] is False
    refused = vcenter(env, "host", "standby", "h1", "enter")  # it runs web1
    assert refused.returncode == 1 and "error: " in refused.stderr, refused.stderr


def test_snapshots_on_a_host_without_them(env):
    # The simulated driver has none (the lab test takes, reverts and deletes real ones): the
    # task fails and the command says why, exit 1.
    assert json.loads(ok(vcenter(env, "vm", "snapshot", "list", "web1", "--json")))["count"] == 0
    failed = vcenter(env, "vm", "snapshot", "create", "/dc1/vm/web1", "s1")
    assert failed.returncode == 1 and "error: UNSUPPORTED:" in failed.stderr, (failed.stdout, failed.stderr)
    missing = vcenter(env, "vm", "snapshot", "revert", "web1", "s1")
    assert missing.returncode == 1 and "SNAPSHOT_NOT_FOUND" in missing.stderr


@pytest.mark.parametrize("args", [("ls", "/dc1/host/cl1"), ("vm", "info", "web1", "--json"), ("vm", "power", "web1", "reset"), ("events", "--limit", "3")])
def test_the_commands_import_nothing_of_the_server_while_they_work(env, args):
    from tests.unit.test_cli_imports import CLIENT_HEAVY, _probe

    assert _probe(*args, env=env, heavy=CLIENT_HEAVY) == {"code": 0, "heavy": []}


def test_follow_a_task_to_its_end_and_the_feeds(env, stack):
    vm = json.loads(ok(vcenter(env, "vm", "info", "web1", "--json")))
    newest = json.loads(ok(vcenter(env, "tasks", "--limit", "1", "--json")))[0]["id"]
    # the feed from the newest task on: whenever it connects, it misses nothing after it
    feed = subprocess.Popen([sys.executable, "-m", "vcenter.cli", "tasks", "--follow", "--json", "--after-id", str(newest)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        queued = json.loads(ok(vcenter(env, "vm", "power", "web1", "off", "--no-wait", "--json")))
        assert queued["state"] in ("queued", "running") and queued["id"] > newest
        done = json.loads(ok(vcenter(env, "tasks", str(queued["id"]), "--follow", "--json")))
        assert done["id"] == queued["id"] and done["state"] == "success"
        seen: list[dict] = []
        deadline = time.monotonic() + 60
        while not any(t["id"] == queued["id"] and t["state"] == "success" for t in seen):
            assert select.select([feed.stdout], [], [], max(0.0, deadline - time.monotonic()))[0], f"the feed showed {seen}"
            line = feed.stdout.readline()
            assert line, (feed.wait(10), feed.stderr.read())  # the feed ended: why
            seen.append(json.loads(line))
        assert all(t["id"] > newest for t in seen)
    finally:
        feed.terminate()
        feed.wait(10)
    listed = json.loads(ok(vcenter(env, "tasks", "--json", "--limit", "5")))
    assert queued["id"] in [t["id"] for t in listed] and len(listed) <= 5
    events = json.loads(ok(vcenter(env, "events", "--json", "--limit", "50")))
    assert any(e["task_id"] == queued["id"] for e in events)
    assert json.loads(ok(vcenter(env, "vm", "info", str(vm["id"]), "--json")))["power_state"] == "poweredOff"


def test_cluster_drs_and_ha(env):
    drs = json.loads(ok(vcenter(env, "cluster", "drs", "/dc1/host/cl1", "--enable", "--automation", "manual", "--json")))
    assert drs["drs"]["enabled"] is True and drs["drs"]["automation"] == "manual"
    assert json.loads(ok(vcenter(env, "cluster", "drs", "cl1", "--json")))["drs"]["enabled"] is True
    ha = json.loads(ok(vcenter(env, "cluster", "ha", "cl1", "--json")))
    assert ha["ha"]["enabled"] is False


def test_create_a_datacenter_and_a_cluster_by_path(env):
    assert json.loads(ok(vcenter(env, "datacenter", "create", "dc2", "--json")))["name"] == "dc2"
    assert "created" in ok(vcenter(env, "cluster", "create", "/dc2/host/cl2"))
    assert [(i["path"], i["kind"]) for i in json.loads(ok(vcenter(env, "ls", "/dc2/host", "--json")))] == [("/dc2/host/cl2", "cluster")]
    taken = vcenter(env, "datacenter", "create", "dc2")
    assert taken.returncode == 1 and "error: DUPLICATE_NAME:" in taken.stderr, taken.stderr
    wrong = vcenter(env, "cluster", "create", "/dc2/vm/cl3")
    assert wrong.returncode == 1 and "INVALID_PATH" in wrong.stderr


def test_logout_forgets_the_session(env, stack):
    token = json.loads((Path(env["XDG_CONFIG_HOME"]) / "virtcenter" / "config.json").read_text())["contexts"]["lab"]["token"]
    ok(vcenter(env, "logout"))
    from vcenter.client.api import ApiError, Client

    with Client(stack.url, token) as client, pytest.raises(ApiError) as refused:
        client.get("datacenters")
    assert refused.value.status == 401
    after = vcenter(env, "ls")
    assert after.returncode == 3 and "not logged in" in after.stderr
