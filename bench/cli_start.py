"""Start-up time of the `vcenter` command against a bare interpreter. Not a test.

    python bench/cli_start.py [runs]      (default 15)

Each row runs its command ``runs`` times in a fresh interpreter (this one, ``sys.executable``),
interleaved row by row so that a busy machine slows every row alike, and prints the median and
the fastest wall time, the median's ratio to ``python -c pass``, and the median CPU time (user
+ system) of the command's process: on a machine whose cores other work shares, the wall time
includes the waits for a core, the CPU time mostly not. ``vcenter`` is run as
``python -m vcenter.cli`` (what the installed script calls, without the script's own lookup of
the entry point). Issue 18 asks for under 0.3 s; tests/unit/test_cli_imports.py proves which
heavy modules the help and version paths do not import.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROWS = (
    ("python -c pass", [sys.executable, "-c", "pass"]),
    ("vcenter --version", [sys.executable, "-m", "vcenter.cli", "--version"]),
    ("vcenter --help", [sys.executable, "-m", "vcenter.cli", "--help"]),
    ("vcenter db --help", [sys.executable, "-m", "vcenter.cli", "db", "--help"]),
    ("vcenter vm power --help", [sys.executable, "-m", "vcenter.cli", "vm", "power", "--help"]),
    # operator commands that run: a rich table of the (empty) contexts; the client (httpx)
    # loaded and the command refused for want of a login (exit 3). No server is asked: what is
    # measured is the start, not a round trip.
    ("vcenter context list", [sys.executable, "-m", "vcenter.cli", "context", "list"]),
    ("vcenter ls (no login)", [sys.executable, "-m", "vcenter.cli", "ls", "/dc1/vm"]),
    ("vcenter vm info (no login)", [sys.executable, "-m", "vcenter.cli", "vm", "info", "/dc1/vm/web1", "--json"]),
    ("vcenter tasks (no login)", [sys.executable, "-m", "vcenter.cli", "tasks", "--limit", "5"]),
)
# an empty config directory for the operator commands, never the user's own
ENV = {**os.environ, "XDG_CONFIG_HOME": tempfile.mkdtemp(prefix="vc-cli-bench-")}


def _cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def timed(argv: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one run."""
    started, cpu = time.perf_counter(), _cpu()
    done = subprocess.run(argv, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    if done.returncode not in (0, 3):  # 3: the operator command's "not logged in"
        raise SystemExit(f"{' '.join(argv)}: exit status {done.returncode}")
    return time.perf_counter() - started, _cpu() - cpu


def main(runs: int) -> None:
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in ROWS}
    for name, argv in ROWS:  # warm the page cache and .pyc files once, untimed
        timed(argv)
    for _ in range(runs):
        for name, argv in ROWS:
            samples[name].append(timed(argv))
    base = statistics.median(wall for wall, _ in samples[ROWS[0][0]])
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'command':<28} {'median s':>9} {'min s':>7} {'x python':>9} {'cpu s':>7}   ({runs} runs each)")
    for name, _ in ROWS:
        walls, cpus = [w for w, _ in samples[name]], [c for _, c in samples[name]]
        median = statistics.median(walls)
        print(f"{name:<28} {median:>9.3f} {min(walls):>7.3f} {median / base:>9.1f} {statistics.median(cpus):>7.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
