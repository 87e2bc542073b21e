"""Scale-out benchmarks: preprocessing executors, decode-once, spectra statistics over cores.

    python benchmarks/bench_scale.py [--images 800] [--videos 40] [--spectra-n 512] [--repeat 3] [--skip-ray]

Generates (in a temporary folder) drawn-face PNGs and FF++-layout videos with masks, then prints:

1. preprocessing items/s of one image source and one video source through
   ``dfpipe.ingest.executor.ordered_map`` (images in the stage's chunks): local executor with 1 and 2
   worker processes, and the Ray executor on a private local Ray instance with 2 CPUs (2 actors);
   steady state (the second half of the results, and not before every worker has delivered one;
   start-up, until the first result, is reported apart, and so is the whole call, start-up
   included: pool spawn / Ray actors loading MediaPipe, not ``ray.init``), min / median
   over ``--repeat`` rounds (each round runs every executor once, in turn: a slow spell on a shared
   box hits them alike); the ratios 2 workers / 1 worker and Ray / local 2 workers (targets
   >= 1.8 and >= 0.9 on 2 idle cores); crops checked identical to the 1-worker run. On a loaded
   box the wall ratio measures how much CPU each configuration got from the scheduler (two
   processes get about twice one process's share), so each run also prints steady items per
   CPU-second (this process and every process it started: pool processes, Ray's daemons and
   actors; from ``/proc``): with 2 idle cores, 2 workers / 1 worker is about twice their ratio;
2. decode-once: an FF++ folder sampled by two policies (every n-th and K per video) as two
   ``run_source`` calls vs one ``run_sources`` pass (1 worker), outputs checked identical;
3. spectra statistics + cache (``build_split``, 224 px): img/s with ``workers`` 1 and 2 threads, the
   ratio (target >= 1.6 on 2 idle cores), beside the plain scipy baseline (``scipy.fft.dctn`` +
   log-abs of the same images, one thread); also per process CPU second (1 worker against the
   baseline), which other jobs on a shared box barely move.

The defaults are sized so that start-up is small against the steady state. Each figure is wall
time on this machine; on a shared machine compare figures from the same run only.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm loads: progress bars would interleave with the figures

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from dfpipe.core.config import build
from dfpipe.ingest.executor import ordered_map
from dfpipe.ingest.preprocess import IMAGE_CHUNK, PreprocessConfig, run_source, run_sources
from dfpipe.ingest.sources import SourceConfig, list_items
from dfpipe.ingest.worker import Worker

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # test-only synthetic inputs
from timing import interleaved, line  # noqa: E402

from synthetic import draw_synthetic_face, write_video  # noqa: E402

CFG = dict(
    detector_model="models/mediapipe/face_detection_short_range.tflite",
    segmenter_model="models/mediapipe/selfie_segmentation.tflite",
    margin=1.3, size=224, min_score=0.5, min_face=24, every_n=10, frames_per_video=8,
    seg_threshold=0.5, seg_background="blank", min_person=0.05, max_pixels=40_000_000,
    shard_size=4096, workers=1,
)


def make_raw(root: Path, n_images: int, n_videos: int) -> None:
    for i in range(n_images):
        img = draw_synthetic_face(320, 320, 140 + i % 40, 150, 70)[:, :, ::-1]
        (root / "img").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "img" / f"{i:05d}.png"), img)
    vids, masks = root / "ff" / "c23" / "videos", root / "ff" / "masks" / "videos"
    for v in range(n_videos):
        frames = [draw_synthetic_face(240, 320, 120 + i + v, 110, 55) for i in range(60)]
        m = [np.pad(np.full((80, 60), 255, np.uint8), ((70, 90), (130, 130))) for _ in range(60)]
        write_video(vids / f"{v:03d}_{v + 100:03d}.mp4", frames, gop=25, crf=23)
        write_video(masks / f"{v:03d}_{v + 100:03d}.mp4", m, gop=25, crf=0, gray=True)


def folder_bytes(d: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def cpu_seconds() -> float | None:
    """CPU seconds of this process and every process it started, still running (pool processes;
    Ray's daemons and actors), from ``/proc``; None where there is no ``/proc``."""
    proc, tick = Path("/proc"), os.sysconf("SC_CLK_TCK")
    if not proc.is_dir():
        return None
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent, CPU seconds)
    for d in proc.iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()  # after the name: state is field 3
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue  # ended meanwhile
            stats[int(d.name)] = int(fields[1]), (int(fields[11]) + int(fields[12])) / tick  # ppid; utime + stime
    total, todo = time.process_time(), [os.getpid()]
    while todo:
        parent = todo.pop()
        for pid, (ppid, secs) in stats.items():
            if ppid == parent:
                total += secs
                todo.append(pid)
    return total


class Tagged:
    """The worker of ``factory`` whose results say which process made them (``(pid, result)``):
    the steady window starts once every worker has delivered."""

    def __init__(self, factory):
        self.inner = factory()

    def process(self, item):
        return os.getpid(), self.inner.process(item)

    def close(self) -> None:
        self.inner.close()


