"""Performance statistics at scale: what the server does per agent report and per rollup with
a seeded inventory (default 2,500 hosts, 40,000 VMs). Not a test.

    python bench/metrics_scale.py [--hosts 2500] [--vms 40000] [--rounds 15]
                                  [--database-url postgresql+psycopg://...]   (default: SQLite in a temp dir)

Each round is one sample period: every host's report (host + its VMs' counters) is ingested
as the API does it (one transaction per report, one bulk insert each), stamped 20 s after the
previous round. Then one rollup pass makes the 5-minute tier from those rounds, alarms are
evaluated once, and a VM's one-hour chart is read. In-process (no HTTP): it measures the
database work, not the web server.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, select  # noqa: E402

from vcenter.core.settings import Settings  # noqa: E402
from vcenter.db.migrate import upgrade  # noqa: E402
from vcenter.db.models import Host, MetricSample, VirtualMachine  # noqa: E402
from vcenter.db.session import session_scope  # noqa: E402
from vcenter.domain.metrics import bucket_start  # noqa: E402
from vcenter.messaging.contracts import MetricsReport, VmMetrics  # noqa: E402
from vcenter.services.monitoring import alarms, metrics  # noqa: E402
from vcenter.services.inventory.seed import seed  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=2500)
    parser.add_argument("--vms", type=int, default=40000)
    parser.add_argument("--rounds", type=int, default=15, help="sample periods (15 = one 5-minute bucket)")
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{Path(tempfile.mkdtemp(prefix='vc-metrics-')) / 'vcenter.db'}"
    settings = Settings(database_url=url, metrics_rollup_grace=0)
    upgrade(url)
    with session_scope(url) as session:
        if not session.scalar(select(func.count()).select_from(Host)):
            seed(session, args.hosts, args.vms)
        hosts = session.scalars(select(Host.id).order_by(Host.id)).all()
        placed: dict[int, list[str]] = {}
        for host_id, uuid in session.execute(select(VirtualMachine.host_id, VirtualMachine.libvirt_uuid).where(VirtualMachine.power_state == "poweredOn")):
            placed.setdefault(host_id, []).append(uuid)
    print(f"database: {url.split('@')[-1]}; {len(hosts)} hosts, {sum(map(len, placed.values()))} powered-on VMs reporting\n")

    start = datetime.fromtimestamp(bucket_start(time.time() - 3600, 300), tz=timezone.utc)
    per_report, per_round, rows = [], [], 0
    for r in range(args.rounds):
        at = start + timedelta(seconds=20 * r)
        began = time.perf_counter()
        for i, host_id in enumerate(hosts):
            report = MetricsReport(
                interval_s=20,
                host={"cpu.usage": 20.0 + (i + r) % 60, "cpu.usagemhz": 9000.0, "mem.usage": 55.0, "mem.consumed": 180000.0, "disk.read": 1e6, "disk.write": 2e6, "net.rx": 3e5, "net.tx": 2e5},
                vms=[
                    VmMetrics(
                        uuid=u,
                        values={
                            "cpu.usage": float((i * 7 + r) % 100),
                            "cpu.usagemhz": 800.0,
                            "mem.usage": 40.0,
                            "mem.consumed": 2048.0,
                            "disk.read": 1e4,
                            "disk.write": 3e4,
                            "net.rx": 5e3,
                            "net.tx": 4e3,
                        },
                    )
                    for u in placed.get(host_id, [])
                ],
            )
            t = time.perf_counter()
            with session_scope(url) as session:
                rows += metrics.ingest(session, session.get(Host, host_id), report, now=at)["stored"]
            per_report.append((time.perf_counter() - t) * 1000)
        per_round.append(time.perf_counter() - began)
    ingest_s = sum(per_round)
    import resource

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    with session_scope(url) as session:
        rolled = metrics.rollup(session, settings, now=start + timedelta(seconds=20 * args.rounds + 1))
    rollup_s = time.perf_counter() - t
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    with session_scope(url) as session:
        evaluated = alarms.evaluate(session, settings, now=start + timedelta(seconds=20 * args.rounds))
    alarm_s = time.perf_counter() - t
    with session_scope(url) as session:
        vm_id = session.scalar(select(VirtualMachine.id).where(VirtualMachine.power_state == "poweredOn").limit(1))
        chart = []
        for _ in range(20):
            t = time.perf_counter()
            metrics.query(session, settings, "vm", vm_id, ["cpu.usage", "mem.usage"], "realtime", start.isoformat(), (start + timedelta(hours=1)).isoformat())
            chart.append((time.perf_counter() - t) * 1000)
        stored = session.scalar(select(func.count()).select_from(MetricSample))
    per_report.sort()
    print(f"{'step':<44} {'value':>12}")
    print(f"{'rounds (20 s sample periods)':<44} {args.rounds:>12}")
    print(f"{'rows stored (one per object per sample)':<44} {rows:>12}")
    print(f"{'ingest: rows/s':<44} {rows / ingest_s:>12.0f}")
    print(f"{'ingest: a round (all hosts), mean s':<44} {statistics.mean(per_round):>12.2f}")
    print(f"{'ingest: one report p50 ms':<44} {statistics.median(per_report):>12.2f}")
    print(f"{'ingest: one report p95 ms':<44} {per_report[int(0.95 * len(per_report)) - 1]:>12.2f}")
    print(f"{'rollup to 5-min tier: aggregates':<44} {rolled.get('day', 0):>12}")
    print(f"{'rollup to 5-min tier: s':<44} {rollup_s:>12.2f}")
    print(f"{'peak memory before / after the rollup, MiB':<44} {rss_before:>6.0f} / {rss_after:.0f}")
    print(f"{'alarm evaluation (3 built-in), s':<44} {alarm_s:>12.2f}   {evaluated}")
    print(f"{'VM chart, 1 h real-time, p50 ms':<44} {statistics.median(chart):>12.2f}")
    print(f"{'metric_samples rows':<44} {stored:>12}")
    print(f"\none sample period is 20 s: ingest keeps up while a round takes less than that ({statistics.mean(per_round) / 20:.0%} of it here, one process).")


if __name__ == "__main__":
    main()
