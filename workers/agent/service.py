"""The host agent's long-running parts: heartbeat, state reports, lifecycle event forwarding
and reconnection to libvirt. The Celery side (workers.agent.tasks) executes commands with
the same driver.

Vocabulary: a *state report* is the full picture of the host (facts, domains, datastore usage,
port-group bridges present); the server answers with what the host is expected to provide
(datastore paths, bridges, HA configuration), which the agent then creates. The expectations
are kept in ``agent_state_dir/expected.json``, so that an agent started again (after a crash,
by its supervisor) renews its datastore heartbeats at once, even while libvirt cannot be
reached and no report can be made. The heartbeats start before libvirt is connected: neither
ever waits on it.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from vcenter.core.release import release
from vcenter.core.settings import Settings
from vcenter.domain.datastore_roots import parse_roots
from vcenter.hypervisor.base import ConnectionLost, DriverError, HypervisorDriver
from vcenter.domain.uplinks import UplinkRefused
from vcenter.messaging.contracts import DatastoreUsage, DomainState, HostState, LifecycleEvent, PortgroupError, heartbeat_key
from vcenter.messaging.redis_link import connect
from vcenter.observability.metrics import AGENT_HEARTBEATS
from workers.agent import datastore_guard
from workers.agent.api_client import ApiClient, PermanentReportError
from workers.agent.guests import GuestWatcher
from workers.agent.network import HostNetwork
from workers.agent.trust import CommandGate

log = logging.getLogger(__name__)


class AgentService:
    def __init__(self, settings: Settings, host_id: int, driver: HypervisorDriver, api: ApiClient, network: HostNetwork, command_gate: CommandGate | None = None):
        self.settings = settings
        # A datastore root of '/' or /etc would allow what the roots exist to refuse: fail at start.
        parse_roots(settings.agent_datastore_roots)
        # Admits only commands the server signed for this host (None: every command refused).
        self.command_gate = command_gate
        self.network = network
        self.host_id = host_id
        self.driver = driver
        self.api = api
        self.redis = connect(settings, socket_timeout=2, socket_connect_timeout=2)
        self.stop_event = threading.Event()
        self._events: queue.Queue[LifecycleEvent] = queue.Queue()
        self._expected: dict[str, Any] = load_expected(settings.agent_state_dir) or {"datastores": [], "bridges": []}
        self._report_now = threading.Event()
        self._threads: list[threading.Thread] = []
        self.driver_lock = threading.RLock()
        # A state report listed before a command defined its domain must never reach the server
        # after that command's result (the server would judge the just-made VM missing on its
        # host, "inaccessible"): results are posted under this lock and counted, and a report
        # is posted under it only when no result went out since its listing began.
        self.report_lock = threading.Lock()
        self.results_posted = 0
        self.guests = GuestWatcher(driver, self.stop_event)
        # Port groups this host could not make on the last pass, by bridge: reported to the server.
        self._portgroup_errors: dict[str, PortgroupError] = {}
        self.on_heartbeat: Callable[[], None] = lambda: None  # the process's liveness (workers.agent.main)

    # --- start / stop --------------------------------------------------------------------
    def start(self) -> None:
        # The heartbeats first: connecting to a hung libvirtd takes up to its connect timeout.
        from workers.agent.ha import HaAgent  # datastore heartbeats, isolation response

        self.ha = HaAgent(self)
        self.ha.start()
        self._start_thread(self._heartbeat_loop, "heartbeat")
        self.driver.subscribe_lifecycle(self._events.put)
        self._connect_driver()
        self.guests.start()
        for target, name in ((self._report_loop, "state-report"), (self._event_loop, "lifecycle-events"), (self._watchdog_loop, "libvirt-watchdog"), (self._metrics_loop, "metrics")):
            self._start_thread(target, name)

    def _start_thread(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=f"agent-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self.stop_event.set()
        self._report_now.set()
        self.api.close()

    def request_report(self) -> None:
        self._report_now.set()

    # --- libvirt connection --------------------------------------------------------------
    def _connect_driver(self) -> bool:
        try:
            self.driver.connect()
            log.info("connected to the hypervisor")
            self._report_now.set()
            return True
        except DriverError as exc:
            log.warning("hypervisor not reachable: %s", exc)
            return False

    def _watchdog_loop(self) -> None:
        while not self.stop_event.wait(self.settings.agent_reconnect_delay):
            try:
                alive = self.driver.is_alive()
            except Exception:
                alive = False
            if not alive:
                log.warning("hypervisor connection lost; reconnecting")
                self._connect_driver()

    # --- heartbeat -----------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        key = heartbeat_key(self.host_id)
        ttl_ms = int(self.settings.heartbeat_ttl * 1000)
        failing = False
        while not self.stop_event.is_set():
            try:
                self.redis.set(key, str(time.time()), px=ttl_ms)
                AGENT_HEARTBEATS.labels("ok").inc()
                if failing:
                    log.info("heartbeat: Redis reachable again")
                failing = False
            except redis.RedisError as exc:
                AGENT_HEARTBEATS.labels("failed").inc()
                if not failing:
                    log.warning("heartbeat: Redis unreachable (%s); will keep trying", exc)
                failing = True
            self.on_heartbeat()  # the loop turned, whether Redis answered or not (that is readiness)
            self.stop_event.wait(self.settings.heartbeat_period)

    # --- lifecycle events ----------------------------------------------------------------
    def _event_loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                first = self._events.get(timeout=0.5)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < 100:
                try:
                    batch.append(self._events.get_nowait())
                except queue.Empty:
                    break
            log.info("lifecycle: %s", ", ".join(f"{e.name} {e.event}/{e.reason}" for e in batch))
            try:
                self.api.post("/events", [e.model_dump(mode="json") for e in batch])
            except (PermanentReportError, ConnectionError) as exc:
                log.error("lifecycle events dropped: %s", exc)

    # --- performance samples ---------------------------------------------------------------
    def _metrics_loop(self) -> None:
        """Every metrics sample period: read libvirt's counters, send the rates since the last
        reading. A sample the server does not take within one period is dropped (the next one
        is as good)."""
        from workers.agent.stats import MetricsSampler

        sampler = MetricsSampler()
        period = self.settings.metrics_sample_period
        while not self.stop_event.wait(period):
            try:
                report = sampler.sample(self.driver.host_counters())
            except DriverError as exc:
                log.warning("metrics sample skipped: %s", exc)
                continue
            except Exception:
                log.exception("metrics sample failed")
                continue
            if report.interval_s is None:
                continue  # the first reading: no rates yet
            try:
                self.api.post("/metrics", report.model_dump(mode="json"), retry_for=period)
            except (PermanentReportError, ConnectionError) as exc:
                log.warning("metrics sample dropped: %s", exc)

    # --- state reports -------------------------------------------------------------------
    def _report_loop(self) -> None:
        while not self.stop_event.is_set():
            self._report_now.wait(self.settings.agent_report_period)
            self._report_now.clear()
            if self.stop_event.is_set():
                return
            try:
                self.report_state()
            except ConnectionLost as exc:
                log.warning("state report skipped: %s", exc)
            except (PermanentReportError, ConnectionError) as exc:
                log.error("state report failed: %s", exc)
            except Exception:
                log.exception("state report failed")

    def report_state(self) -> dict[str, Any]:
        self._provide_expected()
        facts = self.driver.host_facts()
        # A lab host shares this machine's CPUs and memory: it reports its declared capacity.
        if self.settings.agent_declared_cpus:
            facts.cpu_cores = self.settings.agent_declared_cpus
        if self.settings.agent_declared_memory_mib:
            facts.memory_mib = self.settings.agent_declared_memory_mib
        facts.datastore_roots = list(parse_roots(self.settings.agent_datastore_roots))
        facts.agent_version = release()
        facts.nics, facts.vlan_8021q = self.network.facts()
        datastores, bridges = self._datastore_usage(), self._bridges_present()
        attempts = 4
        for attempt in range(attempts):
            seen = self.results_posted
            last = attempt == attempts - 1
            # Listed outside the lock (a hung libvirtd must not hold results back), except on
            # the last attempt, when results kept going out meanwhile.
            domains = None if last else self._listed_domains()
            with self.report_lock:  # see __init__
                if domains is None:
                    domains = self._listed_domains()
                elif self.results_posted != seen:
                    continue  # a result went out after the listing began: list again
                state = HostState(facts=facts, domains=domains, datastores=datastores, bridges=bridges, portgroup_errors=list(self._portgroup_errors.values()))
                answer = self.api.post("/state", state.model_dump(mode="json"))
                break
        if answer.get("accepted"):
            expected = {"datastores": answer.get("datastores", []), "bridges": answer.get("bridges", []), "ha": answer.get("ha") or {}}
            if expected != self._expected:
                self._expected = expected
                save_expected(self.settings.agent_state_dir, expected)
                self._report_now.set()  # provide them and report again
        else:
            log.error("server refused this host's report: %s", answer.get("error"))
        return answer

    def _listed_domains(self) -> list[DomainState]:
        domains = self.driver.list_domains()
        for domain in domains:
            domain.guest = self.guests.heartbeat_of(domain.uuid)
        return domains

    def post_result(self, path: str, body: dict[str, Any]) -> Any:
        """Post a command's result (see report_lock in __init__)."""
        with self.report_lock:
            try:
                return self.api.post(path, body)
            finally:
                self.results_posted += 1

    def _datastore_usage(self) -> list[DatastoreUsage]:
        """Capacity and free space as the host's libvirt storage pool reports them; a
        datastore whose pool is not usable is left out (the server keeps its last figures)."""
        usage = []
        for ds in self._expected["datastores"]:
            if not datastore_guard.allowed(self.settings, ds.get("path"), f"datastore {ds.get('id')}"):
                continue  # refused: not provided here, so no figures either
            try:
                total, free = self.driver.pool_usage(pool_name(ds["id"]))
            except DriverError as exc:
                log.warning("datastore %s: %s", ds["id"], exc)
                continue
            usage.append(DatastoreUsage(id=ds["id"], capacity_bytes=total, free_bytes=free))
        return usage

    def _bridges_present(self) -> list[str]:
        # A bridge whose port group was refused is not that port group, even if the bridge is there.
        return [b for b in self.network.portgroups_present([pg["bridge"] for pg in self._expected["bridges"]]) if b not in self._portgroup_errors]

    def _provide_expected(self) -> None:
        """Create the datastore directories and port-group bridges the server expects here."""
        for ds in self._expected["datastores"]:
            # Only below this host's datastore roots: nothing of ours is made elsewhere.
            if not datastore_guard.allowed(self.settings, ds.get("path"), f"datastore {ds.get('id')}"):
                continue
            try:
                os.makedirs(ds["path"], exist_ok=True)
                with self.driver_lock:
                    self.driver.ensure_pool(pool_name(ds["id"]), ds["path"])
            except (OSError, DriverError) as exc:
                log.warning("datastore %s: cannot provide %s: %s", ds["id"], ds["path"], exc)
        errors = {}
        for portgroup in self._expected["bridges"]:
            try:
                self.network.ensure_portgroup(portgroup)
            except UplinkRefused as exc:
                if portgroup["bridge"] not in self._portgroup_errors:
                    log.warning("port group bridge %s: %s: %s", portgroup["bridge"], exc.code, exc.message)
                errors[portgroup["bridge"]] = PortgroupError(bridge=portgroup["bridge"], code=exc.code, message=exc.message[:500])
        self._portgroup_errors = errors


EXPECTED_FILE = "expected.json"


def load_expected(state_dir: str) -> dict[str, Any] | None:
    """What the server last expected of this host (None: nothing kept, or unreadable)."""
    try:
        data = json.loads((Path(state_dir) / EXPECTED_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("datastores"), list) or not isinstance(data.get("bridges"), list):
        return None
    return data


def save_expected(state_dir: str, expected: dict[str, Any]) -> None:
    path = Path(state_dir) / EXPECTED_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(expected))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot keep the server's expectations in %s: %s", path, exc)


def pool_name(datastore_id: int) -> str:
    """The libvirt storage pool of a datastore on every host that mounts it."""
    return f"vc-ds{datastore_id}"


def default_hostname() -> str:
    return socket.gethostname()
