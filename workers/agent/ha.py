"""The agent's part of HA: datastore heartbeats, peer views, isolation and its response.

Vocabulary:
- datastore heartbeat: ``<datastore>/.vcenter-ha/host-<id>.json``, rewritten (atomically) every
  ``ha_datastore_heartbeat_period`` on every datastore this host mounts: a counter, the VM
  uuids whose disks this host holds (its running domains), those it released by its
  isolation response, and whether it considers itself isolated. It goes on when the network
  is cut: the HA monitor learns through the peers that the host is alive (isolated, not failed).
- peer view: what this agent read in its peers' heartbeat files, published in Redis
  (``ha_datastore_view_key``) for the monitor; a peer's counter that advances is a sighting of
  that peer's datastore channel.
- isolation: no Redis round trip AND no isolation address answering a TCP connect for the
  isolation delay (vcenter.domain.ha.isolated); a Redis restart leaves the addresses answering,
  so it never isolates a host. The response (leave powered on, power off, guest shutdown; per
  VM overrides) runs once per isolation; the stopped VMs are listed as released in the
  datastore heartbeat, so HA may restart them elsewhere.

The HA configuration comes with the server's answer to each state report (``ha``).

Threads: neither heartbeat ever waits on libvirt. The datastore thread writes and reads files
only; the network thread talks to Redis and probes addresses only; the running-domain list
(what the heartbeat files say this host holds) is refreshed by a thread of its own, and the
isolation response runs on a thread of its own. A hung libvirtd (measured: a call in flight
when libvirtd stops answering may never return, even after keepalive closed the connection)
then only freezes that list (holding is the safe assumption) or the response, never a channel.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import redis

from vcenter.domain import ha
from vcenter.messaging.contracts import ha_datastore_view_key
from vcenter.messaging.redis_link import connect
from workers.agent import datastore_guard
from workers.agent.bounded import BoundedCalls

log = logging.getLogger(__name__)

DIR = ".vcenter-ha"
HOLDS_WAIT_PERIODS = 2  # a running-domain list read may take this many heartbeat periods
MAX_STUCK = 3  # abandoned list calls (a hung libvirtd) before the agent stops adding more


def heartbeat_file(datastore_path: str, host_id: int) -> Path:
    return Path(datastore_path) / DIR / f"host-{host_id}.json"


def probe(address: str, timeout: float) -> bool:
    """A TCP connect to host:port (there is no ping): True when something answered."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


