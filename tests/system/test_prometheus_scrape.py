"""Every process observable (issue 20, item 5), on real processes: the API, an orchestrator
worker, beat, an HA monitor and an agent (simulated hypervisor) each serve their metrics on
their own port under the metrics token; `promtool check metrics` passes over every process's
real scrape; a Prometheus from Debian (its own data directory, a generated prometheus.yml)
scrapes them all with ``up == 1``, and after one power operation the task counter, the queue
wait, the outbox lag, the heartbeat age, the HA monitor and beat gauges and the database pool
are there with sane values. Each process's /livez and /readyz answer on its listener, and an HA
monitor without its database is live but not ready."""

from __future__ import annotations

import socket
import subprocess

import httpx
import pytest

from tests.apihelpers import wait_for
from tests.conftest import REDIS_URL, redis_db_url
from tests.prometheushelpers import free_ports, have_prometheus, running_prometheus
from vcenter.lab.stack import Stack

needs_prometheus = pytest.mark.skipif(not have_prometheus(), reason="Debian's prometheus package (scripts/install.sh) is not installed")

TOKEN = "prometheus-scrape-secret-for-tests"


@pytest.fixture(scope="module")
def observed(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("observe")
    redis_url = redis_db_url(REDIS_URL, 14)
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


@needs_prometheus
def test_promtool_accepts_every_process_scrape(observed, tmp_path):
    stack, ports, _ = observed
    power_on_one_vm(stack, "scraped-vm")
    for role, port in ports.items():
        text = wait_for(lambda: (r := scrape(port)).status_code == 200 and r.text, 30, what=f"{role} /metrics")
        assert f'vcenter_process_info{{role="{role}"' in text, role
        checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, (role, checked.stdout, checked.stderr)


@needs_prometheus
def test_a_prometheus_from_debian_scrapes_every_process(observed, tmp_path):
    stack, ports, prom_port = observed
    jobs = {f"vcenter-{role}": [f"127.0.0.1:{port}"] for role, port in ports.items()}
    with running_prometheus(tmp_path / "prometheus", jobs, prom_port, token=TOKEN) as prometheus:
        base, value = prometheus.base, prometheus.value
        prometheus.wait_all_up(jobs)
        power_on_one_vm(stack, "prometheus-vm")
        # the counter of the process that committed the success (the API: the agent's result)
        wait_for(lambda: (value('sum(vcenter_tasks_total{kind="vm.powerOn",state="success"})') or 0) >= 1, 30, interval=0.5, what="vm.powerOn successes counted")
        assert value('sum(vcenter_task_queue_wait_seconds_count{kind="vm.powerOn"})') >= 1
        assert value('max(vcenter_task_queue_wait_seconds_sum{kind="vm.powerOn"}) / max(vcenter_task_queue_wait_seconds_count{kind="vm.powerOn"})') < 30
        wait_for(lambda: value("vcenter_outbox_lag_seconds") is not None, 10, interval=0.5, what="the outbox lag")
        assert 0 <= value("vcenter_outbox_lag_seconds") < 60
        age = value('vcenter_agent_heartbeat_age_seconds{host="h1"}')
        assert age is not None and 0 <= age <= 2, age
        assert value('vcenter_agent_heartbeat_missing{host="h1"}') == 0
        wait_for(lambda: value('vcenter_ha_monitor_active{job="vcenter-ha"}') == 1, 30, interval=0.5, what="the HA monitor active")
        wait_for(lambda: value('vcenter_beat_scheduler_active{job="vcenter-beat"}') == 1, 30, interval=0.5, what="beat ticking")
        wait_for(lambda: (value('sum(vcenter_beat_tasks_sent_total{job="vcenter-beat"})') or 0) >= 1, 30, interval=0.5, what="beat sent tasks")
        wait_for(lambda: (value('sum(vcenter_celery_tasks_total{job="vcenter-worker",outcome="success"})') or 0) >= 1, 30, interval=0.5, what="the worker ran tasks")
        wait_for(lambda: (value('sum(vcenter_celery_tasks_total{job="vcenter-agent"})') or 0) >= 1, 30, interval=0.5, what="the agent ran commands")
        wait_for(lambda: (value("vcenter_drs_pass_seconds_count") or 0) >= 1, 30, interval=0.5, what="a DRS pass timed")
        wait_for(lambda: (value("vcenter_metrics_rollup_seconds_count") or 0) >= 1, 30, interval=0.5, what="a rollup timed")
        assert value('vcenter_agent_heartbeats_total{job="vcenter-agent",outcome="ok"}') >= 1
        # a role's families only on its own process: one HA gauge, one beat gauge in the whole system
        assert value("count(vcenter_ha_monitor_active)") == 1 and value("count(vcenter_beat_scheduler_active)") == 1
        assert value('count(vcenter_ha_verdicts_total{job="vcenter-ha"})') == 5  # every verdict's series, 0 until it happens
        for role in ("api", "worker", "ha"):
            in_use = value(f'vcenter_db_pool_connections_in_use{{job="vcenter-{role}"}}')
            assert in_use is not None and in_use >= 0, role
        for role in ("worker", "beat", "ha", "agent"):  # each loop turns (well within process_stall_after)
            loop_age = value(f'vcenter_process_loop_age_seconds{{job="vcenter-{role}"}}')
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


def test_an_ha_monitor_without_its_database_is_live_but_not_ready(tmp_path):
    """Liveness is the loop turning, readiness the dependencies answering: an HA monitor whose
    database does not answer keeps passing (each pass fails and is logged), so /livez is 200,
    while /readyz is 503 naming the database; Redis answers."""
    import os
    import sys

    (port,) = free_ports(1)
    with socket.socket() as probe:  # a port where nothing listens: the database "down"
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VCENTER_")},
        "VCENTER_DATABASE_URL": f"postgresql+psycopg://nobody:nothing@127.0.0.1:{dead}/none?connect_timeout=1",
        "VCENTER_REDIS_URL": redis_db_url(REDIS_URL, 15),
        "VCENTER_KEY_DIR": str(tmp_path / "keys"),
        "VCENTER_HA_PERIOD": "0.3",
        "VCENTER_PROCESS_STALL_AFTER": "5",
        "VCENTER_HA_METRICS_LISTEN": f"127.0.0.1:{port}",
    }
    log = tmp_path / "ha.log"
    proc = subprocess.Popen([sys.executable, "-m", "vcenter.cli", "ha"], env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def answers(path: str) -> httpx.Response | None:
        try:
            return httpx.get(base + path, timeout=5)
        except httpx.HTTPError:
            assert proc.poll() is None, log.read_text()
            return None

    try:
        wait_for(lambda: (r := answers("/readyz")) is not None and r, 30, interval=0.3, what="the HA monitor's listener")
        ready = answers("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"] == {"database": "error: OperationalError", "redis": "ok"}, ready.text
        # several passes later (each failing on the database), the loop still turns
        wait_for(lambda: log.read_text().count("HA monitor pass failed") >= 3, 30, interval=0.3, what="three failed passes")
        live = answers("/livez")
        assert live.status_code == 200 and live.json()["loop_age_seconds"] < 5, live.text
    finally:
        proc.terminate()
        proc.wait(20)
