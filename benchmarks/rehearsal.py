"""Full-scale dress rehearsal: the full profile at a small scale, through `dvc repro`, timed per stage.

    bash benchmarks/rehearsal.sh                                   # GPU machine (16 cores, one GPU)
    REHEARSAL_DEVICE=cpu REHEARSAL_TINY=1 bash benchmarks/rehearsal.sh   # tiny CPU mode (the test's)

In a temporary copy of the repository (what a clean clone has, no stage outputs; deleted at the
end), ``params.yaml`` becomes the full-scale profile (``python -m dfpipe.core.profile full``) with
these changes only: the sources are the generated demo data (``make_demo``), not ``data/raw/``, and
the face detector stays the demo's (the generated frames are 128-192 px; the tiled full-range policy
is for 1080p and is timed by benchmarks/bench_face_recall.py); ``split.scale`` is small (0.04, tiny
0.005) with ``on_shortfall: cap``; the two runs train one epoch and one seed, from scratch (the
ImageNet starts are downloads; no pretrained@ stage) (tiny: one step, the demo's 64 px networks on
the full-size crops); the report holds one table of those two runs; only their variants (v4,
v4_nomask), those variants' sources and the two runs are kept (no other evaluation, poison@, frank@ or
features@ entry; spectra statistics of v4 only); preprocessing runs on the Ray executor with one
actor per core. Crops stay at the profile's size (``preprocess.size``; the networks resize on the
device to their 224 / 299 px), K = 30 frames per video, CUDA + bf16 + channels-last,
``train.compile`` as the profile sets it. Then ``dvc repro report`` runs every stage upstream of the
report: assets, make_demo, preprocess@ (the seven sources of v4), variant@/audit@ v4 and v4_nomask,
spectra@v4, one ResNet-18 (``resnet_5_v4``) and one F3Net-Mix (``f3net_mix``) run, their
evaluations, the report.

Every stage command runs under benchmarks/rehearsal_probe.py (a `python` first on PATH), which
records its peak host RSS (the stage's whole process tree, Ray actors included) and peak GPU memory
(``torch.cuda.max_memory_allocated``). Printed: one row per stage (wall time as DVC ran it,
items handled, throughput, peaks) and each stage extrapolated to ``split.scale: 1.0``, linear in
items: ``T_full = T * N_full / N``. The GPU mode is sized to finish within 8 minutes on a 16-core
machine with one H100 (``--timeout``, default 450 s, stops `dvc repro` and prints what ran).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT / "tests"))  # the end-to-end tests' repository copy and tiny profile
from stage_times import StageTimer  # noqa: E402
from tiny_repo import copy_repository, tiny_params  # noqa: E402

from dfpipe.core.config import merged_entry  # noqa: E402
from dfpipe.core.profile import apply_profile  # noqa: E402

RUNS = ("resnet_5_v4", "f3net_mix")  # one ResNet-18, one F3Net-Mix (their own variants: v4_nomask, v4)
DEMO_KEYS = ("sources", "split.ffpp_official", "split.celebdf_test_list", "pipeline.ffpp_splits",
             "preprocess.detector", "preprocess.detector_model", "preprocess.min_score")
#: ``report:`` keys a report needs; every other one is an optional table, left out (null).
REPORT_KEYS = {"out_dir", "eval_dir", "audit_dir", "paper", "notes", "bootstrap", "ci_level", "seed", "tables",
               "leakage", "shortcut"}
#: The detectors table's recipe keys (params.yaml report.tables.detectors), if that table is gone.
RECIPE = ["train_variant", "model", "input", "f3net_mode", "backbone", "width", "init", "optimizer", "lr",
          "weight_decay", "schedule", "augment"]


_MISSING = object()


def _get(d: dict, dotted: str):
    for k in dotted.split("."):
        if not isinstance(d, dict) or k not in d:
            return _MISSING
        d = d[k]
    return d


def _set(d: dict, dotted: str, value) -> None:
    *head, last = dotted.split(".")
    for k in head:
        d = d.setdefault(k, {})
    d[last] = value


def rehearsal_params(demo: dict, full: dict, device: str, tiny: bool, workers: int, compile_: bool | None) -> dict:
    """The rehearsal's params: ``full`` (the profiled params.yaml) with the changes the docstring lists."""
    p = json.loads(json.dumps(full))  # a deep copy
    if tiny:
        tiny_params(p)  # demo sizes, split.scale 0.005 (cap), every run 1 step of batch 4, small bootstraps
    else:
        p["split"].update(scale=0.04, on_shortfall="cap")
    for key in DEMO_KEYS:
        value = _get(demo, key)
        if value is not _MISSING:
            _set(p, key, value)
    # only what the two runs need: every variant@ depends on all of data/faces (DVC cannot
    # interpolate a variant's source list), so the sources are cut to those of the runs' variants
    variants = {merged_entry(p, "runs", run)["variant"] for run in RUNS}
    p["variants"] = {k: v for k, v in p["variants"].items() if k in variants}
    used = {src for v in p["variants"].values() for part in ("train", "test") for src in (v.get(part) or {})}
    p["sources"] = {k: v for k, v in p["sources"].items() if k in used}
    p["runs"] = {run: p["runs"][run] for run in RUNS}
    p["evaluations"], p["frank"] = {}, {}
    p["pretrained"]["fetch"] = []
    for run in RUNS:
        entry = p["runs"][run]
        # ImageNet starts are downloads (pretrained@), which an offline GPU machine cannot make;
        # loading them is a negligible part of a stage, so the rehearsal trains from scratch
        entry.update(epochs=1, seeds=[0], patience=None, init="scratch")
        if tiny:  # CPU smoke test: full-size crops in, the demo's network sizes (the device resizes)
            width = merged_entry(demo, "runs", run)["model"].get("width", 1.0)
            entry["model"] = {**entry.get("model", {}), "image_size": 64, "width": width}
            entry["bn_recalibration_images"] = 8
        else:
            entry["max_steps_per_epoch"] = 0  # one full pass over the training split
    rt = p.setdefault("runtime", {})
    rt.setdefault("preprocess", {}).update(executor="ray", workers=workers, ray_address=None)
    rt.setdefault("demo", {})["workers"] = workers
    rt.setdefault("spectra", {})["workers"] = workers
    loader = 0 if device == "cpu" else min(8, workers)
    rt.setdefault("train", {}).update(device=device, num_workers=loader, progress=False)
    rt.setdefault("evaluate", {})["num_workers"] = loader
    p["evaluate"]["device"] = device
    if device == "cpu":  # bf16 autocast is emulated (slow) on the CPU; the CUDA path is the one rehearsed
        p["train"]["amp"] = "off"
        p["evaluate"]["amp"] = "off"
    if compile_ is not None:
        p["train"]["compile"] = compile_
    p["spectra"].update(variants=["v4"], cache=[])
    p["features"]["caches"] = {}
    report = p["report"]
    detectors = report["tables"].get("detectors", {})
    report["tables"] = {"rehearsal": {
        "caption": "Dress rehearsal: one ResNet-18 and one F3Net-Mix run",
        "rows": {"ResNet-18": RUNS[0], "F3Net-Mix": RUNS[1]}, "reference": "ResNet-18",
        "varies": detectors.get("varies", RECIPE), "strict": False, "paper": False, "notes": "", "mask": False}}
    report["leakage"] = {"audits": [], "audit_keys": ["leak_check"], "within": [], "pairs": {}}
    report["shortcut"] = []
    for key in set(report) - REPORT_KEYS:  # the optional tables (crossdataset, unseen, controls, ...)
        report[key] = None
    # stages built from the runs' variants that the trimmed report does not read
    for section in ("poison", "audit_poisoned"):
        if isinstance(p.get(section), dict):
            p[section] = {}
    if isinstance(p.get("backdoor"), dict) and "experiments" in p["backdoor"]:
        p["backdoor"]["experiments"] = {}
    return p


