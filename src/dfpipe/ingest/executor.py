"""Run a per-item function over items in parallel and hand results back in item order.

The preprocess stage turns each raw item (an image, a video) into crops with a stateful worker
that holds the MediaPipe models. :func:`ordered_map` runs such workers

- ``local``: in this process (``workers == 1``) or in a spawned ``multiprocessing`` pool;
- ``ray``: as Ray actors (one CPU each) on a Ray cluster, ``address`` from ``runtime.preprocess.ray_address``
  or, when that is null, the standard ``RAY_ADDRESS`` variable (neither: a private local Ray
  instance is started for the call).

Results always come back in the order of ``items`` (``Pool.imap`` / ``ActorPool.map`` keep it), so
whatever writes them produces the same bytes whatever the executor or the worker count.

Ray workers ``chdir`` to the driver's working directory before building their worker: relative
paths (source roots, model files, the paths in reject messages) then mean the same on every node,
provided every node sees the repository at the same path (shared storage; docs/full_scale.md).
"""

from __future__ import annotations

import multiprocessing as mpr
import multiprocessing.util
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Literal

Executor = Literal["local", "ray"]

_WORKER: Any = None
_INIT_ERROR: str = ""


def _init_pool_worker(factory: Callable[[], Any]) -> None:
    global _WORKER, _INIT_ERROR
    import cv2

    cv2.setNumThreads(1)  # one process per core already
    try:
        _WORKER = factory()
    except Exception as exc:  # noqa: BLE001 - a failing initializer makes Pool respawn forever
        _INIT_ERROR = f"{type(exc).__name__}: {exc}"
        return
    # Pool workers leave through os._exit: atexit does not run, multiprocessing finalizers do.
    multiprocessing.util.Finalize(_WORKER, _WORKER.close, exitpriority=10)


def _pool_call(job: tuple[str, Any, tuple]) -> Any:
    method, item, args = job
    if _WORKER is None:
        raise RuntimeError(f"worker could not start: {_INIT_ERROR}")
    return getattr(_WORKER, method)(item, *args)


def ordered_map(
    factory: Callable[[], Any],
    items: Iterable[Any],
    workers: int,
    executor: Executor = "local",
    address: str | None = None,
    method: str = "process",
    args: tuple = (),
    chunk: int = 1,
) -> Iterator[Any]:
    """Yield ``factory().<method>(item, *args)`` for each item, in item order.

    ``factory`` must be picklable (e.g. ``functools.partial`` of a class) and build an object
    with ``method`` and ``close()``; it is called once per worker process / Ray actor.
    ``chunk`` items travel together in one call (images: fewer round trips; videos: 1, so
    long and short videos still balance over the workers).
    """
    items = list(items)
    workers = max(1, min(workers, len(items)))
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if executor == "ray":
        chunks = [items[i : i + chunk] for i in range(0, len(items), chunk)]
        for results in _ray_map(factory, chunks, workers, address, method, args):
            yield from results
    elif executor != "local":
        raise ValueError(f"executor must be 'local' or 'ray', got {executor!r}")
    elif workers == 1:
        worker = factory()
        try:
            call = getattr(worker, method)
            for item in items:
                yield call(item, *args)
        finally:
            worker.close()
    else:
        # spawn: no fork of a process that may hold MediaPipe threads. ProcessPoolExecutor, not
        # Pool: a worker that dies (a decoder crash) raises BrokenProcessPool here; Pool.imap
        # would wait forever for the task it lost.
        ctx = mpr.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_pool_worker, initargs=(factory,)) as pool:
            yield from pool.map(_pool_call, [(method, it, args) for it in items], chunksize=chunk)


def _ray_map(factory, chunks, workers, address, method, args) -> Iterator[list]:
    import ray
    from ray.util import ActorPool

    started = not ray.is_initialized()
    if started:
        # address None: ray.init reads RAY_ADDRESS, else starts a private local instance.
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        remote: Any = ray.remote(num_cpus=1)(_RayWorker)  # an actor class; Ray's stubs cannot express it
        actors = [remote.remote(factory, os.getcwd()) for _ in range(min(workers, max(len(chunks), 1)))]
        pool = ActorPool(actors)
        try:
            # ActorPool.map yields in submission order; chunks wait on the driver until an actor
            # is free, so at most `workers` chunks are in flight (plus finished, unread results).
            yield from pool.map(lambda a, batch: a.call.remote(method, batch, args), chunks)
        finally:
            for actor in actors:
                try:
                    ray.get(actor.close.remote())
                except Exception:  # noqa: BLE001 - a dead actor has nothing left to close
                    pass
                ray.kill(actor)
    finally:
        if started:
            ray.shutdown()


class _RayWorker:
    """Ray actor body: one worker built by ``factory`` in the driver's working directory."""

    def __init__(self, factory: Callable[[], Any], cwd: str):
        import cv2

        cv2.setNumThreads(1)  # one actor per CPU
        os.chdir(cwd)
        self.worker = factory()

    def call(self, method: str, items: list, args: tuple) -> list:
        fn = getattr(self.worker, method)
        return [fn(item, *args) for item in items]

    def close(self) -> None:
        self.worker.close()
