"""vSphere HA: keep VMs running when their host fails.

- ``ha``: a cluster's HA configuration and per-VM overrides, admission control (whether a
  power-on or a migration leaves the failover capacity the policy reserves), and the
  monitor's fenced writes (declarations, restart Tasks, VM-monitoring resets, standby hosts
  woken for restarts).
- ``ha_manager``: the monitor's loop, written once against an environment.
- ``ha_monitor``: that loop's production environment, the ``vcenter ha`` process.

Stands on vcenter.services.inventory (including host power, to wake standby hosts) and
vcenter.services.tasks; compute consults its admission control, DRS and DPM its reserve, so
it sits below them.
"""
