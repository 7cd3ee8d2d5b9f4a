"""Monitoring: what an operator watches (vCenter's Monitor and Summary tabs).

Performance statistics (agents' samples in, chart series out, rollups and retention), alarms
(definitions, evaluation over the inventory, acknowledge and reset, webhook actions) and the
dashboard's reads (the inventory tree, an object's summary with its triggered alarms, recent
tasks and events).

Stands on vcenter.services.inventory (alarms are set on, and evaluated over, its objects);
the event log itself is vcenter.services.tasks' because every context writes it.
"""