class HaAgent:
    def __init__(self, agent: Any, clock=time.monotonic) -> None:
        self.agent = agent
        self.settings = agent.settings
        self.host_id = agent.host_id
        self.clock = clock
        self.since = clock()
        self.redis_ok_at: float | None = clock()
        self.probe_ok_at: float | None = clock()
        # Starts from this host's clock (ms) so that it still grows across an agent restart: the
        # monitor counts only an increase as a sighting.
        self.counter = int(time.time() * 1000)
        self.isolated = False
        self.released: set[str] = set()
        self.released_until: float | None = None
        self.view: dict[str, Any] = {}
        self.holds: list[str] = []
        self.holds_at: float | None = None  # monotonic time of the last list read from libvirt
        self.list_calls = BoundedCalls("agent-ha-list-domains", MAX_STUCK)  # see refresh_holds
        self.write_lock = threading.Lock()
        self.redis = connect(self.settings, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.threads: list[threading.Thread] = []
        self.respond_in_thread = False  # start() turns it on; tests that step() respond at once
        self.responding: threading.Thread | None = None

    @property
    def config(self) -> dict[str, Any]:
        return (self.agent._expected or {}).get("ha") or {}

    def start(self) -> None:
        # The datastore heartbeat never waits on the network (a probe or a Redis timeout of an
        # isolated host would starve it, and peers would see it silent), and neither channel
        # waits on libvirt (module docstring): three threads.
        self.respond_in_thread = True
        for target, name in ((self.run_datastore, "agent-ha-datastore"), (self.run_network, "agent-ha-network"), (self.run_holds, "agent-ha-holds")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self.threads.append(thread)

    def _loop(self, step) -> None:
        while not self.agent.stop_event.wait(self.settings.ha_datastore_heartbeat_period):
            try:
                step()
            except Exception:
                log.exception("HA %s failed", step.__name__)

    def run_datastore(self) -> None:
        self._loop(self.datastore_step)

    def run_network(self) -> None:
        self._loop(self.network_step)

    def run_holds(self) -> None:
        self._loop(self.refresh_holds)

    # -- one period ------------------------------------------------------------------------
    def refresh_holds(self) -> list[str]:
        """The running domains (their disks are held here), read from libvirt by a thread of
        its own: neither heartbeat thread waits on libvirt (a destroy in progress can take
        seconds, a call to a hung libvirtd may never return); they use the last list.

        Each read runs on a helper thread and is given ``HOLDS_WAIT_PERIODS`` periods: a call
        that hangs for good (libvirt 9.0 leaves calls in flight on a connection its keepalive
        closed) is abandoned, and the next period tries again, on the connection the agent's
        watchdog opened meanwhile; at most ``MAX_STUCK`` abandoned calls at a time. Until a read
        succeeds the last list stands: holding is the safe assumption, and a list that is never
        refreshed again would keep HA from restarting VMs this host no longer runs."""
        running = self._list_running(max(1.0, HOLDS_WAIT_PERIODS * self.settings.ha_datastore_heartbeat_period))
        if running is not None:
            self.holds = running
            self.holds_at = self.clock()
        return self.holds

    def _list_running(self, wait: float) -> list[str] | None:
        ok, running = self.list_calls.call(lambda: sorted(d.uuid for d in self.agent.driver.list_domains() if d.power_state == "poweredOn"), wait)
        if ok:
            return running
        if self.list_calls.timed_out:
            log.warning("HA: libvirt did not list the running domains within %.1f s; keeping the last list (%d held)", wait, len(self.holds))
        return None

    def _holds(self) -> list[str]:
        return list(self.holds)

    def write_heartbeats(self) -> None:
        with self.write_lock:  # the isolation response rewrites them at once, from the other thread
            self._write_heartbeats()

    def _write_heartbeats(self) -> None:
        self.counter += 1
        body = json.dumps({"n": self.counter, "holds": [u for u in self._holds() if u not in self.released], "released": sorted(self.released), "isolated": self.isolated, "at": time.time()})
        for ds in self.agent._expected.get("datastores", []):
            # Never a heartbeat folder outside this host's datastore roots (/etc/.vcenter-ha).
            if not datastore_guard.allowed(self.settings, ds.get("path"), f"HA heartbeat on datastore {ds.get('id')}"):
                continue
            path = heartbeat_file(ds["path"], self.host_id)
            try:
                path.parent.mkdir(exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(body)
                os.replace(tmp, path)
            except OSError as exc:
                log.warning("datastore heartbeat on %s not written: %s", ds["path"], exc)

    def read_peers(self) -> dict[str, Any]:
        view: dict[str, Any] = {}
        for ds in self.agent._expected.get("datastores", []):
            if not datastore_guard.allowed(self.settings, ds.get("path"), f"HA heartbeats of datastore {ds.get('id')}"):
                continue
            d = Path(ds["path"]) / DIR
            try:
                files = list(d.glob("host-*.json"))
            except OSError:
                continue
            for f in files:
                try:
                    peer = int(f.stem.split("-", 1)[1])
                    data = json.loads(f.read_text())
                except (OSError, ValueError, IndexError):
                    continue
                if peer == self.host_id:
                    continue
                seen = view.setdefault(str(peer), {"n": data.get("n"), "at": data.get("at"), "holds": [], "released": [], "isolated": False})
                seen["at"] = max(seen["at"] or 0, data.get("at") or 0)
                seen["holds"] = sorted(set(seen["holds"]) | set(data.get("holds", [])))
                seen["released"] = sorted(set(seen["released"]) | set(data.get("released", [])))
                seen["isolated"] = seen["isolated"] or bool(data.get("isolated"))
                seen["n"] = max(seen["n"] or 0, data.get("n") or 0)
        return view

    def datastore_step(self) -> None:
        """Renew this host's datastore heartbeats and read the peers' (files only)."""
        self.released.difference_update(self._holds())  # started here again: no longer released
        self.write_heartbeats()
        view = self.read_peers()
        view[str(self.host_id)] = {"n": self.counter, "at": time.time(), "holds": self._holds(), "released": sorted(self.released), "isolated": self.isolated}
        self.view = view

    def network_step(self) -> None:
        """Publish the peer view; judge isolation (Redis, then the isolation addresses). Never
        calls libvirt (the running-domain list is refreshed elsewhere)."""
        now = self.clock()
        cfg = self.config
        try:
            self.redis.set(ha_datastore_view_key(self.host_id), json.dumps(self.view), px=int(max(3.0, 3 * self.settings.ha_datastore_heartbeat_period) * 1000))
            self.redis_ok_at = now
        except redis.RedisError:
            pass
        if not cfg.get("enabled"):
            return
        if self.redis_ok_at == now:
            if self.isolated:
                log.warning("HA: Redis reachable again: no longer isolated")
                self.isolated = False
                self.released_until = now + 60.0  # keep telling peers what was released, for a while
            if self.released_until is not None and now > self.released_until:
                self.released.clear()
                self.released_until = None
            return
        # Redis silent: do the isolation addresses answer?
        timeout = self.settings.ha_probe_timeout
        if any(probe(a, timeout) for a in cfg.get("isolation_addresses", [])):
            self.probe_ok_at = self.clock()
        isolated, why = ha.isolated(ha.IsolationView(self.clock(), self.since, self.redis_ok_at, self.probe_ok_at), float(cfg.get("isolation_delay_s", 5.0)))
        if isolated and not self.isolated:
            self.isolated = True
            if not self.respond_in_thread:
                self.respond(cfg, why)
            elif self.responding is None or not self.responding.is_alive():
                # Stopping VMs goes through libvirt: off this thread, so that a hung libvirtd
                # never stops the view being published once the link is back.
                self.responding = threading.Thread(target=self.respond, args=(cfg, why), name="agent-ha-isolation-response", daemon=True)
                self.responding.start()

    def step(self) -> None:
        """Both halves once (tests step them in order on an injected clock)."""
        self.refresh_holds()
        self.datastore_step()
        self.network_step()

    def respond(self, cfg: dict[str, Any], why: str) -> None:
        overrides = cfg.get("overrides", {})
        default = cfg.get("isolation_response", "leave-powered-on")
        running = self.refresh_holds()
        log.warning("HA: host isolated (%s); response %s for %d running VMs", why, default, len(running))
        for uuid in running:
            response = ha.IsolationResponse(overrides.get(uuid, default))
            for vm, action in ha.isolation_actions(response, [uuid]):
                try:
                    with self.agent.driver_lock:
                        if action == "stop":
                            self.agent.driver.stop(vm)
                        else:
                            self.agent.driver.shutdown(vm, float(cfg.get("shutdown_timeout_s", 30.0)))
                    self.released.add(vm)
                    self.holds = [u for u in self.holds if u != vm]
                    log.warning("HA isolation response: %s %s (disks released)", action, vm)
                except Exception as exc:
                    log.error("HA isolation response %s of %s failed: %s", action, vm, exc)
        self.write_heartbeats()
