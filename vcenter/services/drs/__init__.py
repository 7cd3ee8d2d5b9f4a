"""DRS and DPM: a cluster's balance and its power.

- ``drs``: the balancer's recommendations, applied as VMotions (automatically in fully
  automated clusters), dismissed, or asked what-if; waking a standby host when the powered-on
  hosts cannot hold the demand.
- ``dpm``: demand samples, and hosts put into standby (after their evacuation) or powered on.

Stands on vcenter.services.compute (migration, maintenance mode), vcenter.services.ha (the
capacity HA reserves), vcenter.services.monitoring (measured demand) and
vcenter.services.inventory (host power).
"""
