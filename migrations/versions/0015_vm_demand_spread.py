"""VM demand spread: the exponentially weighted standard deviation of measured CPU demand,
which DRS uses to tell a real gain from measurement noise

Revision ID: 0015
Revises: 0014
"""

from alembic import op
import sqlalchemy as sa


revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("vm_stats") as batch:
        batch.add_column(sa.Column("cpu_demand_spread_mhz", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("vm_stats") as batch:
        batch.drop_column("cpu_demand_spread_mhz")
