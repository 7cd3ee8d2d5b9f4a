"""The revisions, oldest first by number (Alembic reads every file here but this one)."""
