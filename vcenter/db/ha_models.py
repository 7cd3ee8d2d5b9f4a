"""HA's persisted state: what the monitor declared about each host, which VMs wait for a
restart (and why), and the monitor's fencing token. A standby monitor that takes over reads
these, so a declaration or a retry count survives the active monitor's death.

Imported by ``vcenter.db.models`` (same metadata, same migrations)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from vcenter.core.clock import utcnow
from vcenter.db.models import Base


class HaHostState(Base):
    """The monitor's verdict on a host: connected / isolated / failed, since when, with the
    evidence (channel ages on the monitor's clock)."""

    __tablename__ = "ha_host_states"
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), primary_key=True)
    health: Mapped[str] = mapped_column(String(16), default="connected")
    since: Mapped[datetime] = mapped_column(default=utcnow)
    reason: Mapped[str] = mapped_column(Text, default="")
    evidence: Mapped[dict[str, Any]] = mapped_column(default=dict)


class HaRestart(Base):
    """A VM HA must restart: why it runs nowhere, tries so far, when to try next, the current
    restart Task, and the last reason it waits."""

    __tablename__ = "ha_restarts"
    vm_id: Mapped[int] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"), primary_key=True)
    from_host_id: Mapped[int | None] = mapped_column(Integer)
    cause: Mapped[str] = mapped_column(String(16), default="failed")  # failed | released | fenced | crashed | stopped
    state: Mapped[str] = mapped_column(String(16), default="waiting")  # waiting | starting | gave_up
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_try_at: Mapped[datetime | None] = mapped_column()
    reason: Mapped[str] = mapped_column(Text, default="")
    task_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class HaMonitor(Base):
    """One row: the highest fencing token any monitor acted with. An HA write carries its
    monitor's token and is refused when a higher one was seen (vcenter.domain.ha.fence_ok)."""

    __tablename__ = "ha_monitor"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token: Mapped[int] = mapped_column(BigInteger, default=0)
    owner: Mapped[str] = mapped_column(String(128), default="")
    frozen: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
