"""Run one DVC stage command and record its peak memory: what `python` means inside the rehearsal.

    python benchmarks/rehearsal_probe.py stages/train.py resnet_5_v4     # = python stages/train.py ...
    python benchmarks/rehearsal_probe.py -m dfpipe.core.assets --dest x   # = python -m ...

benchmarks/rehearsal.py puts a `python` first on the stages' PATH that runs this file, so every
stage command of `dvc repro` runs under it unchanged. The command runs in this process (``runpy``),
as `python` would run it; a sampler thread adds up the resident memory of this process and all its
descendants (pool workers, a private Ray instance and its actors) every 0.2 s. At exit one JSON
line is appended to ``$REHEARSAL_PROBE_LOG``: ``stage`` (DVC's ``$DVC_STAGE``), ``argv``,
``wall_s``, ``peak_rss_mib`` (the sampled maximum, at least this process's own ``ru_maxrss``),
``peak_gpu_mib`` (``torch.cuda.max_memory_allocated`` when the command used CUDA, else null) and
``rc``. Anything other than a script or ``-m module`` is handed to the real interpreter unchanged.
"""

from __future__ import annotations

import json
import os
import resource
import runpy
import sys
import threading
import time
from pathlib import Path


class TreeRss:
    """Peak summed RSS (MiB) of this process and its descendants while running."""

    def __init__(self, period_s: float = 0.2):
        import psutil  # a Ray dependency; imported here so that a plain `-c` call stays light

        self.proc, self.period_s, self.peak = psutil.Process(), period_s, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> None:
        import psutil

        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):  # ended between listing and reading
                pass
        self.peak = max(self.peak, total / 2**20)

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            self.sample()

    def __enter__(self) -> TreeRss:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        self.peak = max(self.peak, own)


def gpu_peak_mib() -> float | None:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return max(torch.cuda.max_memory_allocated(d) for d in range(torch.cuda.device_count())) / 2**20


def run(argv: list[str]) -> int:
    """Run ``argv`` (a script and its arguments, or ``-m module ...``) as `python` would; its exit status."""
    try:
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            sys.path[0] = os.getcwd()  # as `python -m`
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(argv)
            sys.path[0] = str(Path(argv[0]).resolve().parent)  # as `python script.py`
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)  # SystemExit("message"): as the interpreter does
        return 1
    return 0


def main(argv: list[str]) -> int:
    if not argv or not (argv[0] == "-m" or argv[0].endswith(".py")):
        os.execv(sys.executable, [sys.executable, *argv])
    rc, t0, rss = 1, time.perf_counter(), TreeRss()
    try:
        with rss:
            rc = run(argv)
    finally:  # also when the command raised: the record says rc 1
        log = os.environ.get("REHEARSAL_PROBE_LOG")
        if log:
            record = {"stage": os.environ.get("DVC_STAGE", ""), "argv": argv, "wall_s": time.perf_counter() - t0,
                      "peak_rss_mib": rss.peak, "peak_gpu_mib": gpu_peak_mib(), "rc": rc}
            with open(log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
    return rc


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
