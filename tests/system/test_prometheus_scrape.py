"""Every process observable (issue 20, item 5), on real processes: the API, an orchestrator
worker, beat, an HA monitor and an agent (simulated hypervisor) each serve their metrics on
their own port under the metrics token; `promtool check metrics` passes over every process's
real scrape; a Prometheus from Debian (its own data directory, a generated prometheus.yml)
scrapes them all with ``up == 1``, and after one power operation the task counter, the queue
wait, the outbox lag, the heartbeat age, the HA monitor and beat gauges and the database pool
are there with sane values. Each process's /livez and /readyz answer on its listener."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import yaml

from tests.apihelpers import wait_for
from tests.conftest import REDIS_URL
from vcenter.lab.stack import Stack

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None or shutil.which("promtool") is None, reason="Debian's prometheus package (scripts/install.sh) is not installed")

TOKEN = "prometheus-scrape-secret-for-tests"
# Listener ports of this test: the range the test machine leaves to it.
PORTS = range(18200, 18300)


def free_ports(count: int) -> list[int]:
    found = []
    for port in PORTS:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise RuntimeError(f"fewer than {count} free ports in {PORTS}")


def _own_db(url: str, db: int) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


@pytest.fixture(scope="module")
def observed(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("observe")
    redis_url = _own_db(REDIS_URL, 12)
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    worker, beat, ha, agent, prom = free_ports(5)
    listeners = {"worker": worker, "beat": beat, "ha": ha, "agent": agent}
    s = Stack.create(
        workdir,
        None,
        redis_url,
        metrics_token=TOKEN,
        heartbeat_period=0.3,
        heartbeat_ttl=2,
        agent_report_period=1,
        reaper_period=1,
        host_monitor_period=0.5,
        agent_reconnect_delay=0.3,
        drs_period=1,
        metrics_rollup_period=1,
        ha_period=0.5,
        process_stall_after=10,
        # the HA monitor's address by its command's option, the others' by their settings
        **{f"{role}_metrics_listen": f"127.0.0.1:{port}" for role, port in listeners.items() if role != "ha"},
    )
    try:
        s.start_server()
        s._spawn("ha", ["ha", "--metrics-listen", f"127.0.0.1:{ha}"])
        with s.client() as api:
            dc = api.post("/api/v1/datacenters", json={"name": "dc1"}).json()
            host = s.add_host("h1", dc["id"], simulated=True)
            wait_for(lambda: api.get(f"/api/v1/hosts/{host.host_id}").json()["connection_state"] == "connected", 60, what="host h1 connected")
        yield s, {"api": s.api_port, **listeners}, prom
    finally:
        s.stop()


def scrape(port: int, token: str | None = TOKEN) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"authorization": f"Bearer {token}"} if token else {}, timeout=10)


def power_on_one_vm(stack: Stack, name: str) -> None:
    with stack.client() as api:
        created = api.post("/api/v1/vms", json={"name": name, "host_id": stack.hosts["h1"].host_id, "memory_mib": 32})
        assert created.status_code == 202, created.text
        done = wait_for(lambda: (t := api.get(f"/api/v1/tasks/{created.json()['id']}").json())["state"] in ("success", "error") and t, 30, what="create")
        assert done["state"] == "success", done
        on = api.post(f"/api/v1/vms/{done['object_id']}/power/on")
        assert on.status_code == 202, on.text
        ended = wait_for(lambda: (t := api.get(f"/api/v1/tasks/{on.json()['id']}").json())["state"] in ("success", "error") and t, 30, what="power on")
        assert ended["state"] == "success", ended


def test_each_process_answers_livez_readyz_and_refuses_metrics_without_the_token(observed):
    stack, ports, _ = observed
    for role in ("worker", "beat", "ha", "agent"):
        port = ports[role]
        live = wait_for(lambda: (r := httpx.get(f"http://127.0.0.1:{port}/livez", timeout=5)).status_code == 200 and r, 30, what=f"{role} live")
        assert live.json()["role"] == role
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
        assert ready.status_code == 200 and ready.json()["status"] == "ok", (role, ready.text)
        assert scrape(port, None).status_code == 401, role
        assert scrape(port, "not-the-token").status_code == 401, role
        assert httpx.get(f"http://127.0.0.1:{port}/other", timeout=5).status_code == 404
    assert set(httpx.get(f"http://127.0.0.1:{ports['agent']}/readyz", timeout=10).json()["checks"]) == {"redis", "hypervisor"}


def test_promtool_accepts_every_process_scrape(observed, tmp_path):
    stack, ports, _ = observed
    power_on_one_vm(stack, "scraped-vm")
    for role, port in ports.items():
        text = wait_for(lambda: (r := scrape(port)).status_code == 200 and r.text, 30, what=f"{role} /metrics")
        assert f'vcenter_process_info{{role="{role}"' in text, role
        checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, (role, checked.stdout, checked.stderr)


def query(base: str, promql: str) -> list[dict]:
    answer = httpx.get(f"{base}/api/v1/query", params={"query": promql}, timeout=10).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def value(base: str, promql: str) -> float | None:
    result = query(base, promql)
    return float(result[0]["value"][1]) if result else None


def test_a_prometheus_from_debian_scrapes_every_process(observed, tmp_path):
    stack, ports, prom_port = observed
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(Path(__file__).resolve().parents[2] / "deploy/prometheus/alerts.yml")],
        "scrape_configs": [
            {"job_name": f"vcenter-{role}", "authorization": {"credentials_file": str(token_file)}, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]} for role, port in ports.items()
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = open(tmp_path / "prometheus.log", "w")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{prom_port}"
    try:

        def all_up() -> dict[str, str] | bool:
            try:
                ups = {r["metric"]["job"]: r["value"][1] for r in query(base, "up")}
            except httpx.HTTPError:
                assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
                return False
            return ups if len(ups) == len(ports) and set(ups.values()) == {"1"} else False

        wait_for(all_up, 60, interval=0.5, what="every target up == 1")
        power_on_one_vm(stack, "prometheus-vm")
        # the counter of the process that committed the success (the API: the agent's result)
        wait_for(lambda: (value(base, 'sum(vcenter_tasks_total{kind="vm.powerOn",state="success"})') or 0) >= 1, 30, interval=0.5, what="vm.powerOn successes counted")
        assert value(base, 'sum(vcenter_task_queue_wait_seconds_count{kind="vm.powerOn"})') >= 1
        assert value(base, 'max(vcenter_task_queue_wait_seconds_sum{kind="vm.powerOn"}) / max(vcenter_task_queue_wait_seconds_count{kind="vm.powerOn"})') < 30
        wait_for(lambda: value(base, "vcenter_outbox_lag_seconds") is not None, 10, interval=0.5, what="the outbox lag")
        assert 0 <= value(base, "vcenter_outbox_lag_seconds") < 60
        age = value(base, 'vcenter_agent_heartbeat_age_seconds{host="h1"}')
        assert age is not None and 0 <= age <= 2, age
        assert value(base, 'vcenter_agent_heartbeat_missing{host="h1"}') == 0
        wait_for(lambda: value(base, 'vcenter_ha_monitor_active{job="vcenter-ha"}') == 1, 30, interval=0.5, what="the HA monitor active")
        wait_for(lambda: value(base, 'vcenter_beat_scheduler_active{job="vcenter-beat"}') == 1, 30, interval=0.5, what="beat ticking")
        wait_for(lambda: (value(base, 'sum(vcenter_beat_tasks_sent_total{job="vcenter-beat"})') or 0) >= 1, 30, interval=0.5, what="beat sent tasks")
        wait_for(lambda: (value(base, 'sum(vcenter_celery_tasks_total{job="vcenter-worker",outcome="success"})') or 0) >= 1, 30, interval=0.5, what="the worker ran tasks")
        wait_for(lambda: (value(base, 'sum(vcenter_celery_tasks_total{job="vcenter-agent"})') or 0) >= 1, 30, interval=0.5, what="the agent ran commands")
        wait_for(lambda: (value(base, "vcenter_drs_pass_seconds_count") or 0) >= 1, 30, interval=0.5, what="a DRS pass timed")
        wait_for(lambda: (value(base, "vcenter_metrics_rollup_seconds_count") or 0) >= 1, 30, interval=0.5, what="a rollup timed")
        assert value(base, 'vcenter_agent_heartbeats_total{job="vcenter-agent",outcome="ok"}') >= 1
        # a role's families only on its own process: one HA gauge, one beat gauge in the whole system
        assert value(base, "count(vcenter_ha_monitor_active)") == 1 and value(base, "count(vcenter_beat_scheduler_active)") == 1
        assert value(base, 'count(vcenter_ha_verdicts_total{job="vcenter-ha"})') == 5  # every verdict's series, 0 until it happens
        for role in ("api", "worker", "ha"):
            in_use = value(base, f'vcenter_db_pool_connections_in_use{{job="vcenter-{role}"}}')
            assert in_use is not None and in_use >= 0, role
        for role in ("worker", "beat", "ha", "agent"):  # each loop turns (well within process_stall_after)
            loop_age = value(base, f'vcenter_process_loop_age_seconds{{job="vcenter-{role}"}}')
            assert loop_age is not None and 0 <= loop_age < 10, (role, loop_age)
        # the alert rules load and evaluate; nothing is firing on a healthy system
        rules = httpx.get(f"{base}/api/v1/rules", timeout=10).json()["data"]["groups"]
        assert rules and all(rule["health"] != "err" for group in rules for rule in group["rules"]), rules
        wait_for(
            lambda: all(rule.get("lastEvaluation", "0001").startswith("20") for group in httpx.get(f"{base}/api/v1/rules", timeout=10).json()["data"]["groups"] for rule in group["rules"]),
            20,
            interval=0.5,
            what="rules evaluated",
        )
        firing = [a for a in httpx.get(f"{base}/api/v1/alerts", timeout=10).json()["data"]["alerts"] if a["state"] == "firing"]
        assert firing == [], firing
    finally:
        proc.terminate()
        proc.wait(20)
