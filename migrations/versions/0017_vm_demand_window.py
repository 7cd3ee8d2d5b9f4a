"""VM demand window: the last CPU-demand samples of a running VM, from which its spread (the
noise told apart from the trend, vcenter.domain.demand.noise_spread) is computed at each report;
the spread DRS uses is the one the API shows

Revision ID: 0017
Revises: 0016
"""

from alembic import op
import sqlalchemy as sa


revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("vm_stats") as batch:
        batch.add_column(sa.Column("cpu_demand_window", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("vm_stats") as batch:
        batch.drop_column("cpu_demand_window")