def steady_start(pids: list[int], workers: int) -> int:
    """Index of the first result of the steady window: the second half of the results, or later
    when a worker delivered its first result only after that (its start-up, slow on a loaded box,
    would count as steady time)."""
    half, seen = len(pids) // 2, set()
    for i, pid in enumerate(pids):
        seen.add(pid)
        if len(seen) == workers:
            return min(max(half, i + 1), len(pids) - 1)
    return half  # one worker took every item


def bench_preprocess(tmp: Path, skip_ray: bool, repeat: int) -> None:
    """Items/s of the preprocess worker under each executor: start-up (pool spawn / Ray actors
    loading MediaPipe) and steady state (:func:`steady_start`) separately; the executors
    alternate round by round."""
    img = build(SourceConfig, dict(kind="image_folder", path="img", label=0, method="b", mode="crop"))
    ff = build(SourceConfig, dict(kind="ffpp", path="ff", label=2, method="F2F", mode="crop",
                                  sampling="every_nth", masks=True))
    runs = [("local", 1), ("local", 2)] + ([] if skip_ray else [("ray", 2)])
    for name, spec in (("images", img), ("videos", ff)):
        items, _ = list_items(name, spec, tmp / spec.path.as_posix())
        chunk = IMAGE_CHUNK if spec.kind == "image_folder" else 1  # what the stage sends
        half = len(items) // 2
        ref = None
        steady: dict[tuple[str, int], list[float]] = {run: [] for run in runs}
        per_cpu: dict[tuple[str, int], list[float]] = {run: [] for run in runs}
        starts: dict[tuple[str, int], list[float]] = {run: [] for run in runs}
        whole: dict[tuple[str, int], list[float]] = {run: [] for run in runs}  # start-up included
        for _ in range(repeat):
            for executor, workers in runs:
                cfg = build(PreprocessConfig, {**CFG, "workers": workers, "executor": executor})
                if executor == "ray":
                    import ray

                    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
                factory = functools.partial(Tagged, functools.partial(Worker, cfg, spec, tmp / spec.path.as_posix()))
                t0 = time.perf_counter()
                results, arrived, pids, cpu, seen = [], [], [], {}, set()
                for pid, res in ordered_map(factory, items, workers, executor, chunk=chunk):
                    arrived.append(time.perf_counter())
                    results.append(res)
                    pids.append(pid)
                    k, all_now = len(arrived), len(seen) < workers and len(seen | {pid}) == workers
                    seen.add(pid)
                    # CPU seconds where the steady window may start (steady_start) and at the end
                    if k == half or k == len(items) or (k > half and all_now):
                        cpu[k - 1] = cpu_seconds()
                if executor == "ray":
                    ray.shutdown()
                # steady state: from the second half of the results, once every worker has started
                # (workers start one after another; until the last has, ordered results wait)
                first = steady_start(pids, workers)
                steady[(executor, workers)].append((arrived[-1] - arrived[first - 1]) / (len(items) - first))
                c0, c1 = cpu.get(first - 1), cpu.get(len(items) - 1)
                if c0 is not None and c1 is not None and c1 > c0:
                    per_cpu[(executor, workers)].append((c1 - c0) / (len(items) - first))
                starts[(executor, workers)].append(arrived[0] - t0)
                whole[(executor, workers)].append(arrived[-1] - t0)
                crops = [c.image.tobytes() for r in results for c in r.crops]
                ref = ref or crops
                assert crops == ref, f"{executor} workers={workers}: crops differ from the first run"
        assert ref is not None
        for (executor, workers), secs in steady.items():
            print(line(f"preprocess {name:6s} {executor:5s} workers={workers} steady", secs, 1.0, "items/s")
                  + f"; start-up {min(starts[(executor, workers)]):.1f} s ({len(items)} items, {len(ref)} crops)")
        for (executor, workers), secs in per_cpu.items():
            if secs:
                print(line(f"preprocess {name:6s} {executor:5s} workers={workers} steady CPU time", secs, 1.0,
                           "items/cpu-s", per_cpu[("local", 1)] or None))
        one, two = steady[("local", 1)], steady[("local", 2)]
        text = f"preprocess {name}: 2 workers / 1 worker {statistics.median(one) / statistics.median(two):.2f}x"
        if ("ray", 2) in steady:
            text += f", Ray 2 CPUs / local 2 workers {statistics.median(two) / statistics.median(steady[('ray', 2)]):.2f}x"
        print(text + " (ratios of medians; crops identical)")
        for (executor, workers), secs in whole.items():
            print(line(f"preprocess {name:6s} {executor:5s} workers={workers} whole call", secs, len(items), "items/s",
                       whole[("local", 1)]) + " (start-up included: what one stage call pays)")


