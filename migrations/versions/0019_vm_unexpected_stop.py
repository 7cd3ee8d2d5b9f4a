"""VM unexpected stop: a stop nobody asked for (QEMU died: "crashed"; found shut off by a host
report while the inventory had it running: "unobserved"), recorded by the reports and consumed
once by the HA monitor, which restarts the VM when its cluster has HA (cause "crashed")

Revision ID: 0019
Revises: 0018
"""

from alembic import op
import sqlalchemy as sa


revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("vms") as batch:
        batch.add_column(sa.Column("unexpected_stop", sa.String(length=16), nullable=True))
        # The HA monitor looks for the (almost always no) marked rows on every pass.
        batch.create_index(batch.f("ix_vms_unexpected_stop"), ["unexpected_stop"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("vms") as batch:
        batch.drop_index(batch.f("ix_vms_unexpected_stop"))
        batch.drop_column("unexpected_stop")
