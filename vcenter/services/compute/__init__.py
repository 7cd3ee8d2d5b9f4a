"""Compute: where a VM runs and how it moves (vCenter's VM actions and host maintenance).

- ``vms``: create, power actions with vCenter's meaning, reconfigure, delete; ``console``: a
  VM's console tickets.
- ``placement``: the dry run, the choice of a host, power-on admission, DRS rules.
- ``evc``: a cluster's CPU baseline, which placement and migration require.
- ``migration``: VMotion and Storage VMotion, their checks and per-host slots;
  ``relocation``: a powered-off VM's cold move; ``maintenance_mode``: a host's evacuation into
  maintenance or standby, and its way out.

Stands on vcenter.services.ha (admission control on power-on and migration),
vcenter.services.inventory and vcenter.services.tasks; what happens when an agent reports is
the operations' (vcenter.services.operations).
"""
