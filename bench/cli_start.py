"""Start-up time of the `vcenter` command against a bare interpreter. Not a test.

    python bench/cli_start.py [runs]      (default 15)

Each row runs its command ``runs`` times in a fresh interpreter (this one, ``sys.executable``),
interleaved row by row so that a busy machine slows every row alike, and prints the median and
the fastest wall time, and the median's ratio to ``python -c pass``. ``vcenter`` is run as
``python -m vcenter.cli`` (what the installed script calls, without the script's own lookup of
the entry point). Issue 18 asks for under 0.3 s; tests/unit/test_cli_imports.py proves which
heavy modules the help and version paths do not import.
"""

from __future__ import annotations

import os
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
)
# an empty config directory for the operator commands, never the user's own
ENV = {**os.environ, "XDG_CONFIG_HOME": tempfile.mkdtemp(prefix="vc-cli-bench-")}


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    if done.returncode not in (0, 3):  # 3: the operator command's "not logged in"
        raise SystemExit(f"{' '.join(argv)}: exit status {done.returncode}")
    return time.perf_counter() - started


def main(runs: int) -> None:
    samples: dict[str, list[float]] = {name: [] for name, _ in ROWS}
    for name, argv in ROWS:  # warm the page cache and .pyc files once, untimed
        timed(argv)
    for _ in range(runs):
        for name, argv in ROWS:
            samples[name].append(timed(argv))
    base = statistics.median(samples[ROWS[0][0]])
    print(f"{'command':<24} {'median s':>9} {'min s':>7} {'x python':>9}   ({runs} runs each)")
    for name, _ in ROWS:
        median = statistics.median(samples[name])
        print(f"{name:<24} {median:>9.3f} {min(samples[name]):>7.3f} {median / base:>9.1f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
