"""Housekeeping: the orchestrator's periodic passes that keep the records true and small.

- ``reaper``: the task reaper (expired leases re-sent, reconciled or ended; queued tasks no
  agent took), the host monitor (hosts whose agent fell silent), waiting sagas advanced, and
  the purge of old events and refused-credential counts.
- ``upload_cleanup``: expired, abandoned or stray files of the upload folder.
- ``server_backup``: the server's own backup archive (database rows, key directory) and its
  restore (`vcenter backup`, `vcenter restore`).

The top of the service contexts: it asks the operations and orchestration about lost tasks.
"""
