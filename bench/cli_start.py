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

import statistics
import subprocess
import sys
import time

ROWS = (
    ("python -c pass", [sys.executable, "-c", "pass"]),
    ("vcenter --version", [sys.executable, "-m", "vcenter.cli", "--version"]),
    ("vcenter --help", [sys.executable, "-m", "vcenter.cli", "--help"]),
    ("vcenter db --help", [sys.executable, "-m", "vcenter.cli", "db", "--help"]),
)


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main(runs: int) -> None:
    samples: dict[str, list[float]] = {name: [] for name, _ in ROWS}
    for name, argv in ROWS:  # warm the page cache and .pyc files once, untimed
        timed(argv)
    for _ in range(runs):
        for name, argv in ROWS:
            samples[name].append(timed(argv))
    base = statistics.median(samples[ROWS[0][0]])
    print(f"{'command':<22} {'median s':>9} {'min s':>7} {'x python':>9}   ({runs} runs each)")
    for name, _ in ROWS:
        median = statistics.median(samples[name])
        print(f"{name:<22} {median:>9.3f} {min(samples[name]):>7.3f} {median / base:>9.1f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
