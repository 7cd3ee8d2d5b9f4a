"""Switches with uplinks: a datacenter's switch names its uplink NICs; a port group on a switch
is a VLAN of them (0 = untagged); a host reports its NICs and whether its kernel has 802.1Q;
a port group's host link keeps why the host could not make it

Revision ID: 0020
Revises: 0019
"""

from alembic import op
import sqlalchemy as sa
import vcenter.db.models


revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "switches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("datacenter_id", sa.Integer(), nullable=False),
        sa.Column("uplinks", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", vcenter.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", vcenter.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["datacenter_id"], ["datacenters.id"], name=op.f("fk_switches_datacenter_id_datacenters"), ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_switches")),
        sa.UniqueConstraint("datacenter_id", "name", name="uq_switches_dc_name"),
    )
    with op.batch_alter_table("switches") as batch:
        batch.create_index(batch.f("ix_switches_datacenter_id"), ["datacenter_id"], unique=False)
    with op.batch_alter_table("portgroups") as batch:
        batch.add_column(sa.Column("switch_id", sa.Integer(), nullable=True))
        batch.create_index(batch.f("ix_portgroups_switch_id"), ["switch_id"], unique=False)
        batch.create_foreign_key(batch.f("fk_portgroups_switch_id_switches"), "switches", ["switch_id"], ["id"], ondelete="RESTRICT")
    with op.batch_alter_table("portgroup_hosts") as batch:
        batch.add_column(sa.Column("error_code", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("error_message", sa.String(length=500), nullable=True))
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("nics", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("vlan_8021q", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("vlan_8021q")
        batch.drop_column("nics")
    with op.batch_alter_table("portgroup_hosts") as batch:
        batch.drop_column("error_message")
        batch.drop_column("error_code")
    with op.batch_alter_table("portgroups") as batch:
        batch.drop_constraint(batch.f("fk_portgroups_switch_id_switches"), type_="foreignkey")
        batch.drop_index(batch.f("ix_portgroups_switch_id"))
        batch.drop_column("switch_id")
    with op.batch_alter_table("switches") as batch:
        batch.drop_index(batch.f("ix_switches_datacenter_id"))
    op.drop_table("switches")
