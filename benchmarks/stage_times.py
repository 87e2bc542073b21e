"""Time every stage of a `dvc repro`: reads DVC's output on stdin, prints it, then a table.

Usage: dvc repro 2>&1 | python benchmarks/stage_times.py
(DVC prints "Running stage '<name>':" when a stage starts; a stage ends when the next starts.)
"""

from __future__ import annotations

import re
import sys
import time
from collections import defaultdict


class StageTimer:
    """Wall time per stage from DVC's output lines as they arrive (benchmarks/rehearsal.py uses it too)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.current: str | None = None
        self.since = self.start
        self.times: dict[str, float] = {}

    def feed(self, line: str) -> str | None:
        """Note one line of output; returns the stage that starts on it, if any."""
        m = re.match(r"Running stage '([^']+)'", line.strip())
        if not m:
            return None
        now = time.perf_counter()
        if self.current is not None:
            self.times[self.current] = now - self.since
        self.current, self.since = m.group(1), now
        return self.current

    def finish(self) -> float:
        """Close the running stage; returns the total wall time."""
        end = time.perf_counter()
        if self.current is not None:
            self.times[self.current] = end - self.since
            self.current = None
        return end - self.start


def main() -> int:
    timer = StageTimer()
    for line in sys.stdin:
        sys.stdout.write(line)
        sys.stdout.flush()
        timer.feed(line)
    total = timer.finish()
    times = timer.times
    groups: dict[str, list[float]] = defaultdict(list)
    for name, sec in times.items():
        groups[name.split("@")[0]].append(sec)
    print("\n| stage | runs | wall time (s) |\n|---|---|---|")
    for name, secs in groups.items():
        print(f"| {name} | {len(secs)} | {sum(secs):.0f} |")
    print(f"| **total** (`dvc repro`) | {len(times)} | {total:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
