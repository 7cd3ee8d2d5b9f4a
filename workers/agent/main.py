"""`vcenter agent`: the host agent process. A Celery worker (threads pool: a libvirt
connection and its event loop do not survive a fork) consuming only ``host.<id>``, plus the
heartbeat, state-report, lifecycle-event and reconnect threads of AgentService."""

from __future__ import annotations

import logging
import socket
import time
import uuid
from pathlib import Path

import httpx
from kombu import Queue

from vcenter.core.host_pki import pki_files
from vcenter.core.logging import celery_quiet
from vcenter.core.settings import Settings
from vcenter.hypervisor.base import DriverError, HypervisorDriver
from vcenter.messaging.celery_app import make_celery
from vcenter.messaging.contracts import AGENT_EXECUTE_TASK, host_queue
from workers.agent import commands
from workers.agent.api_client import ApiClient
from workers.agent.identity import (
    Credential,
    load_command_public_key,
    load_credential,
    load_or_create_identity,
    save_command_public_key,
    save_credential,
)
from workers.agent.network import make_network
from workers.agent.service import AgentService
from workers.agent.tls import api_verify
from workers.agent.trust import CommandGate, make_gate

log = logging.getLogger(__name__)


def make_driver(settings: Settings, simulated: bool) -> HypervisorDriver:
    if simulated:
        from vcenter.hypervisor.simulated import SimulatedDriver

        # Its port-group bridges are simulated too: the driver accepts any bridge name. Its
        # host UUID is stable per state directory, as a real host's is.
        stable = str(uuid.uuid5(uuid.NAMESPACE_URL, f"virtcenter-simulated:{Path(settings.agent_state_dir).resolve()}"))
        return SimulatedDriver(hostname=f"sim-{stable[:8]}", host_uuid=stable, existing_bridges=None)
    from vcenter.hypervisor.libvirt.driver import LibvirtDriver

    return LibvirtDriver(settings.libvirt_uri, declared_cpu_xml=settings.agent_declared_cpu_xml, balloon_stats_period=settings.agent_balloon_stats_period)


# Refusals that a fresh nonce cures: the operator confirmed between the challenge and the
# register call (the nonce names the old trust state), or the call came too late.
_RETRY_WITH_NEW_NONCE = {"REGISTRATION_NONCE_STALE", "REGISTRATION_NONCE_EXPIRED"}


def _error_code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None


def register_until_trusted(settings: Settings, driver: HypervisorDriver, registration_token: str, verify: object = True) -> Credential:
    """Present the one-time token with the libvirt host UUID and the certificate, signing a
    fresh server nonce with the certificate's key on each call (the proof that this host holds
    the key whose thumbprint the operator confirms); wait (polling) until the operator
    confirms, then keep the credential and the server's command public key that comes with it."""
    state_dir = Path(settings.agent_state_dir)
    while True:
        try:
            driver.connect()
            facts = driver.host_facts()
            break
        except DriverError as exc:
            log.warning("registration waits for the hypervisor: %s", exc)
            time.sleep(settings.agent_reconnect_delay)
    identity = load_or_create_identity(state_dir, facts.hostname)
    thumbprint = identity.thumbprint
    log.info("registering host UUID %s; certificate thumbprint %s", facts.host_uuid, thumbprint)
    announced = False
    with httpx.Client(base_url=settings.public_url.rstrip("/"), timeout=10, verify=verify) as client:
        while True:
            try:
                challenge = client.post("/api/v1/agent/register/challenge", json={"registration_token": registration_token})
                if challenge.status_code >= 400:
                    raise SystemExit(f"registration refused: {challenge.status_code} {challenge.text}")
                nonce = challenge.json()["nonce"]
                body = {
                    "registration_token": registration_token,
                    "host_uuid": facts.host_uuid,
                    "hostname": facts.hostname,
                    "nonce": nonce,
                    **identity.registration_proof(nonce, registration_token, facts.host_uuid),
                }
                response = client.post("/api/v1/agent/register", json=body)
            except httpx.HTTPError as exc:
                log.warning("registration: server unreachable (%s)", exc)
                time.sleep(settings.agent_reconnect_delay)
                continue
            if response.status_code == 401 and _error_code(response) in _RETRY_WITH_NEW_NONCE:
                log.info("registration: %s; asking for a new nonce", _error_code(response))
                time.sleep(0.1)
                continue
            if response.status_code >= 400:
                raise SystemExit(f"registration refused: {response.status_code} {response.text}")
            answer = response.json()
            if answer.get("agent_token"):
                credential = Credential(host_id=answer["host_id"], token=answer["agent_token"])
                if answer.get("command_public_key"):
                    save_command_public_key(state_dir, answer["command_public_key"])
                save_credential(state_dir, credential)
                log.info("registered and trusted as host %s", credential.host_id)
                return credential
            if not announced:
                log.warning("waiting for the operator to confirm thumbprint %s of host %s", thumbprint, answer["host_id"])
                announced = True
            time.sleep(settings.agent_reconnect_delay)


