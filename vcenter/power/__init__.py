"""Host power control for DPM and HA: drivers that switch a physical host on and off.

See :mod:`vcenter.power.drivers` for the driver protocol, its error codes, the power types
(built in, and those plugins provide) and ``make_driver``.
"""

from vcenter.power.drivers import (
    BMC_AUTH_FAILED,
    BMC_UNREACHABLE,
    POWER_ACTION_FAILED,
    IpmiDriver,
    PowerDriver,
    PowerError,
    PowerType,
    RedfishDriver,
    WakeOnLanDriver,
    make_driver,
)

__all__ = [
    "BMC_AUTH_FAILED",
    "BMC_UNREACHABLE",
    "POWER_ACTION_FAILED",
    "IpmiDriver",
    "PowerDriver",
    "PowerError",
    "PowerType",
    "RedfishDriver",
    "WakeOnLanDriver",
    "make_driver",
]
