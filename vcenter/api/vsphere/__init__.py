"""The vSphere Automation REST API, the subset virtcenter serves (issue 19): what people's
existing playbooks and scripts against vCenter call, translated onto our own services.

One concern per module: ``route`` (HTTPS only, vSphere's error mapping, out of our OpenAPI),
``errors`` (vSphere's error body), ``sessions`` (login, the session header, the caller),
``ids`` (vSphere identifiers), ``filters`` (vSphere's list filters), ``shapes`` (our objects as
vSphere's Summary/Info), ``inventory`` (the reads), ``vm_hardware`` (a VM's power state and
hardware, read), ``unserved`` (404 OPERATION_NOT_FOUND for
the rest). No rule is decided here twice: users, sessions, privileges, visibility, lockout,
audit and ids are the services' and vcenter.core's. docs/api.md, "vSphere Automation
compatibility", says what is covered.
"""

from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Mount the vSphere routes on ``app`` (the unserved catch-all last)."""
    from vcenter.api.vsphere import inventory, sessions, unserved, vm_hardware

    for module in (sessions, inventory, vm_hardware, unserved):
        app.include_router(module.router)
