"""The template library: what a template is on a datastore, and the appliance formats.

- ``manifest``: a template's manifest (hardware, guest OS, disks with checksums, version,
  origin), stored as ``manifest.json`` beside its images in ``templates/<dir>/``.
- ``ovf`` / ``ova``: OVF descriptors read with a hardened XML parser (defusedxml) and written
  with ElementTree; OVA archives read member by member (no path, no link ever extracted) and
  written as tar with the descriptor first and a SHA-256 manifest.
- ``cloudinit``: NoCloud seeds (meta-data, user-data, network-config) and their ISO image
  (volume label ``cidata``).

Nothing here talks to the database, a queue or libvirt: the agent and the services call it.
"""
