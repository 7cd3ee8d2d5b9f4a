"""template library, guest customisations (cloud-init seeds), uploads and exports

Revision ID: 0013
Revises: 0012
"""

from alembic import op
import sqlalchemy as sa
import vcenter.db.models


revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = vcenter.db.models.UTCDateTime(timezone=True)
    op.create_table(
        "templates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("datacenter_id", sa.Integer(), nullable=False),
        sa.Column("datastore_id", sa.Integer(), nullable=False),
        sa.Column("dir", sa.String(length=1024), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("guest_os", sa.String(length=64), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("memory_mib", sa.Integer(), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("origin", sa.JSON(), nullable=False),
        sa.Column("boot", sa.JSON(), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.ForeignKeyConstraint(["datacenter_id"], ["datacenters.id"], name=op.f("fk_templates_datacenter_id_datacenters"), ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["datastore_id"], ["datastores.id"], name=op.f("fk_templates_datastore_id_datastores"), ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_templates")),
        sa.UniqueConstraint("datacenter_id", "name", "version", name="uq_templates_dc_name_version"),
    )
    op.create_index(op.f("ix_templates_datacenter_id"), "templates", ["datacenter_id"], unique=False)
    op.create_index(op.f("ix_templates_datastore_id"), "templates", ["datastore_id"], unique=False)
    op.create_index(op.f("ix_templates_state"), "templates", ["state"], unique=False)
    op.create_table(
        "vm_customizations",
        sa.Column("vm_id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.String(length=64), nullable=False),
        sa.Column("machine_id", sa.String(length=32), nullable=False),
        sa.Column("hostname", sa.String(length=63), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.ForeignKeyConstraint(["vm_id"], ["vms.id"], name=op.f("fk_vm_customizations_vm_id_vms"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("vm_id", name=op.f("pk_vm_customizations")),
        sa.UniqueConstraint("instance_id", name=op.f("uq_vm_customizations_instance_id")),
        sa.UniqueConstraint("machine_id", name=op.f("uq_vm_customizations_machine_id")),
    )
    op.create_table(
        "uploads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("username", sa.String(length=80), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.Column("created_at", ts, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_uploads")),
    )


def downgrade() -> None:
    op.drop_table("uploads")
    op.drop_table("vm_customizations")
    op.drop_index(op.f("ix_templates_state"), table_name="templates")
    op.drop_index(op.f("ix_templates_datastore_id"), table_name="templates")
    op.drop_index(op.f("ix_templates_datacenter_id"), table_name="templates")
    op.drop_table("templates")
