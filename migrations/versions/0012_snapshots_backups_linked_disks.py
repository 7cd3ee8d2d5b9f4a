"""VM snapshots, backup jobs and restore points, linked-clone disks' backing file

Revision ID: 0012
Revises: 0011
"""

from alembic import op
import sqlalchemy as sa
import vcenter.db.models


revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("vm_disks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("backing_file", sa.String(length=255), nullable=True))

    op.create_table(
        "vm_snapshots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("vm_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("memory", sa.Boolean(), nullable=False),
        sa.Column("power_state", sa.String(length=16), nullable=False),
        sa.Column("current", sa.Boolean(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.Column("created_at", vcenter.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["parent_id"], ["vm_snapshots.id"], name=op.f("fk_vm_snapshots_parent_id_vm_snapshots"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["vm_id"], ["vms.id"], name=op.f("fk_vm_snapshots_vm_id_vms"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vm_snapshots")),
        sa.UniqueConstraint("vm_id", "name", name="uq_vm_snapshots_vm_name"),
    )
    with op.batch_alter_table("vm_snapshots", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_vm_snapshots_vm_id"), ["vm_id"], unique=False)

    op.create_table(
        "backup_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("vm_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("datastore_id", sa.Integer(), nullable=False),
        sa.Column("directory", sa.String(length=1024), nullable=False),
        sa.Column("interval_s", sa.Float(), nullable=True),
        sa.Column("keep", sa.Integer(), nullable=False),
        sa.Column("incremental", sa.Boolean(), nullable=False),
        sa.Column("full_every", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("last_run_at", vcenter.db.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", vcenter.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", vcenter.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["datastore_id"], ["datastores.id"], name=op.f("fk_backup_jobs_datastore_id_datastores"), ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["vm_id"], ["vms.id"], name=op.f("fk_backup_jobs_vm_id_vms"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backup_jobs")),
        sa.UniqueConstraint("vm_id", "name", name="uq_backup_jobs_vm_name"),
    )
    with op.batch_alter_table("backup_jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_backup_jobs_datastore_id"), ["datastore_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_backup_jobs_vm_id"), ["vm_id"], unique=False)

    op.create_table(
        "backups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("vm_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("checkpoint", sa.String(length=80), nullable=True),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.Column("created_at", vcenter.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("completed_at", vcenter.db.models.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["backup_jobs.id"], name=op.f("fk_backups_job_id_backup_jobs"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["parent_id"], ["backups.id"], name=op.f("fk_backups_parent_id_backups"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["vm_id"], ["vms.id"], name=op.f("fk_backups_vm_id_vms"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backups")),
    )
    with op.batch_alter_table("backups", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_backups_job_id"), ["job_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_backups_state"), ["state"], unique=False)
        batch_op.create_index(batch_op.f("ix_backups_vm_id"), ["vm_id"], unique=False)


def downgrade() -> None:
    op.drop_table("backups")
    op.drop_table("backup_jobs")
    op.drop_table("vm_snapshots")
    with op.batch_alter_table("vm_disks", schema=None) as batch_op:
        batch_op.drop_column("backing_file")
