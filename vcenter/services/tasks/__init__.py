"""Tasks and Events, as vCenter's Monitor tab names them: the record every context writes.

- ``tasks``: every long operation is a Task row; its claim on its object, its command to a host
  agent, its lease and how it ends.
- ``outbox``: commands leave only after the transaction that wrote their Task committed.
- ``events``: the append-only record of every change (who, what, when, which object, why).
- ``runtime``: the process-wide wiring these run in (settings, sessions, Celery, Redis).

The lowest of the service contexts: every other context starts tasks and writes events, so
nothing here imports another context. What happens to a Task after it started (agents'
reports, a cancel) is vcenter.services.orchestration's; the operations themselves are
vcenter.services.operations'.
"""
