"""Security round two: ids of users, groups and roles never reused (SQLite AUTOINCREMENT),
actors by user id on events and tasks, refused credentials aggregated per source and minute

Revision ID: 0016
Revises: 0015
"""

from alembic import op
import sqlalchemy as sa
import vcenter.db.models


revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

# Principals, roles and the inventory objects permissions name: a new one must not inherit
# what named a deleted one.
_NEVER_REUSED = ("users", "groups", "roles", "datacenters", "folders", "clusters", "hosts", "datastores", "portgroups", "resource_pools", "vms")
# The system's own actor names (vcenter.services.tasks.events.SYSTEM_ACTORS when this was written):
# their rows stay without a user even where a user had taken such a name.
_SYSTEM_ACTORS = ("system", "cli", "ha", "drs", "dpm", "scheduler", "reaper", "beat", "agent", "monitor", "alarms", "anonymous", "root")


def upgrade() -> None:
    ts = vcenter.db.models.UTCDateTime(timezone=True)
    if op.get_bind().dialect.name == "sqlite":
        # Only SQLite reuses the largest deleted rowid; PostgreSQL's sequences never do.
        for table in _NEVER_REUSED:
            with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": True}):
                pass
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("datastore_roots", sa.JSON(), nullable=True))
    for table in ("events", "tasks"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("user_id", sa.Integer(), nullable=True))
            batch.create_index(batch.f(f"ix_{table}_user_id"), ["user_id"], unique=False)
    # Existing rows keep their actor: the user of that name, where one exists today (a deleted
    # user's rows go to a later user of the same name: history cannot tell them apart), except
    # the system's own rows. Permissions of principals and objects that no longer exist go.
    reserved = ", ".join(f"'{name}'" for name in _SYSTEM_ACTORS)
    for table in ("events", "tasks"):
        op.execute(f"UPDATE {table} SET user_id = (SELECT users.id FROM users WHERE users.username = {table}.username) WHERE lower({table}.username) NOT IN ({reserved})")
    op.execute("DELETE FROM permissions WHERE principal_type = 'user' AND principal_id NOT IN (SELECT id FROM users)")
    op.execute("DELETE FROM permissions WHERE principal_type = 'group' AND principal_id NOT IN (SELECT id FROM groups)")
    for object_type, table in (
        ("datacenter", "datacenters"),
        ("folder", "folders"),
        ("cluster", "clusters"),
        ("host", "hosts"),
        ("datastore", "datastores"),
        ("portgroup", "portgroups"),
        ("pool", "resource_pools"),
        ("vm", "vms"),
    ):
        op.execute(f"DELETE FROM permissions WHERE object_type = '{object_type}' AND object_id NOT IN (SELECT id FROM {table})")
    op.create_table(
        "refused_credentials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("minute", ts, nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("credential", sa.String(length=24), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("last_at", ts, nullable=False),
        sa.Column("last_detail", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refused_credentials")),
        sa.UniqueConstraint("minute", "source", "credential", name="uq_refused_credentials_minute_source_credential"),
    )
    op.create_index(op.f("ix_refused_credentials_minute"), "refused_credentials", ["minute"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("datastore_roots")
    op.drop_index(op.f("ix_refused_credentials_minute"), table_name="refused_credentials")
    op.drop_table("refused_credentials")
    for table in ("events", "tasks"):
        with op.batch_alter_table(table) as batch:
            batch.drop_index(batch.f(f"ix_{table}_user_id"))
            batch.drop_column("user_id")
