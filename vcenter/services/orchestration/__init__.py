"""What moves a Task after it started: the host agents' reports and a user's cancel.

- ``reports``: task progress and results (handed to the operation registered for the task's
  kind, vcenter.services.operations), VM lifecycle events, full host state and heartbeats;
  the inventory follows the hosts' reports.
- ``cancel``: a user's cancel of a Task, queued (rolled back by its operation) or running
  (flagged for its agent).

Above the operations, which it routes to; the task record itself is vcenter.services.tasks'.
"""
