"""Content library: templates, deploys from them, imports and exports.

- ``templates``: convert a VM into a template and back, deploy (linked or full clones with a
  cloud-init seed), import (OVF/OVA, disk images) and export.
- ``clones``: clones of a VM (full, or linked on a frozen base) and the promotion of a linked
  clone to standalone disks.
- ``uploads``: the files the server keeps for agents to pull (imports) or that agents pushed
  (exports), with their size limit and checksum.

Stands on vcenter.services.compute (placement and EVC of a deployed VM), vcenter.services.access
(who may use a datastore), vcenter.services.inventory and vcenter.services.tasks.
"""