def bench_decode_once(tmp: Path) -> None:
    cfg = build(PreprocessConfig, CFG)
    base = dict(kind="ffpp", path="ff", label=2, method="F2F", mode="crop", masks=True)
    n20 = build(SourceConfig, {**base, "sampling": "every_nth"})
    k = build(SourceConfig, {**base, "sampling": "per_video"})
    t0 = time.perf_counter()
    run_source("n", n20, cfg, tmp / "two-n", root=tmp / "ff")
    run_source("k", k, cfg, tmp / "two-k", root=tmp / "ff")
    t_two = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_sources(["n", "k"], [n20, k], cfg, [tmp / "one-n", tmp / "one-k"], root=tmp / "ff")
    t_one = time.perf_counter() - t0
    same = folder_bytes(tmp / "two-n") == folder_bytes(tmp / "one-n") and \
        folder_bytes(tmp / "two-k") == folder_bytes(tmp / "one-k")
    print(f"decode-once (every {cfg.every_n}th + K={cfg.frames_per_video}, 1 worker): two passes {t_two:.2f} s, "
          f"one pass {t_one:.2f} s, {t_two / t_one:.2f}x{'' if same else '  BYTES DIFFER'}")


def bench_spectra(tmp: Path, n: int, repeat: int) -> None:
    import scipy.fft

    # imported here, not at the top: a spawned pool process re-imports this script (its __main__)
    # before it starts work, and these (torch, through bench_spectra) would add over a second to
    # the pool's start-up that the preprocess stage does not pay
    from bench_spectra import write_variant_split  # the benchmarks' split writer

    from dfpipe.features import moments
    from dfpipe.features import spectra as sp

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)
    write_variant_split(tmp / "variants" / "v", "train", images)
    cfg = build(sp.SpectraConfig, dict(
        variants=["v"], variants_dir="variants", out_dir="spectra", metrics_dir="m", plots_dir="p", cache=[],
        kind="dct", color="per_channel", eps=1e-12, batch_size=64, shard_size=512, workers=1))

    def plain() -> None:  # the library alone: DCT and log-abs of the same batches, one thread
        for i in range(0, n, cfg.batch_size):
            x = np.moveaxis(images[i : i + cfg.batch_size].astype(np.float64), -1, 1)
            np.log(np.abs(scipy.fft.dctn(x, type=2, norm="ortho", axes=(-2, -1), workers=1)) + cfg.eps)

    outputs: dict[int, list] = {}

    def build_fn(workers: int):
        c = cfg.model_copy(update={"workers": workers})
        out = tmp / f"spectra{workers}"

        def run() -> None:
            acc = {"dct": moments.RunningMoments(), "dft": moments.RunningMoments()}
            sp.build_split(tmp / "variants" / "v" / "train", out, c, acc)
            if workers not in outputs:  # the warm-up call's bytes (reading them is not the stage's time)
                outputs[workers] = [folder_bytes(out), acc["dct"].result()[1].tobytes(), acc["dft"].result()[1].tobytes()]

        return run

    cpu: dict = {"plain": [], 1: [], 2: []}

    def cpu_timed(key, fn):  # process CPU time too: on a loaded box wall time mostly measures the others
        def run() -> None:
            t = time.process_time()
            fn()
            cpu[key].append(time.process_time() - t)

        return run

    # the three alternate (a slow spell on a shared box hits them alike)
    secs = interleaved({k: cpu_timed(k, f) for k, f in {"plain": plain, 1: build_fn(1), 2: build_fn(2)}.items()}, repeat)
    cpu = {k: v[-repeat:] for k, v in cpu.items()}  # the timed rounds (not the warm-up)
    assert outputs[1] == outputs[2], "spectra bytes differ between 1 and 2 workers"
    base = secs["plain"]
    print(line("spectra 224 px plain scipy dctn + log-abs (1 thread, baseline)", base, n, "img/s"))
    for workers in (1, 2):
        print(line(f"spectra 224 px dct cache + dct/dft stats, workers={workers}", secs[workers], n, "img/s", base))
    print(line("spectra 224 px CPU time: plain scipy (baseline)", cpu["plain"], n, "img/cpu-s"))
    print(line("spectra 224 px CPU time: cache + stats, workers=1", cpu[1], n, "img/cpu-s", cpu["plain"]))
    print(f"spectra: 2 threads / 1 thread {statistics.median(secs[1]) / statistics.median(secs[2]):.2f}x "
          "(ratio of medians; bytes identical)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=800)
    ap.add_argument("--videos", type=int, default=40)
    ap.add_argument("--spectra-n", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--only", choices=["preprocess", "decode", "spectra"], nargs="*")
    args = ap.parse_args()
    only = set(args.only or ["preprocess", "decode", "spectra"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_raw(tmp, args.images if only & {"preprocess"} else 0, args.videos if only & {"preprocess", "decode"} else 0)
        cwd = Path.cwd()
        if "preprocess" in only:
            bench_preprocess(tmp, args.skip_ray, args.repeat)
        if "decode" in only:
            bench_decode_once(tmp)
        if "spectra" in only:
            bench_spectra(tmp, args.spectra_n, args.repeat)
        assert Path.cwd() == cwd


if __name__ == "__main__":
    main()