def prepare(copy: Path, device: str, tiny: bool, workers: int, compile_: bool | None) -> tuple[dict, dict]:
    """Copy the repository to ``copy`` and write its rehearsal params and dvc.yaml; (full, rehearsal) params."""
    copy.mkdir(parents=True)
    copy_repository(copy)
    demo = yaml.safe_load((copy / "params.yaml").read_text())
    apply_profile("full", copy / "params.yaml")
    full = yaml.safe_load((copy / "params.yaml").read_text())
    params = rehearsal_params(demo, full, device, tiny, workers, compile_)
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (copy / "data" / "features").mkdir(parents=True, exist_ok=True)  # train@'s dep; no features@ cache here
    _check([sys.executable, "-m", "dfpipe.pipeline.dvcfile", "--write"], copy)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=r", "-c", "user.email=r@r", "commit", "-qm", "rehearsal"]):
        _check(cmd, copy)
    return full, params


def _check(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=_env(cwd))
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def _env(copy: Path) -> dict:
    """The stages' environment: the probe's `python` first on PATH, the assets folder, no Ray cluster."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "VIRTUAL_ENV")}
    shim = copy.parent / "bin"
    env["PATH"] = os.pathsep.join([str(shim), str(Path(sys.executable).parent), env.get("PATH", "")])
    if "DFPIPE_ASSETS_FROM" not in env:
        for d in (ROOT / "models" / "mediapipe", ROOT / ".scratch" / "assets"):
            if len(list(d.glob("*.tflite"))) >= 3:
                env["DFPIPE_ASSETS_FROM"] = str(d)
                break
    env.update(PYTHONUNBUFFERED="1", DVC_NO_ANALYTICS="1", TQDM_DISABLE="1",
               REHEARSAL_PROBE_LOG=str(copy.parent / "probe.jsonl"))
    ray_dir = copy.parent / "ray-dir"  # a link to a short folder: Ray's socket paths must stay < 108 bytes
    if ray_dir.is_symlink():
        env["RAY_TMPDIR"] = os.readlink(ray_dir)
    return env


def write_shim(bin_dir: Path, copy: Path) -> None:
    """``bin_dir/python``: the real interpreter running benchmarks/rehearsal_probe.py."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    shim = bin_dir / "python"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{copy / "benchmarks" / "rehearsal_probe.py"}" "$@"\n')
    shim.chmod(0o755)


