"""Host certificates of the cluster CA: serial, expiry and revocation of every certificate
issued to a host (the CRL is made from the revoked ones)

Revision ID: 0021
Revises: 0020
"""

from alembic import op
import sqlalchemy as sa
import vcenter.db.models


revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = vcenter.db.models.UTCDateTime(timezone=True)
    op.create_table(
        "host_certificates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=True),
        sa.Column("host_name", sa.String(length=255), nullable=False),
        sa.Column("serial", sa.String(length=48), nullable=False),
        sa.Column("issued_at", ts, nullable=False),
        sa.Column("not_after", ts, nullable=False),
        sa.Column("revoked_at", ts, nullable=True),
        sa.Column("revocation_reason", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(["host_id"], ["hosts.id"], name=op.f("fk_host_certificates_host_id_hosts"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_host_certificates")),
        sa.UniqueConstraint("serial", name=op.f("uq_host_certificates_serial")),
    )
    op.create_index(op.f("ix_host_certificates_host_id"), "host_certificates", ["host_id"], unique=False)
    op.create_index(op.f("ix_host_certificates_not_after"), "host_certificates", ["not_after"], unique=False)
    op.create_index(op.f("ix_host_certificates_revoked_at"), "host_certificates", ["revoked_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_host_certificates_revoked_at"), table_name="host_certificates")
    op.drop_index(op.f("ix_host_certificates_not_after"), table_name="host_certificates")
    op.drop_index(op.f("ix_host_certificates_host_id"), table_name="host_certificates")
    op.drop_table("host_certificates")
