"""The use cases, one package per bounded context, named as a vCenter operator names it.

Each context stands only on those below it (import-linter contract "service contexts stand
on the contexts below them", pyproject.toml):

    housekeeping    the reaper, the host monitor, purges, upload cleanup
    orchestration   agents' reports and a user's cancel, routed to the operations
    operations      the operation objects by Task kind
    drs, protection DRS and DPM; snapshots and backups
    library,        templates, deploy, clones, import and export, uploads;
      monitoring    metrics, alarms, the dashboard's reads
    access, compute users, sessions, roles, permissions; VMs, placement, EVC, migration,
                    relocation, maintenance mode
    ha              vSphere HA: configuration, admission control, the monitor
    inventory       the inventory's objects, host lifecycle and power, listing, VM specs
    tasks           Tasks and Events (task record, outbox, event log, process wiring)

This file imports nothing: a context is imported by its own name.
"""
