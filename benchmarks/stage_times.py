"""Time every stage of a `dvc repro`: reads DVC's output on stdin, prints it, then a table.

Usage: dvc repro 2>&1 | python benchmarks/stage_times.py
(DVC prints "Running stage '<name>':" when a stage starts; a stage ends when the next starts.)
"""

from __future__ import annotations

import re
import sys
import time
from collections import defaultdict


def main() -> int:
    start = time.perf_counter()
    current, since = None, start
    times: dict[str, float] = {}
    for line in sys.stdin:
        sys.stdout.write(line)
        sys.stdout.flush()
        m = re.match(r"Running stage '([^']+)'", line.strip())
        if m:
            now = time.perf_counter()
            if current is not None:
                times[current] = now - since
            current, since = m.group(1), now
    end = time.perf_counter()
    if current is not None:
        times[current] = end - since
    groups: dict[str, list[float]] = defaultdict(list)
    for name, sec in times.items():
        groups[name.split("@")[0]].append(sec)
    print("\n| stage | runs | wall time (s) |\n|---|---|---|")
    for name, secs in groups.items():
        print(f"| {name} | {len(secs)} | {sum(secs):.0f} |")
    print(f"| **total** (`dvc repro`) | {len(times)} | {end - start:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
