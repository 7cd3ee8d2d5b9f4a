"""API CPU per request: process CPU time (user + system, not wall) of the in-process API for
each kind of request, through Starlette's TestClient, on SQLite and PostgreSQL. Not a test:
speed is never asserted by timed tests.

    python bench/api_cpu.py [--requests 200] [--vms 200] [--databases sqlite,postgresql]
                            [--pg-url postgresql+psycopg://...]  (default VCENTER_TEST_PG_URL)
                            [--redis-url redis://...]            (default VCENTER_TEST_REDIS_URL)
                            [--baseline before.json] [--json after.json]
                            [--profile DIR]                      (a cProfile file per kind)

Rows: ``create_app`` (building the application, routes and dependencies, and its first
request, where FastAPI analyses every route), ``openapi`` (the document, built once per
application), then per request: a VM list (``GET /vms?limit=50``), a VM (``GET /vms/{id}``),
a power operation (``POST /vms/{id}/power/on|off``: the 202 with its Task and outbox row), and
the agent's callbacks of that operation (``progress``, ``result``, ``events``, each with the
host's credential). The inventory is `vcenter seed`'s (``--vms`` VMs on 8 hosts); one host
gets an agent credential for the callbacks. The client's own CPU is in the numbers
(TestClient runs the app in its portal thread of the same process): a constant share of each.

With ``--baseline`` (a file an earlier run wrote with ``--json``) each row shows the ratio
this run / baseline. The PostgreSQL database named by the URL is emptied (its public schema
dropped): give a scratch one.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

os.environ.setdefault("VCENTER_PASSWORD_HASH_TIME_COST", "1")
os.environ.setdefault("VCENTER_PASSWORD_HASH_MEMORY_COST", "8")
os.environ.setdefault("VCENTER_PASSWORD_HASH_PARALLELISM", "1")

KINDS = ("create_app", "openapi", "list", "get", "power", "progress", "result", "events")


def cpu() -> float:
    return time.process_time()


def fresh_postgres(url: str) -> str:
    """``url``'s database emptied: its public schema dropped and made again."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    finally:
        engine.dispose()
    return url


def settings_for(database_url: str, redis_url: str, scratch: Path) -> Any:
    from vcenter.core.settings import Settings

    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        key_dir=str(scratch / "keys"),
        upload_dir=str(scratch / "uploads"),
        datastore_roots=f"/var/lib/virtcenter/datastores,/srv,/mnt,{scratch}",
    )


class World:
    """A seeded inventory behind one application: the admin's and the agent's headers."""

    def __init__(self, settings: Any, vms: int) -> None:
        from fastapi.testclient import TestClient
        from sqlalchemy import select

        from vcenter.core.ids import token_hash
        from vcenter.db.migrate import upgrade
        from vcenter.db.models import Host, VirtualMachine as Vm
        from vcenter.db.session import session_scope
        from vcenter.services.access import auth
        from vcenter.services.inventory.seed import seed

        self.settings = settings
        upgrade(settings.database_url)
        with session_scope(settings.database_url) as session:
            seed(session, hosts=8, vms=vms, datacenters=1, hosts_per_cluster=8)
            auth.create_user(session, "admin", "secret-pass-phrase", is_admin=True)
        with session_scope(settings.database_url) as session:
            vm = session.scalars(select(Vm).order_by(Vm.id)).first()
            assert vm is not None
            host = session.get(Host, vm.host_id)
            assert host is not None
            self.agent_token = "bench-agent-" + uuid.uuid4().hex
            host.agent_token_hash = token_hash(self.agent_token)
            self.vm_id, self.host_id, self.vm_uuid, self.vm_name = vm.id, host.id, vm.libvirt_uuid, vm.name
            self.power_state = vm.power_state
        from vcenter.api.app import create_app

        self.timings: dict[str, list[float]] = {}
        started = cpu()
        self.app = create_app(settings)
        self.client = TestClient(self.app)
        self.client.__enter__()
        first = self.client.get("/livez")
        assert first.status_code == 200
        self.timings["create_app"] = [cpu() - started]
        started = cpu()
        self.app.openapi()
        self.timings["openapi"] = [cpu() - started]
        r = self.client.post("/api/v1/session", json={"username": "admin", "password": "secret-pass-phrase"})
        assert r.status_code == 201, r.text
        self.auth = {"Authorization": f"Bearer {r.json()['token']}"}
        self.agent = {"Authorization": f"Bearer {self.agent_token}"}

    def close(self) -> None:
        self.client.__exit__(None, None, None)

    def command_id(self, task_id: int) -> str:
        from sqlalchemy import select

        from vcenter.db.models import OutboxMessage
        from vcenter.db.session import session_scope

        with session_scope(self.settings.database_url) as session:
            rows = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(20)).all()
            return next(r.payload["command_id"] for r in rows if r.payload.get("task_id") == task_id)

    def timed(self, kind: str, call: Callable[[], Any], profile: cProfile.Profile | None) -> Any:
        started = cpu()
        if profile is not None:
            profile.enable()
        result = call()
        if profile is not None:
            profile.disable()
        self.timings.setdefault(kind, []).append(cpu() - started)
        return result

    def round(self, profiles: dict[str, cProfile.Profile] | None) -> None:
        """One of each request: two reads, then a power operation and its three callbacks."""
        c, base = self.client, "/api/v1"
        p = (lambda k: profiles.get(k)) if profiles else (lambda k: None)
        r = self.timed("list", lambda: c.get(f"{base}/vms", params={"limit": 50}, headers=self.auth), p("list"))
        assert r.status_code == 200, r.text
        r = self.timed("get", lambda: c.get(f"{base}/vms/{self.vm_id}", headers=self.auth), p("get"))
        assert r.status_code == 200, r.text
        action, after = ("on", "poweredOn") if self.power_state != "poweredOn" else ("off", "poweredOff")
        r = self.timed("power", lambda: c.post(f"{base}/vms/{self.vm_id}/power/{action}", headers=self.auth), p("power"))
        assert r.status_code == 202, r.text
        task_id = r.json()["id"]
        command_id = self.command_id(task_id)
        agent = f"{base}/agent/hosts/{self.host_id}"
        r = self.timed("progress", lambda: c.post(f"{agent}/tasks/{task_id}/progress", json={"command_id": command_id, "step": "power", "progress": 50}, headers=self.agent), p("progress"))
        assert r.status_code == 200, r.text
        domain = {"uuid": self.vm_uuid, "name": self.vm_name, "power_state": after}
        r = self.timed("result", lambda: c.post(f"{agent}/tasks/{task_id}/result", json={"command_id": command_id, "ok": True, "domain": domain}, headers=self.agent), p("result"))
        assert r.status_code == 200 and r.json() == {"applied": True}, r.text
        event = [
            {
                "uuid": self.vm_uuid,
                "name": self.vm_name,
                "event": "started" if after == "poweredOn" else "stopped",
                "reason": "booted" if after == "poweredOn" else "shutdown",
                "power_state": after,
                "at": datetime.now(UTC).isoformat(),
            }
        ]
        r = self.timed("events", lambda: c.post(f"{agent}/events", json=event, headers=self.agent), p("events"))
        assert r.status_code == 200, r.text
        self.power_state = after


