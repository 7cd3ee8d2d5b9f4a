"""Calls into libvirt that the agent's periodic loops may give up on.

Why: with libvirt 9.0, a call in flight when libvirtd stops answering may never return, even
after keepalive closed the connection and the agent's watchdog opened a new one (measured:
tests/libvirtd/test_ha_agent.py). A loop that makes such a call itself would stop for good.
``BoundedCalls.call`` runs the call on a helper thread and waits a bounded time: a call that
does not answer in time is abandoned (its thread is left behind, counted as stuck until it
returns, if ever) and the loop goes on; the next period's call uses whatever connection the
driver has then. At most ``max_stuck`` calls are left hanging at once; beyond that no new
call is made until one returns.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class BoundedCalls:
    def __init__(self, name: str, max_stuck: int = 3) -> None:
        self.name = name
        self.max_stuck = max_stuck
        self.stuck = 0
        self.timed_out = False  # the last call was abandoned
        self._lock = threading.Lock()

    def call(self, fn: Callable[[], Any], wait: float) -> tuple[bool, Any]:
        """(True, result) when ``fn`` returned within ``wait`` seconds; (False, None) when it
        raised, did not answer in time, or too many calls hang already."""
        with self._lock:
            self.timed_out = False
            if self.stuck >= self.max_stuck:
                return False, None
        box: dict[str, Any] = {}
        done = threading.Event()

        def run() -> None:
            try:
                box["result"] = fn()
            except Exception:
                pass
            finally:
                with self._lock:
                    done.set()
                    if box.get("abandoned"):
                        self.stuck -= 1

        threading.Thread(target=run, name=self.name, daemon=True).start()
        if not done.wait(wait):
            with self._lock:
                if not done.is_set():
                    box["abandoned"] = True
                    self.stuck += 1
                    self.timed_out = True
                    return False, None
        return ("result" in box), box.get("result")
