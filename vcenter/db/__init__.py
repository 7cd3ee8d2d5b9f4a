"""The database: ORM models (models: inventory, tasks, events, outbox, users; ha_models: HA
state), sessions, migrations and cluster snapshots. Both model modules are imported here, so
that every table is on ``Base.metadata`` whichever one a caller imports first."""

from vcenter.db import ha_models, models  # noqa: F401