def run(database: str, url: str, redis_url: str, requests: int, vms: int, profile_dir: Path | None) -> dict[str, float]:
    """Median CPU ms per kind on one database."""
    import statistics

    with tempfile.TemporaryDirectory(prefix="vc-bench-cpu-") as scratch:
        world = World(settings_for(url, redis_url, Path(scratch)), vms)
        try:
            for _ in range(5):  # warm: caches, pools, the first compile of each query
                world.round(None)
            for kind in KINDS[2:]:
                world.timings[kind] = []
            profiles = {k: cProfile.Profile() for k in KINDS[2:]} if profile_dir else None
            for _ in range(requests):
                world.round(profiles)
            if profiles and profile_dir:
                profile_dir.mkdir(parents=True, exist_ok=True)
                for kind, prof in profiles.items():
                    prof.dump_stats(profile_dir / f"{database}-{kind}.prof")
        finally:
            world.close()
    return {kind: 1000 * statistics.median(world.timings[kind]) for kind in KINDS}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--vms", type=int, default=200)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--pg-url", default=os.environ.get("VCENTER_TEST_PG_URL"))
    parser.add_argument("--redis-url", default=os.environ.get("VCENTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--baseline", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args(argv)
    results: dict[str, dict[str, float]] = {}
    for database in args.databases.split(","):
        if database == "sqlite":
            scratch = tempfile.mkdtemp(prefix="vc-bench-sqlite-")
            url = f"sqlite:///{scratch}/vcenter.db"
        elif database == "postgresql":
            if not args.pg_url:
                print("postgresql: no --pg-url (or VCENTER_TEST_PG_URL): skipped", file=sys.stderr)
                continue
            url = fresh_postgres(args.pg_url)
        else:
            parser.error(f"unknown database {database!r}")
        results[database] = run(database, url, args.redis_url, args.requests, args.vms, args.profile)
    baseline = json.loads(args.baseline.read_text()) if args.baseline else {}
    databases = list(results)
    header = f"{'CPU ms (median)':<16}" + "".join(f"{d:>12}" + (f"{'ratio':>8}" if baseline else "") for d in databases)
    print(header)
    print("-" * len(header))
    for kind in KINDS:
        line = f"{kind:<16}"
        for d in databases:
            value = results[d][kind]
            line += f"{value:>12.2f}"
            if baseline:
                before = baseline.get(d, {}).get(kind)
                line += f"{value / before:>8.2f}" if before else f"{'-':>8}"
        print(line)
    print(f"\n{args.requests} requests of each kind after 5 warm-up rounds; load average {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
