"""HA state: host verdicts, pending restarts, the monitor's fencing token

Revision ID: 0014
Revises: 0013
"""

from alembic import op
import sqlalchemy as sa
import vcenter.db.models


revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = vcenter.db.models.UTCDateTime(timezone=True)
    op.create_table(
        "ha_host_states",
        sa.Column("host_id", sa.Integer(), nullable=False),
        sa.Column("health", sa.String(length=16), nullable=False),
        sa.Column("since", ts, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["host_id"], ["hosts.id"], name=op.f("fk_ha_host_states_host_id_hosts"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("host_id", name=op.f("pk_ha_host_states")),
    )
    op.create_table(
        "ha_restarts",
        sa.Column("vm_id", sa.Integer(), nullable=False),
        sa.Column("from_host_id", sa.Integer(), nullable=True),
        sa.Column("cause", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_try_at", ts, nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.Column("created_at", ts, nullable=False),
        sa.ForeignKeyConstraint(["vm_id"], ["vms.id"], name=op.f("fk_ha_restarts_vm_id_vms"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("vm_id", name=op.f("pk_ha_restarts")),
    )
    op.create_table(
        "ha_monitor",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("frozen", sa.Text(), nullable=True),
        sa.Column("updated_at", ts, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ha_monitor")),
    )


def downgrade() -> None:
    op.drop_table("ha_monitor")
    op.drop_table("ha_restarts")
    op.drop_table("ha_host_states")
