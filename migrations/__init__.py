"""virtcenter's Alembic migrations, shipped inside the wheel so that an installed server (a
container, a pip install) runs `vcenter db upgrade` without the source tree
(vcenter.db.migrate finds this directory through the package)."""