def resolve_credential(settings: Settings, driver: HypervisorDriver, verify: object = True) -> Credential:
    if settings.agent_host_id is not None and settings.agent_token:
        return Credential(settings.agent_host_id, settings.agent_token)
    stored = load_credential(Path(settings.agent_state_dir))
    if stored is not None:
        return stored
    if settings.agent_registration_token:
        return register_until_trusted(settings, driver, settings.agent_registration_token, verify)
    raise SystemExit("no credential: give --registration-token (first start) or --host-id with --token")


def command_gate(settings: Settings, host_id: int) -> CommandGate:
    """The gate that admits only commands the server signed for this host: the public key of
    VCENTER_COMMAND_PUBLIC_KEY, or the one received at registration."""
    state_dir = Path(settings.agent_state_dir)
    pem = settings.command_public_key or load_command_public_key(state_dir)
    if not pem:
        raise SystemExit(
            "no command public key: this agent cannot verify commands. Set VCENTER_COMMAND_PUBLIC_KEY (`vcenter command-key` on the server prints it) or register again with a new registration token"
        )
    gate = make_gate(pem, host_id, state_dir, settings.command_clock_skew, settings.agent_replay_retention, settings.agent_replay_max)
    log.info("commands are verified with the server key %s; %d reported commands remembered", gate.verifier.key_id, len(gate.replay))
    return gate


def start_console_endpoint(settings: Settings, driver: HypervisorDriver, gate: CommandGate, agent: AgentService) -> None:
    """The TLS endpoint the server reaches to relay a VM's serial console (workers.agent.console);
    a port already taken leaves the agent running without consoles."""
    from workers.agent.console import ConsoleEndpoint

    try:
        files = pki_files(Path(settings.agent_pki_ca_dir), Path(settings.agent_pki_libvirt_dir), Path(settings.agent_pki_qemu_dir))
        ConsoleEndpoint(
            driver,
            gate.verifier,
            Path(settings.agent_state_dir),
            settings.agent_address or "0.0.0.0",
            settings.agent_console_port,
            settings.agent_replay_retention,
            agent.stop_event,
            cluster_cert=(files.cert[0], files.key[0]),
        ).start()
    except OSError as exc:
        log.warning("console endpoint not started on port %s: %s", settings.agent_console_port, exc)


def start_host_tls(settings: Settings, api: ApiClient, agent: AgentService) -> None:
    """The host's TLS certificate from the cluster CA (workers.agent.host_tls): installed now,
    before the agent consumes commands (a migration needs it), then kept current."""
    from workers.agent.host_tls import HostTls

    host_tls = HostTls(settings, api, socket.gethostname())
    try:
        host_tls.refresh()
    except Exception as exc:  # the periodic refresh tries again; the agent works without TLS
        log.warning("host TLS certificate not installed: %s", exc)
    host_tls.start(agent.stop_event)


def hypervisor_answers(driver: HypervisorDriver) -> None:
    if not driver.is_alive():
        raise DriverError("the hypervisor connection is down")


def observe_agent(settings: Settings, agent: AgentService) -> None:
    """The agent's liveness (its heartbeat loop), Celery task counters and listener: ready when
    Redis and the hypervisor answer."""
    from vcenter.observability import celery_probe
    from vcenter.observability.listener import LoopWatch, start_listener

    watch = LoopWatch(settings.process_stall_after)
    agent.on_heartbeat = watch.stamp
    celery_probe.count_tasks()
    start_listener("agent", settings.agent_metrics_listen, watch, {"redis": agent.redis.ping, "hypervisor": lambda: hypervisor_answers(agent.driver)}, settings.metrics_token)


def run_agent(settings: Settings, simulated: bool = False) -> None:
    driver = make_driver(settings, simulated)
    verify = api_verify(settings)
    credential = resolve_credential(settings, driver, verify)
    host_id = credential.host_id
    gate = command_gate(settings, host_id)
    api = ApiClient(settings.public_url, host_id, credential.token, retry_delay=settings.agent_reconnect_delay, verify=verify)
    network = make_network(settings, simulated)
    agent = AgentService(settings, host_id, driver, api, network, command_gate=gate)
    observe_agent(settings, agent)
    if not simulated:
        start_host_tls(settings, api, agent)
    app = make_celery(settings)
    queue = host_queue(host_id)
    app.conf.task_queues = [Queue(queue)]
    app.conf.task_default_queue = queue

    @app.task(name=AGENT_EXECUTE_TASK, acks_late=True, reject_on_worker_lost=True)
    def execute(payload: dict) -> dict:
        return commands.execute(agent, payload)

    agent.start()
    if not simulated:
        start_console_endpoint(settings, driver, gate, agent)
    log.info("agent for host %s consuming %s, hypervisor %s", host_id, queue, "simulated" if simulated else settings.libvirt_uri)
    try:
        app.worker_main(
            [
                *celery_quiet(settings.log_json),
                "worker",
                "--pool=threads",
                f"--concurrency={settings.agent_concurrency}",
                f"--queues={queue}",
                f"--hostname=agent-{host_id}@%h",
                "--without-gossip",
                "--without-mingle",
                "--loglevel=INFO",
            ]
        )
    finally:
        agent.stop()
