"""Run a per-item function over items in parallel and hand results back in item order.

The preprocess stage turns each raw item (an image, a video) into crops with a stateful worker
that holds the MediaPipe models. :func:`ordered_map` runs such workers

- ``local``: in this process (``workers == 1``) or in a spawned ``multiprocessing`` pool;
- ``ray``: as Ray actors (one CPU each) on a Ray cluster, ``address`` from ``runtime.preprocess.ray_address``
  or, when that is null, the standard ``RAY_ADDRESS`` variable (neither: a private local Ray
  instance is started for the call).

Results always come back in the order of ``items`` (``ProcessPoolExecutor.map`` keeps it; Ray
results are read in submission order), so whatever writes them produces the same bytes whatever
the executor or the worker count.

Each worker owns its share of the cores (:func:`worker_cores`: this process's cores split evenly
over the pool's workers, one thread when there are more workers than cores; the in-process single
worker and each Ray actor hold one CPU): :func:`pin_threads` limits
OpenCV, torch, BLAS/OpenMP and FFmpeg's decoders to that many threads, and a pool process or Ray
actor binds itself, every thread of it (:func:`bind_process`), to its own cores (MediaPipe's
Python tasks have no thread setting: their LiteRT/XNNPACK inference runs one thread on desktop
Linux, MediaPipe's default in ``mediapipe/calculators/tensor/inference_calculator_utils.cc``, and
the CPU affinity bounds the graph's scheduler threads). Thread counts do not change any result:
every per-item operation is deterministic.

Ray workers ``chdir`` to the driver's working directory before building their worker: relative
paths (source roots, model files, the paths in reject messages) then mean the same on every node,
provided every node sees the repository at the same path (shared storage; docs/full_scale.md).
"""

from __future__ import annotations

import multiprocessing as mpr
import multiprocessing.util
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any, Literal

Executor = Literal["local", "ray"]
#: chunks queued per Ray actor: it starts the next one without a round trip through the driver
RAY_DEPTH = 2