def dvc_command() -> list[str]:
    dvc = Path(sys.executable).parent / "dvc"
    return [str(dvc)] if dvc.is_file() else [sys.executable, "-m", "dvc"]


def repro(copy: Path, timeout_s: float, log) -> tuple[int, StageTimer, list[str]]:
    """`dvc repro report` in ``copy``; DVC's lines go to ``log``, stage starts to stdout."""
    timer, lines = StageTimer(), []
    proc = subprocess.Popen([*dvc_command(), "repro", "report"], cwd=copy, env=_env(copy), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    expired = threading.Event()

    def stop() -> None:
        expired.set()
        print(f"rehearsal: --timeout {timeout_s:.0f} s reached, stopping dvc repro", flush=True)
        os.killpg(proc.pid, signal.SIGTERM)  # the process group this call started (DVC and its stage)

    watchdog = threading.Timer(timeout_s, stop)
    watchdog.start()
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            log.write(line)
            log.flush()
            lines.append(line)
            stage = timer.feed(line)
            if stage:
                print(f"  {time.perf_counter() - timer.start:6.0f} s  {stage}", flush=True)
        rc = proc.wait()
    finally:
        watchdog.cancel()
    timer.finish()
    return 124 if expired.is_set() else rc, timer, lines


def _rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.read_metadata(path).num_rows if path.is_file() else 0


def _variant_rows(copy: Path, variant: str, splits=("train", "val", "test")) -> int:
    return sum(_rows(copy / "data" / "variants" / variant / s / "manifest.parquet") for s in splits)


@dataclass
class Row:
    stage: str
    wall_s: float
    items: float | None = None  # None: not a per-item stage (not extrapolated)
    unit: str = "items/s"
    full_items: float | None = None
    peak_gpu_mib: float | None = None
    peak_rss_mib: float | None = None
    step_rate: float | None = None  # train@: img/s of the training steps alone (fit's log)

    @property
    def full_s(self) -> float | None:
        """``T * N_full / N``; train@: ``T - N / r + N_full / r`` with ``r`` the steps' own img/s."""
        if not self.items or self.full_items is None:
            return None
        if self.step_rate:
            return max(self.wall_s - self.items / self.step_rate, 0.0) + self.full_items / self.step_rate
        return self.wall_s * self.full_items / self.items


def stage_rows(copy: Path, timer: StageTimer, probes: dict[str, dict], params: dict, full: dict) -> list[Row]:
    """One row per stage that ran: items handled (``N``) and at ``split.scale: 1.0`` (``N_full``)."""
    s = float(params["split"]["scale"])
    evaluated: dict[str, float] = {}
    rows = []
    for stage, wall in timer.times.items():
        row = Row(stage, wall)
        probe = probes.get(stage, {})
        row.peak_gpu_mib, row.peak_rss_mib = probe.get("peak_gpu_mib"), probe.get("peak_rss_mib")
        rows.append(row)
        if probe.get("rc") == 0:  # a stage that failed or was stopped has no outputs to count
            _count(row, copy, params, full, s, evaluated)
    return rows


def _count(row: Row, copy: Path, params: dict, full: dict, s: float, evaluated: dict[str, float]) -> None:
    """Fill ``row.items`` and ``row.full_items`` from the stage's outputs."""
    kind, _, key = row.stage.partition("@")
    if kind == "preprocess":
        m = json.loads((copy / "metrics" / "preprocess" / f"{key}.json").read_text())
        row.items = m["files"]["offered"] + m["frames"]["sampled"]  # images decoded + video frames sampled
        row.full_items = row.items / s
    elif kind in ("variant", "audit", "spectra"):
        row.items = _variant_rows(copy, key)
        row.full_items = row.items / s
    elif kind == "train":
        run, run_full = merged_entry(params, "runs", key), merged_entry(full, "runs", key)
        seen = 0
        for seed in run["seeds"]:
            curve = (copy / "metrics" / "train" / key / "curves" / f"seed{seed}.tsv").read_text().split()
            seen += int(curve[-1])  # images_seen of the last epoch
        row.items, row.unit = seen, "img/s"
        train_items = _variant_rows(copy, run["variant"], ("train",))
        row.full_items = train_items / s * run_full["epochs"] * len(run_full["seeds"])
        # the training steps' own rate (fit's log line per epoch: compilation included, start-up,
        # precise BN and validation not): only the steps grow with the profile's epochs and seeds
        log = copy / ".scratch" / "logs" / "train" / f"{key}.log"
        text = log.read_text() if log.is_file() else ""
        rates = [float(r) for r in re.findall(r"val macro-F1 .*\(([\d.]+) img/s", text)]
        if rates and min(rates) > 0:
            row.step_rate = len(rates) / sum(1 / r for r in rates)  # harmonic mean: equal images per epoch
    elif kind == "evaluate":
        run = merged_entry(params, "runs", key) if key in params["runs"] else None
        variant = run["variant"] if run else params["evaluations"][key]["variant"]
        seeds = run["seeds"] if run else [0]
        seeds_full = merged_entry(full, "runs", key)["seeds"] if run else seeds
        row.items, row.unit = _variant_rows(copy, variant, ("test",)) * len(seeds), "img/s"
        row.full_items = row.items / s * len(seeds_full) / len(seeds)
        evaluated[key] = row.items
    elif kind == "report":
        row.items = sum(evaluated.values()) or None
        row.full_items = row.items / s if row.items else None


def _fmt(x: float | None, spec: str = ".0f") -> str:
    return "-" if x is None else format(x, spec)


def table(rows: list[Row], total_s: float, s: float) -> str:
    out = ["| stage | wall (s) | items | throughput | peak GPU (MiB) | peak RSS (MiB) | at split.scale 1.0 (s) |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        rate = f"{(r.step_rate or r.items / r.wall_s):.1f} {r.unit}" if r.items else "-"
        out.append(f"| {r.stage} | {r.wall_s:.1f} | {_fmt(r.items)} | {rate} | {_fmt(r.peak_gpu_mib)} | "
                   f"{_fmt(r.peak_rss_mib)} | {_fmt(r.full_s)} |")
    full = sum(r.full_s or 0.0 for r in rows)
    out.append(f"| **total** (`dvc repro`) | {total_s:.1f} | | | | | {full:.0f} ({full / 3600:.1f} h) |")
    out.append("")
    out.append(f"Extrapolation, linear in items: T_full = T * N_full / N, N = items the stage handled here, "
               f"N_full = N / {s:g} (split.scale here; the variants draw scale x their counts and the sources "
               "must supply them); evaluate: x the profile's seeds / the seeds run. train: N_full = train-split "
               "items / split.scale x the profile's epochs x seeds, and only the steps scale: T_full = T - N / r + "
               "N_full / r, r = the steps' img/s (the throughput shown). Elsewhere T includes start-up "
               "(interpreter, Ray, CUDA context), which overstates small stages; make_demo and assets do not scale.")
    return "\n".join(out)


def main() -> int:
    env = os.environ
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default=env.get("REHEARSAL_DEVICE", "cuda"), choices=["cuda", "cpu"])
    ap.add_argument("--tiny", action="store_true", default=env.get("REHEARSAL_TINY", "0") == "1",
                    help="tiny data and one step per run (the CPU smoke test); env REHEARSAL_TINY=1")
    ap.add_argument("--compile", choices=["profile", "true", "false"], default=env.get("REHEARSAL_COMPILE", "profile"),
                    help="train.compile: as the full profile sets it, or forced; env REHEARSAL_COMPILE")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="Ray actors, demo/spectra workers")
    ap.add_argument("--timeout", type=float, default=float(env.get("REHEARSAL_TIMEOUT_S", 450)),
                    help="seconds `dvc repro` may run (default 450: the whole rehearsal within 8 minutes)")
    ap.add_argument("--workdir", type=Path, default=None, help="parent of the temporary copy (default: $TMPDIR)")
    ap.add_argument("--keep", action="store_true", default=env.get("REHEARSAL_KEEP", "0") == "1",
                    help="keep the temporary copy (its path is printed); env REHEARSAL_KEEP=1")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = ap.parse_args()
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("rehearsal: CUDA is not available (REHEARSAL_DEVICE=cpu for the CPU mode)", file=sys.stderr)
            return 2
    compile_ = None if args.compile == "profile" else args.compile == "true"
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="dfpipe-rehearsal-", dir=args.workdir))
    copy = work / "repo"
    ray_tmp = Path(tempfile.mkdtemp(prefix="dfr-", dir="/tmp"))  # each stage's private Ray instance
    (work / "ray-dir").symlink_to(ray_tmp)
    try:
        full, params = prepare(copy, args.device, args.tiny, args.workers, compile_)
        write_shim(work / "bin", copy)
        print(f"rehearsal in {copy}: device {args.device}, {'tiny' if args.tiny else 'small'} scale "
              f"(split.scale {params['split']['scale']}), {args.workers} Ray actors, train.compile "
              f"{params['train'].get('compile', False)}, set-up {time.perf_counter() - t0:.1f} s", flush=True)
        with (work / "dvc.log").open("w", encoding="utf-8") as log:
            rc, timer, lines = repro(copy, args.timeout, log)
        probes = {}
        probe_log = work / "probe.jsonl"
        if probe_log.is_file():
            for line in probe_log.read_text().splitlines():
                rec = json.loads(line)
                probes[rec["stage"]] = rec
        rows = stage_rows(copy, timer, probes, params, full)
        print(table(rows, sum(timer.times.values()), float(params["split"]["scale"])), flush=True)
        if args.json:
            args.json.write_text(json.dumps([r.__dict__ | {"full_s": r.full_s} for r in rows], indent=1))
        if rc:
            print("".join(lines[-60:]), file=sys.stderr)
            print(f"rehearsal: dvc repro failed ({rc}); the table holds the stages that ran", file=sys.stderr)
        print(f"rehearsal: {time.perf_counter() - t0:.0f} s in all", flush=True)
        return rc
    finally:
        if args.keep:
            print(f"rehearsal: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(ray_tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
