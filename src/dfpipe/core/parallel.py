"""Ordered parallel map over threads: results in input order, a bounded number in flight.

For work that releases the GIL (numpy / scipy.fft on large arrays, copies out of memory-mapped
shards): threads share the arrays without pickling, and the caller consumes results in input
order, so anything it accumulates (running statistics, shard writers) gets the same bytes for
any worker count.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def thread_map(
    fn: Callable[[T], R], items: Iterable[T], workers: int, pool: ThreadPoolExecutor | None = None
) -> Iterator[R]:
    """Yield ``fn(item)`` for each item in order; ``workers <= 0``: in this thread, one by one.

    At most ``workers + 1`` calls are submitted ahead of the consumer (memory stays bounded for
    large batches). ``pool``: reuse an executor (e.g. a loader's, across epochs); else one is
    made for the call. An exception in ``fn`` is raised here, at its item's turn.
    """
    if workers <= 0:
        for item in items:
            yield fn(item)
        return
    own = pool is None
    pool = pool or ThreadPoolExecutor(workers, thread_name_prefix="dfpipe-map")
    ahead: deque = deque()
    try:
        for item in items:
            ahead.append(pool.submit(fn, item))
            if len(ahead) > workers:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()
    finally:
        for fut in ahead:
            fut.cancel()
        if own:
            pool.shutdown(wait=True, cancel_futures=True)
