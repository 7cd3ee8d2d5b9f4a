"""Host power control for DPM and HA: drivers that switch a physical host on and off.

See :mod:`vcenter.power.drivers` for the driver protocol, its error codes and ``make_driver``.
"""
from vcenter.power.drivers import (
    BMC_AUTH_FAILED,
    BMC_UNREACHABLE,
    POWER_ACTION_FAILED,
    IpmiDriver,
    LabDriver,
    PowerDriver,
    PowerError,
    RedfishDriver,
    WakeOnLanDriver,
    make_driver,
)

__all__ = [
    "BMC_AUTH_FAILED", "BMC_UNREACHABLE", "POWER_ACTION_FAILED", "IpmiDriver", "LabDriver",
    "PowerDriver", "PowerError", "RedfishDriver", "WakeOnLanDriver", "make_driver",
]
