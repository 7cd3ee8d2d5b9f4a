"""Data protection: snapshots and backups of VMs (clones are the library's).

- ``snapshots``: snapshots (create, revert, delete).
- ``backups``: backups of running VMs, restores, and scheduled jobs with retention.

Stands on vcenter.services.library (the cloud-init seed naming a restore shares with
deploy and clones), vcenter.services.compute (placement), vcenter.services.inventory and
vcenter.services.tasks.
"""
