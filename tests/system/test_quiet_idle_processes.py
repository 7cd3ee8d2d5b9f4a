"""An idle worker and beat (real `vcenter worker` and `vcenter beat` processes, on Redis and a
migrated SQLite database, the housekeeping schedule compressed to 0.3 s) write no INFO line
after start-up while beat sends its periodic tasks and the worker runs them; `vcenter serve`
with VCENTER_LOG_JSON writes uvicorn's own lines as JSON too (issue 20, item 5)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import redis

from tests.apihelpers import wait_for
from tests.conftest import REDIS_URL, migrated_sqlite

PERIOD = "0.3"


def _environ(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "VCENTER_DATABASE_URL": migrated_sqlite(tmp_path / "vc.db"),
        "VCENTER_REDIS_URL": REDIS_URL,
        "VCENTER_KEY_DIR": str(tmp_path / "keys"),
        "VCENTER_LOG_LEVEL": "INFO",
        **extra,
    }


def _info_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if " INFO " in line]


def test_an_idle_worker_and_beat_say_nothing_at_info_while_the_schedule_runs(tmp_path):
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    environ = _environ(tmp_path, VCENTER_REAPER_PERIOD=PERIOD, VCENTER_HOST_MONITOR_PERIOD=PERIOD, VCENTER_ALARM_PERIOD=PERIOD)
    cli = [sys.executable, "-m", "vcenter.cli"]
    logs = {name: tmp_path / f"{name}.log" for name in ("worker", "beat")}
    procs = [subprocess.Popen([*cli, name], env=environ, stdout=open(logs[name], "w"), stderr=subprocess.STDOUT) for name in logs]
    try:

        def runs(entry: str) -> int:
            meta = client.hget(f"redbeat:{entry}", "meta")
            return json.loads(meta).get("total_run_count", 0) if meta else 0

        # start-up: the worker ready and a first pass run (which makes the command-signing key,
        # as `vcenter db upgrade` would have: one line, once)
        wait_for(lambda: any("ready" in line for line in _info_lines(logs["worker"])) and runs("reap-tasks") >= 2 and client.llen("orchestrator") == 0, 60, interval=0.3, what="the worker ready")
        started = {name: len(_info_lines(path)) for name, path in logs.items()}
        first = runs("reap-tasks")
        # 20 more sends of each short entry, and the queue drained: the worker received them all
        wait_for(lambda: runs("reap-tasks") >= first + 20 and runs("monitor-hosts") >= 20 and client.llen("orchestrator") == 0, 60, interval=0.3, what="20 passes of the schedule")
        assert {name: len(_info_lines(path)) for name, path in logs.items()} == started, {name: _info_lines(path)[started[name] :] for name, path in logs.items()}
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(20)
    # the same lines exist at DEBUG: they were demoted, not lost (checked on the unit level:
    # tests/unit/test_routine_logs.py)


def test_uvicorns_lines_are_json_like_ours(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environ = _environ(tmp_path, VCENTER_LOG_JSON="true", VCENTER_API_PORT=str(port), VCENTER_API_HOST="127.0.0.1")
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "vcenter.cli", "serve"], env=environ, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(base + "/livez", timeout=1).status_code == 200
        except httpx.HTTPError:
            assert proc.poll() is None, log.read_text()
            return False

    try:
        wait_for(up, 30, interval=0.2, what="vcenter serve")
        httpx.get(base + "/no-such-page", timeout=5)
        wait_for(lambda: "/no-such-page" in log.read_text(), 10, what="the access line")
    finally:
        proc.terminate()
        proc.wait(20)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    plain = [line for line in log.read_text().splitlines() if line.strip() and not line.startswith("{")]
    assert plain == [], plain
    loggers = {entry["logger"] for entry in lines}
    assert {"uvicorn.error", "uvicorn.access"} <= loggers, loggers
    assert any('"GET /no-such-page HTTP/1.1" 404' in entry["message"] for entry in lines if entry["logger"] == "uvicorn.access")


def test_worker_and_beat_log_json_only_with_log_json(tmp_path):
    """With VCENTER_LOG_JSON every line on stderr is a JSON object: Celery's own records, its
    "running as root" warning (Python's warnings are captured), and no start-up banner (Celery's
    --quiet). Celery writes one plain line to stdout when it shuts down; nothing else goes there."""
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    environ = _environ(tmp_path, VCENTER_LOG_JSON="true")
    cli = [sys.executable, "-m", "vcenter.cli"]
    names = ("worker", "beat")
    errs = {name: tmp_path / f"{name}.err" for name in names}
    outs = {name: tmp_path / f"{name}.out" for name in names}
    procs = [subprocess.Popen([*cli, name], env=environ, stdout=open(outs[name], "w"), stderr=open(errs[name], "w")) for name in names]
    try:
        wait_for(lambda: "ready." in errs["worker"].read_text() and "Acquired lock" in errs["beat"].read_text(), 60, interval=0.3, what="worker ready, beat scheduling")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(20)
    for name in names:
        lines = [line for line in errs[name].read_text().splitlines() if line.strip()]
        plain = [line for line in lines if not line.startswith("{")]
        assert lines and plain == [], (name, plain)
        assert all(json.loads(line)["message"] is not None for line in lines)
        stdout = [line for line in outs[name].read_text().splitlines() if line.strip()]
        assert all("shutdown" in line for line in stdout), (name, stdout)
