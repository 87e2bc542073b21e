"""The preprocess stage: one raw source -> face crops in shards + manifest + rejects + metrics.

This module wires the stage: list the source's items (:func:`dfpipe.ingest.sources.list_items`),
run the per-item function :meth:`dfpipe.ingest.worker.Worker.process` over them with the
configured executor (:func:`dfpipe.ingest.executor.ordered_map`: this process, a local pool or
Ray actors; results come back in item order), and hand each ``(item, result)`` pair, in item
order, to :class:`dfpipe.ingest.output.SourceOutput`, which writes shards, manifest, rejects,
metrics (after the accounting check) and the face-size plot. Every path, whatever the executor
or worker count, a part of a source (:mod:`dfpipe.ingest.parts`) or a decode-once pair of
sources, goes through that same per-item function and that same writer: the output bytes are
the same. Nothing stored holds an absolute path or a timing (timings go to stderr).
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from dfpipe.ingest.config import PreprocessConfig
from dfpipe.ingest.executor import ordered_map
from dfpipe.ingest.items import Reject
from dfpipe.ingest.output import SourceOutput
from dfpipe.ingest.parts import select_part
from dfpipe.ingest.sources import SourceConfig, list_items
from dfpipe.ingest.worker import Worker

IMAGE_CHUNK = 8  # images per executor call: amortises the per-call round trip (Ray, pool)


def run_source(
    name: str,
    spec: SourceConfig,
    cfg: PreprocessConfig,
    out_dir: str | Path,
    metrics_path: str | Path | None = None,
    root: str | Path | None = None,
    part: tuple[int, int] | None = None,
) -> dict:
    """Preprocess source ``name`` into ``out_dir``; return (and write) its metrics dict.

    ``root`` overrides ``spec.path`` (tests). ``part=(i, n)`` processes only part ``i`` of ``n``
    (:func:`~dfpipe.ingest.parts.select_part`; merge the parts with
    :func:`~dfpipe.ingest.parts.merge_parts`); a part may hold no face and writes no plot.
    Raises ``RuntimeError`` naming the source when a whole source yields no face at all
    (rejects.parquet is written first, to see why), or when the accounting check fails
    (:func:`~dfpipe.ingest.output.account`). File names that cannot be stored are listed on
    stderr first (preflight warning) and become ``bad_name`` rejects.
    """
    return run_sources([name], [spec], cfg, [out_dir], [metrics_path], root, part)[0]


def run_sources(
    names: list[str],
    specs: list[SourceConfig],
    cfg: PreprocessConfig,
    out_dirs: list[str | Path],
    metrics_paths: list[str | Path | None] | None = None,
    root: str | Path | None = None,
    part: tuple[int, int] | None = None,
) -> list[dict]:
    """Several sources that differ only in ``sampling`` (e.g. FF++ every 20th and K per video of
    the same folder) in one pass: each video is decoded once and each sampled frame cropped once,
    and every source's outputs are byte-identical to its own :func:`run_source`.
    """
    t0 = time.perf_counter()
    if not names or len({len(names), len(specs), len(out_dirs)}) != 1:
        raise ValueError("run_sources needs as many specs and out_dirs as names (at least one)")
    base = specs[0].model_copy(update={"sampling": None})
    for n, s in zip(names[1:], specs[1:]):
        if s.model_copy(update={"sampling": None}) != base:
            raise ValueError(
                f"sources {names[0]} and {n} differ in more than sampling: they cannot share one decoding pass"
            )
    metrics_paths = list(metrics_paths) if metrics_paths is not None else [None] * len(names)
    root = Path(root if root is not None else specs[0].path)
    _check_models(cfg)
    parts = [select_part(*list_items(n, s, root), part) for n, s in zip(names, specs)]
    items = parts[0][0]
    outs = []
    for n, s, d, mp, (_, listed) in zip(names, specs, out_dirs, metrics_paths, parts):
        _warn_bad_names(n, listed)
        outs.append(SourceOutput(n, s, cfg, d, mp, listed, plot=part is None))
    factory = functools.partial(Worker, cfg, specs[0], root)
    # images travel in chunks (fewer round trips to Ray actors / pool workers), videos one by one
    chunk = 1 if specs[0].kind != "image_folder" else IMAGE_CHUNK
    results: Iterator[Any]  # one tuple of ItemResults (one per source) per item
    if len(names) == 1:
        results = ((r,) for r in ordered_map(factory, items, cfg.workers, cfg.executor, cfg.ray_address, chunk=chunk))
    else:
        samplings = tuple(s.sampling for s in specs)
        results = ordered_map(
            factory,
            items,
            cfg.workers,
            cfg.executor,
            cfg.ray_address,
            method="process_multi",
            args=(samplings,),
            chunk=chunk,
        )
    bar = dict(total=len(items), desc=f"preprocess {'+'.join(names)}", unit="item", dynamic_ncols=True)
    # ordered_map yields in item order, so every writer (and its accounting) sees item order
    for item, res in tqdm(zip(items, results), **bar):
        for out, r in zip(outs, res):
            out.collect(item, r)
    metrics = [out.finish(items, root, allow_empty=part is not None) for out in outs]
    # timings go to stderr only: a tracked output must not change from run to run
    print(f"preprocess {'+'.join(names)}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return metrics


def _check_models(cfg: PreprocessConfig) -> None:
    for model in (cfg.detector_model, cfg.segmenter_model, cfg.whole_model):
        if model is not None and not Path(model).is_file():
            raise FileNotFoundError(f"{model}: MediaPipe model missing (run `python -m dfpipe.core.assets`)")


def _warn_bad_names(name: str, listed: list[Reject]) -> None:
    """Preflight warning on stderr: names that cannot be stored become ``bad_name`` rejects."""
    bad = [r.path for r in listed if r.reason == "bad_name"]
    if bad:
        print(
            f"WARNING: source {name}: {len(bad)} file name(s) are not valid UTF-8 or hold control "
            f"characters; they are rejected as bad_name (and `dvc add` cannot track such a folder, "
            f"see docs/raw_data.md): {', '.join(bad[:20])}{' ...' if len(bad) > 20 else ''}",
            file=sys.stderr,
        )
