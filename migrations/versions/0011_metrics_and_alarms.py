"""performance statistics (metric samples, rollup watermarks) and alarms (definitions,
states, webhook deliveries), with the built-in alarm definitions

Revision ID: 0011
Revises: 0010
"""

from alembic import op
import sqlalchemy as sa
import vcenter.db.models


revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "metric_samples",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("object_type", sa.String(length=16), nullable=False),
        sa.Column("object_id", sa.Integer(), nullable=False),
        sa.Column("tier", sa.Integer(), nullable=False),
        sa.Column("at", vcenter.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("values", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metric_samples")),
        sa.UniqueConstraint("object_type", "object_id", "tier", "at", name="uq_metric_samples_object_tier_at"),
    )
    op.create_index("ix_metric_samples_tier_at", "metric_samples", ["tier", "at"], unique=False)
    op.create_table(
        "metric_rollups",
        sa.Column("tier", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("done_until", vcenter.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tier", name=op.f("pk_metric_rollups")),
    )
    definitions = op.create_table(
        "alarm_definitions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("target_type", sa.String(length=16), nullable=False),
        sa.Column("scope_type", sa.String(length=16), nullable=False),
        sa.Column("scope_id", sa.Integer(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("expression", sa.JSON(), nullable=False),
        sa.Column("actions", sa.JSON(), nullable=False),
        sa.Column("builtin", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", vcenter.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", vcenter.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarm_definitions")),
        sa.UniqueConstraint("name", name=op.f("uq_alarm_definitions_name")),
    )
    op.create_index("ix_alarm_definitions_scope", "alarm_definitions", ["scope_type", "scope_id"], unique=False)
    op.create_table(
        "alarm_states",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alarm_id", sa.Integer(), nullable=False),
        sa.Column("object_type", sa.String(length=16), nullable=False),
        sa.Column("object_id", sa.Integer(), nullable=False),
        sa.Column("object_name", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("triggered_at", vcenter.db.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("changed_at", vcenter.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_at", vcenter.db.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", sa.String(length=80), nullable=True),
        sa.ForeignKeyConstraint(["alarm_id"], ["alarm_definitions.id"], name=op.f("fk_alarm_states_alarm_id_alarm_definitions"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarm_states")),
        sa.UniqueConstraint("alarm_id", "object_type", "object_id", name="uq_alarm_states_alarm_object"),
    )
    op.create_index(op.f("ix_alarm_states_alarm_id"), "alarm_states", ["alarm_id"], unique=False)
    op.create_index(op.f("ix_alarm_states_status"), "alarm_states", ["status"], unique=False)
    op.create_index("ix_alarm_states_object", "alarm_states", ["object_type", "object_id"], unique=False)
    op.create_table(
        "alarm_webhooks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alarm_id", sa.Integer(), nullable=True),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", vcenter.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", vcenter.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", vcenter.db.models.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["alarm_id"], ["alarm_definitions.id"], name=op.f("fk_alarm_webhooks_alarm_id_alarm_definitions"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarm_webhooks")),
    )
    op.create_index(op.f("ix_alarm_webhooks_alarm_id"), "alarm_webhooks", ["alarm_id"], unique=False)
    op.create_index("ix_alarm_webhooks_due", "alarm_webhooks", ["state", "next_attempt_at"], unique=False)

    # vCenter's default alarms, set on the root (administrators may disable or change them).
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc)  # the UTCDateTime columns refuse naive datetimes
    common = dict(scope_type="root", scope_id=None, enabled=True, actions=[{"type": "event"}], builtin=True, version=1, created_at=now, updated_at=now)
    op.bulk_insert(
        definitions,
        [
            dict(
                name="Host not responding",
                description="The host's agent stopped sending heartbeats.",
                target_type="host",
                expression={"type": "state", "condition": "host.not_responding", "severity": "critical"},
                **common,
            ),
            dict(
                name="VM heartbeat lost",
                description="A powered-on VM's guest stopped sending heartbeats.",
                target_type="vm",
                expression={"type": "state", "condition": "vm.heartbeat_lost", "severity": "warning"},
                **common,
            ),
            dict(
                name="Datastore usage",
                description="Used space of a datastore above 80 % (warning) or 90 % (critical).",
                target_type="datastore",
                expression={"type": "state", "condition": "datastore.usage", "warning": 80.0, "critical": 90.0},
                **common,
            ),
        ],
    )


def downgrade() -> None:
    op.drop_index("ix_alarm_webhooks_due", table_name="alarm_webhooks")
    op.drop_index(op.f("ix_alarm_webhooks_alarm_id"), table_name="alarm_webhooks")
    op.drop_table("alarm_webhooks")
    op.drop_index("ix_alarm_states_object", table_name="alarm_states")
    op.drop_index(op.f("ix_alarm_states_status"), table_name="alarm_states")
    op.drop_index(op.f("ix_alarm_states_alarm_id"), table_name="alarm_states")
    op.drop_table("alarm_states")
    op.drop_index("ix_alarm_definitions_scope", table_name="alarm_definitions")
    op.drop_table("alarm_definitions")
    op.drop_table("metric_rollups")
    op.drop_index("ix_metric_samples_tier_at", table_name="metric_samples")
    op.drop_table("metric_samples")
