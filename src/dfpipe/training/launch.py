"""Multi-GPU / multi-node training as parameters: the train stage re-executes itself under torchrun.

``runtime.train.gpus`` (processes per node: one per GPU; on a CPU-only machine, gloo processes) and
``runtime.train.nodes`` with ``runtime.train.rdzv_endpoint`` (``host:port`` of the c10d rendezvous, required when
``nodes > 1``; run the same stage command on every node) decide the launch. When more than one
process is asked for and this process is not already a torchrun worker, :func:`relaunch` replaces
it (``os.execv``, same pid, so DVC waits on it as before) with::

    python -m torch.distributed.run --nproc-per-node G --nnodes N \\
        (--standalone | --rdzv-backend c10d --rdzv-endpoint H:P --rdzv-id <run>) <script> <args>

``dfpipe.training.train.fit`` then trains under DDP: ``batch_size`` stays the global batch, each of
the ``G * N`` ranks takes ``batch_size / (G * N)`` per step, and rank 0 validates and writes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def is_torchrun_worker() -> bool:
    """True inside a process started by torchrun (it sets these for every worker)."""
    return "LOCAL_RANK" in os.environ or "TORCHELASTIC_RUN_ID" in os.environ


def torchrun_argv(
    gpus: int, nodes: int, rdzv_endpoint: str | None, run_id: str, script: str, args: Sequence[str]
) -> list[str]:
    """The command that runs ``script args`` on ``gpus`` processes on each of ``nodes`` nodes."""
    if gpus < 1 or nodes < 1:
        raise ValueError(f"gpus and nodes must be >= 1, got {gpus}, {nodes}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(gpus), "--nnodes", str(nodes)]
    if nodes == 1:
        cmd.append("--standalone")  # a private rendezvous on a free local port
    else:
        if not rdzv_endpoint:
            raise ValueError(
                "runtime.train.nodes > 1 needs runtime.train.rdzv_endpoint (host:port reachable by every node)"
            )
        cmd += ["--rdzv-backend", "c10d", "--rdzv-endpoint", rdzv_endpoint, "--rdzv-id", run_id]
    return cmd + [script, *args]


def relaunch(gpus: int, nodes: int, rdzv_endpoint: str | None, run_id: str, argv: Sequence[str] | None = None) -> None:
    """Exec this stage under torchrun when ``gpus * nodes > 1`` (and not already a worker);
    otherwise return and let the caller train in this process."""
    if gpus * nodes <= 1 or is_torchrun_worker():
        return
    argv = list(sys.argv if argv is None else argv)
    cmd = torchrun_argv(gpus, nodes, rdzv_endpoint, run_id, argv[0], argv[1:])
    print(f"[train] launching {gpus * nodes} processes: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os.execv(cmd[0], cmd)
