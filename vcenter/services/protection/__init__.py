"""Data protection: snapshots, clones and backups of VMs.

- ``snapshots``: snapshots (create, revert, delete), promote, and clones of a VM.
- ``backups``: backups of running VMs, restores, and scheduled jobs with retention.

Stands on vcenter.services.library (the cloud-init seed naming a clone or a restore shares
with deploy), vcenter.services.compute (placement), vcenter.services.inventory and
vcenter.services.tasks.
"""
