"""The cluster CA (vCenter's VMCA): the server's certificate authority that gives every host its
TLS certificate (libvirtd's listener, peer-to-peer migration, QEMU's migration streams),
records what it issued and revokes it when the host leaves the inventory.

- ``authority``: the CA's key and certificate in key_dir, signing certificates and CRLs.
- ``host_certificates``: issuing a host's certificate from its CSR, the issued certificates
  per host (serial, expiry, revocation) and the CRL.
"""
