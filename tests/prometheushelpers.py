"""A Prometheus from Debian for a test: its own data directory under the test's tmp, a
generated prometheus.yml (one job per process role, targets on 127.0.0.1, the metrics token in
a credentials file, the repository's alert rules loaded), and waits on its HTTP API. Used by
tests/system/test_prometheus_scrape.py; a scale test scrapes its processes the same way."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from tests.apihelpers import wait_for
from tests.conftest import xdist_worker

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
# Listener ports the tests take for themselves (process listeners, Prometheus): 20 for each
# pytest-xdist worker, so that two workers never probe the same port free and both bind it.
PORTS = range(18200, 18300)


def worker_ports() -> range:
    worker = xdist_worker()
    if worker is None:
        return PORTS
    start = PORTS.start + 20 * (worker % 5)
    return range(start, start + 20)


def have_prometheus() -> bool:
    return shutil.which("prometheus") is not None and shutil.which("promtool") is not None


def free_ports(count: int, ports: range | None = None) -> list[int]:
    ports = ports or worker_ports()
    found = []
    for port in ports:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise RuntimeError(f"fewer than {count} free ports in {ports}")


@dataclass
class Prometheus:
    base: str
    process: subprocess.Popen
    log: Path

    def query(self, promql: str) -> list[dict]:
        answer = httpx.get(f"{self.base}/api/v1/query", params={"query": promql}, timeout=10).json()
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def value(self, promql: str) -> float | None:
        """The first sample's value of ``promql`` now, None when it has none."""
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def wait_all_up(self, jobs: Mapping[str, Sequence[str]], timeout: float = 60) -> None:
        """Until every target of every job answers its scrape (``up == 1``)."""
        expected = sum(len(targets) for targets in jobs.values())

        def all_up() -> list[tuple[str, str, str]] | bool:
            try:
                ups = [(r["metric"]["job"], r["metric"]["instance"], r["value"][1]) for r in self.query("up")]
            except (httpx.HTTPError, ValueError):  # not listening yet, or 503 "not ready" while its TSDB opens
                assert self.process.poll() is None, self.log.read_text()
                return False
            return ups if len(ups) == expected and {v for _, _, v in ups} == {"1"} else False

        wait_for(all_up, timeout, interval=0.5, what=f"every target of {sorted(jobs)} up == 1")


@contextmanager
def running_prometheus(workdir: Path, jobs: Mapping[str, Sequence[str]], port: int, token: str | None = None, interval: str = "1s") -> Iterator[Prometheus]:
    """Prometheus scraping ``jobs`` (job name -> host:port targets) every ``interval``."""
    workdir.mkdir(parents=True, exist_ok=True)
    auth = {}
    if token:
        (workdir / "token").write_text(token)
        auth = {"authorization": {"credentials_file": str(workdir / "token")}}
    config = {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [{"job_name": job, **auth, "static_configs": [{"targets": list(targets)}]} for job, targets in jobs.items()],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = workdir / "prometheus.log"
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield Prometheus(f"http://127.0.0.1:{port}", proc, log)
    finally:
        proc.terminate()
        proc.wait(20)
