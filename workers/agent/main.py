"""`vcenter agent`: the host agent process. A Celery worker (threads pool: a libvirt
connection and its event loop do not survive a fork) consuming only ``host.<id>``, plus the
heartbeat, state-report, lifecycle-event and reconnect threads of AgentService."""
from __future__ import annotations

import logging

from kombu import Queue

from vcenter.core.settings import Settings
from vcenter.hypervisor.base import HypervisorDriver
from vcenter.messaging.celery_app import make_celery
from vcenter.messaging.contracts import AGENT_EXECUTE_TASK, host_queue
from workers.agent import commands
from workers.agent.api_client import ApiClient
from workers.agent.network import LinuxHostNetwork, SimulatedHostNetwork
from workers.agent.service import AgentService

log = logging.getLogger(__name__)


def make_driver(settings: Settings, simulated: bool) -> HypervisorDriver:
    if simulated:
        from vcenter.hypervisor.simulated import SimulatedDriver

        # Its port-group bridges are simulated too: the driver accepts any bridge name.
        return SimulatedDriver(hostname=f"sim-{settings.agent_host_id}", existing_bridges=None)
    from vcenter.hypervisor.libvirt.driver import LibvirtDriver

    return LibvirtDriver(settings.libvirt_uri)


def run_agent(settings: Settings, host_id: int, token: str, simulated: bool = False) -> None:
    driver = make_driver(settings, simulated)
    api = ApiClient(settings.public_url, host_id, token, retry_delay=settings.agent_reconnect_delay)
    network = SimulatedHostNetwork() if simulated else LinuxHostNetwork()
    agent = AgentService(settings, host_id, driver, api, network)
    app = make_celery(settings)
    queue = host_queue(host_id)
    app.conf.task_queues = [Queue(queue)]
    app.conf.task_default_queue = queue

    @app.task(name=AGENT_EXECUTE_TASK, acks_late=True, reject_on_worker_lost=True)
    def execute(payload: dict) -> dict:
        return commands.execute(agent, payload)

    agent.start()
    log.info("agent for host %s consuming %s, hypervisor %s", host_id, queue, "simulated" if simulated else settings.libvirt_uri)
    try:
        app.worker_main([
            "worker", "--pool=threads", f"--concurrency={settings.agent_concurrency}", f"--queues={queue}",
            f"--hostname=agent-{host_id}@%h", "--without-gossip", "--without-mingle", "--loglevel=INFO",
        ])
    finally:
        agent.stop()
