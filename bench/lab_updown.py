"""Time `vcenter lab up --hosts 3 --guests 2` and `vcenter lab down` (issue 3's goals: under
60 s and under 10 s). Prints a table; not a test. Run as root: python bench/lab_updown.py [runs]

It tears down any lab on this machine first (one lab per machine)."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

VCENTER = [sys.executable, "-m", "vcenter.cli", "lab"]


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(VCENTER + args, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    subprocess.run(VCENTER + ["down"], capture_output=True)
    ups, downs = [], []
    for _ in range(runs):
        ups.append(timed(["up", "--hosts", "3", "--guests", "2"]))
        downs.append(timed(["down"]))
    print(f"{'operation':<40} {'runs':>4} {'median s':>9} {'max s':>7} {'goal s':>7} {'median/goal':>12}")
    for name, values, goal in (("lab up --hosts 3 --guests 2", ups, 60.0), ("lab down (3 hosts, 6 guests)", downs, 10.0)):
        median = statistics.median(values)
        print(f"{name:<40} {len(values):>4} {median:>9.2f} {max(values):>7.2f} {goal:>7.0f} {median / goal:>12.3f}")


if __name__ == "__main__":
    main()