_WORKER: Any = None
_INIT_ERROR: str = ""
#: read by OpenMP, OpenBLAS, MKL, BLIS, Accelerate and numexpr when they load: a library that a
#: worker imports after :func:`pin_threads` (torch, scipy) starts with the worker's share
THREAD_ENV = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def available_cores() -> list[int]:
    """The cores this process may run on (its CPU affinity), sorted."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # no affinity interface (macOS): all cores
        return list(range(os.cpu_count() or 1))


def worker_cores(index: int, workers: int, cores: list[int] | None = None) -> list[int]:
    """The cores of worker ``index`` of ``workers``: ``cores`` (default :func:`available_cores`)
    split into ``workers`` equal disjoint runs; all of them when there are more workers than cores
    (the workers then share every core, one thread each)."""
    cores = available_cores() if cores is None else cores
    share = len(cores) // max(workers, 1)
    if share < 1:
        return list(cores)
    return list(cores[index * share : (index + 1) * share])


def pin_threads(threads: int, cores: list[int] | None = None) -> Any:
    """Limit this process's native thread pools to ``threads``; with ``cores``, run it on those only.

    OpenCV (``cv2.setNumThreads``), torch when loaded (``torch.set_num_threads``), the BLAS/OpenMP
    pools already loaded (threadpoolctl, when installed) and those loaded later (:data:`THREAD_ENV`),
    and the FFmpeg decoders of :mod:`dfpipe.ingest.video`. Returns threadpoolctl's limiter (its
    ``restore_original_limits`` undoes the BLAS/OpenMP part), or None without threadpoolctl.
    """
    threads = max(1, int(threads))
    for key in THREAD_ENV:
        os.environ[key] = str(threads)
    if cores:
        bind_process(cores)
    import cv2

    from dfpipe.ingest import video

    cv2.setNumThreads(threads)
    video.set_decoder_threads(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: the environment above covers libraries loaded from now on
        return None
    return threadpool_limits(limits=threads)


def bind_process(cores: list[int]) -> None:
    """Run every thread of this process on ``cores``, and the threads it starts from now on.

    ``sched_setaffinity(0, ...)`` binds the calling thread only (Linux affinity is per thread;
    new threads inherit their creator's): threads started before the pin would still run on
    every core. A Ray actor holds about twenty such threads (gRPC pollers, its core worker's I/O);
    left unbound, they run on both cores and preempt the other actor.
    """
    os.sched_setaffinity(0, cores)
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # no /proc: the calling thread only
        return
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cores)
        except OSError:  # ended meanwhile
            pass


@contextmanager
def _pinned_here(threads: int) -> Iterator[None]:
    """:func:`pin_threads` for the in-process worker, restored afterwards (this process goes on)."""
    import cv2

    from dfpipe.ingest import video

    saved_cv2, saved_video = cv2.getNumThreads(), video.decoder_threads()
    torch = sys.modules.get("torch")
    saved_torch = torch.get_num_threads() if torch is not None else None
    limits = None
    try:
        with _child_env(threads):  # THREAD_ENV as pin_threads sets it, restored on the way out
            limits = pin_threads(threads)
            yield
    finally:
        # threadpoolctl first: its "original" OpenMP limit was read after the pin had set torch's
        # (one OpenMP pool), so restoring it last would leave torch at the worker's thread count
        if limits is not None:
            limits.restore_original_limits()
        cv2.setNumThreads(saved_cv2)
        video.set_decoder_threads(saved_video)
        if torch is not None and saved_torch is not None:
            torch.set_num_threads(saved_torch)


@contextmanager
def _child_env(threads: int) -> Iterator[None]:
    """:data:`THREAD_ENV` at ``threads`` inside the block, restored after it: while pool processes
    start (spawned children inherit the environment, and their imports of numpy / cv2 happen before
    any initializer runs) and around the in-process worker."""
    env = {key: os.environ.get(key) for key in THREAD_ENV}
    os.environ.update({key: str(max(1, threads)) for key in THREAD_ENV})
    try:
        yield
    finally:
        _restore_env(env)


def _restore_env(env: dict[str, str | None]) -> None:
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _init_pool_worker(factory: Callable[[], Any], counter: Any, workers: int, cores: list[int]) -> None:
    global _WORKER, _INIT_ERROR
    with counter.get_lock():  # each pool process takes the next index: its own cores
        index = counter.value
        counter.value += 1
    mine = worker_cores(index % workers, workers, cores)
    if len(mine) < len(cores):  # a core set of its own
        pin_threads(len(mine), mine)
    else:  # more workers than cores: one thread each, on any core
        pin_threads(1)
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
        # one CPU, as ``workers`` promises: measured faster than OpenCV/FFmpeg pools over every core
        # (the per-item steps are small; this process also writes the results)
        with _pinned_here(1):
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
        cores = available_cores()
        init = (factory, ctx.Value("i", 0), workers, cores)
        with (
            _child_env(max(1, len(cores) // workers)),
            ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_pool_worker, initargs=init) as pool,
        ):
            yield from pool.map(_pool_call, [(method, it, args) for it in items], chunksize=chunk)


def _ray_map(factory, chunks, workers, address, method, args) -> Iterator[list]:
    import ray

    started = not ray.is_initialized()
    if started:
        # address None: ray.init reads RAY_ADDRESS, else starts a private local instance.
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        remote: Any = ray.remote(num_cpus=1)(_RayWorker)  # an actor class; Ray's stubs cannot express it
        # one CPU per actor (num_cpus=1): one thread for each library, one core (see _RayWorker)
        token = f"{os.getpid()}-{time.time_ns()}"
        actors = [remote.remote(factory, os.getcwd(), token) for _ in range(min(workers, max(len(chunks), 1)))]
        try:
            # Results in submission order. Each actor has up to RAY_DEPTH chunks queued (an actor
            # runs its calls one after another), so it starts the next chunk without waiting for
            # a round trip through the driver; the actor whose result was just read gets the next
            # chunk, so at most RAY_DEPTH x actors chunks are in flight.
            todo = iter(chunks)
            flight: deque = deque()
            for _ in range(RAY_DEPTH):
                for actor in actors:
                    chunk = next(todo, None)
                    if chunk is not None:
                        flight.append((actor, actor.call.remote(method, chunk, args)))
            while flight:
                actor, ref = flight.popleft()
                result = ray.get(ref)
                chunk = next(todo, None)
                if chunk is not None:
                    flight.append((actor, actor.call.remote(method, chunk, args)))
                yield result
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


def _node_slot(token: str) -> int:
    """How many actors of the ``ordered_map`` call ``token`` came before this one on this node
    (a counter file in the node's temporary folder, under an exclusive lock)."""
    import fcntl
    import tempfile

    with open(os.path.join(tempfile.gettempdir(), f"dfpipe-slots-{token}"), "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        slot = len(fh.read())
        fh.write("x")
    return slot


class _RayWorker:
    """Ray actor body: one worker built by ``factory`` in the driver's working directory.

    An actor holds one Ray CPU: its libraries get one thread and, before MediaPipe starts its
    threads, the actor binds itself, Ray's own threads included (:func:`bind_process`), to one
    core of its node (the ``n``-th actor of this call on a node takes core ``n`` modulo the
    node's cores), as a local pool process does.
    """

    def __init__(self, factory: Callable[[], Any], cwd: str, token: str):
        self.token = token
        cores = available_cores()
        pin_threads(1, [cores[_node_slot(token) % len(cores)]] if len(cores) > 1 else None)
        os.chdir(cwd)
        self.worker = factory()

    def call(self, method: str, items: list, args: tuple) -> list:
        fn = getattr(self.worker, method)
        return [fn(item, *args) for item in items]

    def close(self) -> None:
        import tempfile

        self.worker.close()
        try:
            os.remove(os.path.join(tempfile.gettempdir(), f"dfpipe-slots-{self.token}"))
        except FileNotFoundError:  # another actor of the call on this node removed it
            pass
