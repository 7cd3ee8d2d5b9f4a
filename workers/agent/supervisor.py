"""The agent's supervisor: `vcenter agent` runs the agent in a child process and starts it again
when it dies of anything but a clean exit or a stop request.

Why: the agent's heartbeats (its Redis key, its datastore heartbeat files) tell HA that the
HOST is alive. A crash of the agent process alone must not silence them for long, or HA
declares the host failed and tries to restart VMs that still run there (QEMU's image locks
refuse, but the host is left out of HA meanwhile). Measured with libvirt 9.0's client: when
libvirtd hangs long enough for keepalive to close the connection, a call still in flight on
it may crash the whole process (SIGSEGV, a use-after-free inside libvirt) once the daemon
answers again or dies (tests/libvirtd/test_ha_agent.py shows the hang; the crash is
libvirt's). Restarted, the agent beats again within a second or two (less than HA's detection
time), and its datastore heartbeats resume from the expectations it kept on disk
(workers.agent.service), before libvirt is reachable.

Vocabulary: the child is a fork taken before any thread or libvirt connection exists;
SIGTERM/SIGINT to the supervisor are passed on to the child and end supervision; a child that
ends deliberately (returns, or raises SystemExit: no credential, registration refused) or is
stopped by them is not restarted, and its status is the supervisor's; any other end (a signal
such as SIGSEGV, an unhandled exception) is logged and the child is started again after
``agent_restart_delay``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exited with status {os.WEXITSTATUS(status)}"


DELIBERATE = 78  # the child's status for a SystemExit with a message (EX_CONFIG): not restarted


def exit_status(exc: SystemExit) -> int:
    """The process status for an agent that raised ``exc``: its number, 0 for none, and
    DELIBERATE for a message (no credential, registration refused), which is written to stderr.
    The same under this supervisor and under systemd (whose unit does not restart DELIBERATE)."""
    if isinstance(exc.code, int):
        return exc.code
    if exc.code is None:
        return 0
    sys.stderr.write(f"{exc.code}\n")
    return DELIBERATE


def supervise(run: Callable[[], None], restart_delay: float, max_restarts: int | None = None) -> tuple[int, int]:
    """Run ``run`` in a forked child until it ends deliberately; restart it when it dies.
    Returns (the last child's exit status, restarts); ``max_restarts`` bounds them (tests)."""
    stopping = False
    child = 0

    def forward(signum, _frame) -> None:
        nonlocal stopping
        stopping = True
        if child:
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    restarts = 0
    try:
        while True:
            child = os.fork()
            if child == 0:
                for s, handler in previous.items():
                    signal.signal(s, handler)
                code = 1
                try:
                    run()
                    code = 0
                except SystemExit as exc:
                    code = exit_status(exc)
                except BaseException:
                    log.exception("agent failed")
                finally:
                    logging.shutdown()
                    os._exit(code)
            while True:
                try:
                    _, status = os.waitpid(child, 0)
                    break
                except InterruptedError:
                    continue
            child = 0
            code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
            if stopping or (os.WIFEXITED(status) and code in (0, DELIBERATE)):
                return code, restarts
            if max_restarts is not None and restarts >= max_restarts:
                log.error("agent %s; not restarted (limit %d)", describe(status), max_restarts)
                return code, restarts
            restarts += 1
            log.error("agent %s; restarting it in %.1f s (restart %d)", describe(status), restart_delay, restarts)
            time.sleep(restart_delay)
            if stopping:
                return code, restarts
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
