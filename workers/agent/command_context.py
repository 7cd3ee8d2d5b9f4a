"""The command an agent worker thread is running: set by the dispatcher (workers.agent.commands)
for the duration of one command, read by the long operations that report progress on its Task
or answer its cancel (migration, relocation, snapshots and backups, templates)."""

from __future__ import annotations

import contextvars

from vcenter.messaging.contracts import Command

CURRENT_COMMAND: contextvars.ContextVar[Command] = contextvars.ContextVar("current_command")
