"""Inventory: the objects an operator sees in the vSphere tree and their records.

Datacenters, folders, clusters (with their validated settings documents), hosts (add,
register, trust, remove, host power in and out of standby), datastores, port groups and
resource pools; generic listing with filters and pages; how a VM row becomes the spec its host
defines it from; and the seeding of a large invented inventory for benchmarks.

Stands on vcenter.services.tasks only (Tasks and Events); every context above reads its
objects through ``inventory.get`` and ``inventory.ref``.
"""
