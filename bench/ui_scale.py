"""Inventory API latency at scale: p50/p95/max of the routes the dashboard's tree, search and
object pages call, with a seeded inventory (default 2,500 hosts and 40,000 VMs) behind a real
`vcenter serve` process. Not a test.

    python bench/ui_scale.py [--hosts 2500] [--vms 40000] [--requests 100]
                             [--database-url postgresql+psycopg://...]   (default: SQLite in a temp dir)

The database is seeded with `vcenter seed` when it has no hosts (a PostgreSQL URL should name
an empty database). Latency is measured by the client over HTTP on loopback, one request at a
time, keep-alive; each request picks its object/page/search term at random (fixed seed).
Goal (issue 10): p95 under 300 ms on this machine.

Dashboard pages (/ui/...) go in PAGES below: (label, function(ctx, rnd) -> path); they are
fetched with the same session (ctx.client carries the API token; a page needing a cookie can
log in through ctx.client in ``login_pages``).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
VCENTER = [sys.executable, "-m", "vcenter.cli"]


@dataclass
class Ctx:
    client: httpx.Client
    datacenters: list[int]
    clusters: list[int]
    hosts: list[int]
    vms: list[int]
    datastores: list[int]
    extra: dict = field(default_factory=dict)


Route = tuple[str, Callable[[Ctx, random.Random], str]]

ROUTES: list[Route] = [
    # the tree: roots, then one level at a time
    ("tree: datacenters", lambda c, r: "/api/v1/datacenters"),
    ("tree: clusters of a datacenter", lambda c, r: f"/api/v1/clusters?datacenter_id={r.choice(c.datacenters)}&limit=500"),
    ("tree: hosts of a cluster", lambda c, r: f"/api/v1/hosts?cluster_id={r.choice(c.clusters)}&limit=500"),
    ("tree: VMs of a host", lambda c, r: f"/api/v1/vms?host_id={r.choice(c.hosts)}&limit=500"),
    ("tree: datastores of a datacenter", lambda c, r: f"/api/v1/datastores?datacenter_id={r.choice(c.datacenters)}&limit=500"),
    # lists (paged) and search by name
    ("list: VMs, a page", lambda c, r: f"/api/v1/vms?limit=50&offset={r.randrange(0, max(1, len(c.vms) - 50))}"),
    ("list: hosts, a page sorted by name", lambda c, r: f"/api/v1/hosts?limit=50&sort=name&offset={r.randrange(0, max(1, len(c.hosts) - 50))}"),
    ("search: VMs by name prefix", lambda c, r: f"/api/v1/vms?name={r.choice(('web', 'db', 'app', 'cache'))}-0{r.randrange(10, 40)}*&limit=50"),
    ("search: VMs by name part", lambda c, r: f"/api/v1/vms?name=*{r.randrange(100, 999)}*&limit=50"),
    ("search: hosts by name prefix", lambda c, r: f"/api/v1/hosts?name=esx0{r.randrange(10, 25)}*&limit=50"),
    # object pages
    ("object: VM", lambda c, r: f"/api/v1/vms/{r.choice(c.vms)}"),
    ("object: host", lambda c, r: f"/api/v1/hosts/{r.choice(c.hosts)}"),
    ("object: cluster", lambda c, r: f"/api/v1/clusters/{r.choice(c.clusters)}"),
    ("object: datastore", lambda c, r: f"/api/v1/datastores/{r.choice(c.datastores)}"),
    ("object: host's CPU chart (1 h)", lambda c, r: f"/api/v1/metrics/host/{r.choice(c.hosts)}?counter=cpu.usage&counter=mem.usage"),
    ("alarms: triggered (tree badges)", lambda c, r: "/api/v1/alarms/triggered"),
    ("alarms: triggered below a cluster", lambda c, r: f"/api/v1/alarms/triggered?object_type=cluster&object_id={r.choice(c.clusters)}&descendants=true"),
]

# Dashboard pages: what the browser fetches for the tree (one level per opened node), search
# and an object's tabs. Server-rendered HTML, each page with the recent tasks/events panel.
PAGES: list[Route] = [
    ("page: home (tree roots, panels)", lambda c, r: "/ui"),
    ("page: tree, a datacenter opened", lambda c, r: f"/ui/tree/datacenter/{r.choice(c.datacenters)}"),
    ("page: tree, a cluster opened", lambda c, r: f"/ui/tree/cluster/{r.choice(c.clusters)}"),
    ("page: tree, a host opened", lambda c, r: f"/ui/tree/host/{r.choice(c.hosts)}"),
    ("page: search by name part", lambda c, r: f"/ui/search?q={r.choice(('web', 'db', 'app', 'cache'))}-0{r.randrange(10, 40)}"),
    ("page: VM summary", lambda c, r: f"/ui/vm/{r.choice(c.vms)}"),
    ("page: VM monitor", lambda c, r: f"/ui/vm/{r.choice(c.vms)}?tab=monitor"),
    ("page: host summary", lambda c, r: f"/ui/host/{r.choice(c.hosts)}"),
    ("page: cluster summary", lambda c, r: f"/ui/cluster/{r.choice(c.clusters)}"),
    ("page: cluster DRS tab", lambda c, r: f"/ui/cluster/{r.choice(c.clusters)}?tab=drs"),
    ("page: datacenter summary", lambda c, r: f"/ui/datacenter/{r.choice(c.datacenters)}"),
    ("page: datastore summary", lambda c, r: f"/ui/datastore/{r.choice(c.datastores)}"),
    ("page: host chart data (1 h)", lambda c, r: f"/ui/data/metrics/host/{r.choice(c.hosts)}?counter=cpu.usage&tier=realtime"),
]


def login_pages(ctx: Ctx, base: str) -> None:
    """Log in through the dashboard's form: its session cookie stays in ctx.client."""
    import re

    form = ctx.client.get("/ui/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    answer = ctx.client.post("/ui/login", data={"username": "bench", "password": "bench-password", "csrf": csrf, "next": "/ui"})
    if answer.status_code >= 400 or "vc_session" not in ctx.client.cookies:
        sys.exit(f"dashboard login failed: {answer.status_code} {answer.text[:200]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ids(client: httpx.Client, path: str) -> list[int]:
    out, offset = [], 0
    while True:
        page = client.get(path, params={"limit": 500, "offset": offset}).json()
        out += [item["id"] for item in page["items"]]
        offset += 500
        if offset >= page["total"]:
            return out


def measure(ctx: Ctx, routes: list[Route], requests: int, seed: int = 7) -> list[tuple[str, int, float, float, float, int]]:
    rows = []
    for label, make in routes:
        rnd = random.Random(f"{seed}:{label}")
        for _ in range(3):  # warm-up
            ctx.client.get(make(ctx, rnd))
        times, errors = [], 0
        for _ in range(requests):
            path = make(ctx, rnd)
            start = time.perf_counter()
            response = ctx.client.get(path)
            times.append((time.perf_counter() - start) * 1000)
            errors += response.status_code >= 400
        times.sort()
        p95 = times[min(len(times) - 1, int(round(0.95 * len(times))) - 1)]
        rows.append((label, len(times), statistics.median(times), p95, times[-1], errors))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=2500)
    parser.add_argument("--vms", type=int, default=40000)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="vc-ui-scale-"))
    url = args.database_url or f"sqlite:///{workdir / 'vcenter.db'}"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VCENTER_")}
    env.update(
        {"VCENTER_DATABASE_URL": url, "VCENTER_API_PORT": str(port), "VCENTER_KEY_DIR": str(workdir / "keys"), "VCENTER_LOG_LEVEL": "WARNING", "VCENTER_PAGE_SIZE_MAX": "500", "PYTHONPATH": str(ROOT)}
    )
    started = time.perf_counter()
    seeded = subprocess.run(VCENTER + ["seed", "--hosts", str(args.hosts), "--vms", str(args.vms)], env=env, capture_output=True, text=True)
    if seeded.returncode != 0 and "SEED_NOT_EMPTY" not in seeded.stderr + seeded.stdout:
        sys.exit(f"seeding failed:\n{seeded.stderr[-2000:]}")
    print(f"database: {url.split('@')[-1]}; {seeded.stdout.strip() or 'already seeded'} (wall {time.perf_counter() - started:.1f} s)")
    subprocess.run(VCENTER + ["admin", "create", "bench", "--password", "bench-password", "--exist-ok"], env=env, check=True, capture_output=True)
    server = subprocess.Popen(VCENTER + ["serve"], env=env, stdout=open(workdir / "api.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/livez", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                sys.exit(f"the API did not start; see {workdir / 'api.log'}")
            time.sleep(0.2)
        token = httpx.post(f"{base}/api/v1/session", json={"username": "bench", "password": "bench-password"}).json()["token"]
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
            ctx = Ctx(client, ids(client, "/api/v1/datacenters"), ids(client, "/api/v1/clusters"), ids(client, "/api/v1/hosts"), ids(client, "/api/v1/vms"), ids(client, "/api/v1/datastores"))
            print(
                f"inventory: {len(ctx.datacenters)} datacenters, {len(ctx.clusters)} clusters, {len(ctx.hosts)} hosts, "
                f"{len(ctx.vms)} VMs, {len(ctx.datastores)} datastores; {args.requests} requests per route, one at a time\n"
            )
            login_pages(ctx, base)
            rows = measure(ctx, ROUTES + PAGES, args.requests)
        width = max(len(r[0]) for r in rows)
        print(f"{'route':<{width}}  {'n':>4}  {'p50 ms':>7}  {'p95 ms':>7}  {'max ms':>7}  {'errors':>6}  p95<300ms")
        for label, n, p50, p95, worst, errors in rows:
            print(f"{label:<{width}}  {n:>4}  {p50:>7.1f}  {p95:>7.1f}  {worst:>7.1f}  {errors:>6}  {'yes' if p95 < 300 else 'NO'}")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(15)


if __name__ == "__main__":
    main()
