"""Every script in benchmarks/ still runs against the library (on the CPU, tiny sizes) and prints the
figures its README lines quote: min / median over repeats and the ratio against the plain-library
baseline measured in the same run. They are run rarely (the GPU ones on a lent machine, where a
broken script wastes the lease), so a script that no longer matches the library fails here."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
RATIO = r"ratio (\d+\.\d+)x"
MIN_MEDIAN = r"([\d.]+) /\s+([\d.]+) (?:img/s|items/s) \(min / median of (\d+)\)"


def _run(script: str, *args: str, stdin: str | None = None, cwd: Path = ROOT, env: dict | None = None) -> str:
    env = {**os.environ, "TQDM_DISABLE": "1", **(env or {})}
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, input=stdin, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_every_script_is_tested():
    """A new script in benchmarks/ needs a smoke test (here or in another test file that names it)."""
    text = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("*.py"))
    scripts = sorted(p.name for p in BENCH.iterdir() if p.suffix in (".py", ".sh") and p.name != "timing.py")
    missing = [s for s in scripts if f'"{s}"' not in text]
    assert scripts and not missing, missing


def _probe_digests(out: str) -> dict[str, str]:
    return dict(re.findall(r"^(\S.*?)\s+([0-9a-f]{16})\s", out + "\n", re.M))


def test_repro_probe_gives_one_digest_per_component_and_sees_a_kernel_change():
    out = _run("repro_probe.py", "--faces", "2")
    got = _probe_digests(out)
    assert len(got) == 11 and "numpy ufuncs" in got and "torch train" in got, out
    assert re.search(r"^this machine: .*; 2 faces, [1-9]\d* detections, [1-9]\d* crops$", out, re.M), out
    # control: numpy held below AVX2 (a machine with other kernels), every other pin as the package
    # sets it, changes numpy's digest and only it
    from dfpipe.core.numerics import AVX512_PINS, CPU_PINS, has_avx512

    pins = {**CPU_PINS, **(AVX512_PINS if has_avx512() else {})}
    below = {"NPY_DISABLE_CPU_FEATURES": CPU_PINS["NPY_DISABLE_CPU_FEATURES"] + " X86_V3"}
    lower = _probe_digests(_run("repro_probe.py", "--faces", "2", env={**pins, "DFPIPE_NATIVE_CPU": "1", **below}))
    assert {k for k in got if got[k] != lower[k]} == {"numpy ufuncs"}, (got, lower)


def test_bench_ingest_compares_read_image_with_imdecode():
    out = _run("bench_ingest.py", "--size", "64", "--repeat", "2")
    for fmt in ("png", "jpg"):
        m = re.search(rf"^64 px {fmt} .*read_image\s+([\d.]+) /\s+([\d.]+) ms, cv2.imdecode alone .*{RATIO}", out, re.M)
        assert m and float(m.group(3)) > 0, out
    assert re.search(r"^video item with mask: 2 container opens for 2 files", out, re.M), out


def test_bench_scale_measures_executors_decode_once_and_spectra():
    out = _run("bench_scale.py", "--images", "16", "--videos", "2", "--spectra-n", "8", "--repeat", "1", "--skip-ray")
    for what in ("images", "videos"):
        for workers in (1, 2):
            m = re.search(rf"^preprocess {what} +local workers={workers} steady: +{MIN_MEDIAN}", out, re.M)
            assert m and float(m.group(1)) > 0, out
        assert re.search(rf"^preprocess {what}: 2 workers / 1 worker \d+\.\d+x", out, re.M), out
    assert "DIFFER" not in out and re.search(r"^decode-once .* one pass [\d.]+ s, [\d.]+x$", out, re.M), out
    assert re.search(rf"^spectra 224 px plain scipy .*{MIN_MEDIAN}", out, re.M), out
    for workers in (1, 2):
        assert re.search(rf"^spectra 224 px dct cache \+ dct/dft stats, workers={workers}: .*{RATIO} baseline", out, re.M), out
    assert re.search(r"^spectra: 2 threads / 1 thread \d+\.\d+x", out, re.M), out
    assert re.search(rf"^spectra 224 px CPU time: cache \+ stats, workers=1: .*{RATIO} baseline", out, re.M), out


@pytest.mark.slow
def test_bench_scale_ray_executor():
    out = _run("bench_scale.py", "--images", "16", "--videos", "2", "--repeat", "1", "--only", "preprocess")
    assert re.search(r"^preprocess images: 2 workers / 1 worker .*, Ray 2 CPUs / local 2 workers \d+\.\d+x", out, re.M), out


def test_bench_spectra_runs_against_the_library():
    out = _run("bench_spectra.py", "--n64", "16", "--n224", "4", "--batch", "4", "--repeat", "1")
    for size in (64, 224):
        block = out.split(f"== {size} px")[1]
        assert re.search(rf"^baseline scipy.fft.dctn \+ log-abs .*{MIN_MEDIAN}", block, re.M), out
        for what in ("log_spectrum_np dct", "log_spectrum_np dft", "cache build"):
            assert re.search(rf"^{what} .*{RATIO} baseline", block, re.M), (what, out)
        assert re.search(r"^SpectrumTransform CPU .*: +[\d.]+ images/s", block, re.M), out


def test_bench_preprocess_sampled_against_every_frame():
    out = _run("bench_preprocess.py", "--frames", "24", "--width", "160", "--height", "120", "--k", "4",
               "--gops", "12", "--repeat", "1")
    assert re.search(r"^  sampled K=4 .*: +[\d.]+ / +[\d.]+ s", out, re.M), out
    assert re.search(r"^  speed-up: [\d.]+x \(ratio of medians\)", out, re.M), out


def test_bench_loader_reports_every_loader_against_the_plain_gather():
    out = _run("bench_loader.py", "--sizes", "32", "--n", "64", "--batch", "16", "--repeat", "2")
    assert re.search(rf"^32 px  plain .*{MIN_MEDIAN}", out, re.M), out
    rates = re.findall(rf"^32 px  (?:before|after) [^:]*:\s+{MIN_MEDIAN}  {RATIO} baseline$", out, re.M)
    assert len(rates) == 3 and all(float(r[0]) > 0 for r in rates), out


def test_bench_train_measures_every_model_on_cpu():
    out = _run("bench_train.py", "--device", "cpu", "--size", "32", "--batch", "2", "--steps", "1",
               "--warmup", "1", "--amp", "bf16", "--channels-last", "--models", "resnet18")
    m = re.search(r"^train resnet18 \([\d.]+ M params\): ([\d.]+) img/s \(1 steps", out, re.M)
    assert m and float(m.group(1)) > 0, out
    assert re.search(r"^data path \+masks: \d+ img/s", out, re.M), out


@pytest.mark.slow
def test_bench_train_segmentation_model_and_profile():
    out = _run("bench_train.py", "--device", "cpu", "--size", "64", "--batch", "4", "--steps", "1",
               "--warmup", "1", "--amp", "bf16", "--channels-last", "--profile", "1", "--models", "f3net_mix_seg")
    assert re.search(r"^train f3net_mix_seg \([\d.]+ M params\): ([\d.]+) img/s", out, re.M), out


def test_bench_models_times_a_registered_model():
    out = _run("bench_models.py", "--iters", "1", "--batch", "2", "--threads", "1", "--skip-paper-size",
               "--models", "npr")
    m = re.search(r"^npr\s+([\d.]+)\s+([\d.]+)\s+-$", out, re.M)  # params (M), img/s at 64 px, no paper size
    assert m and float(m.group(1)) > 0 and float(m.group(2)) > 0, out


@pytest.mark.slow
def test_bench_demo_train_runs_a_demo_train_stage():
    out = _run("bench_demo_train.py", "--runs", "resnet_5")
    m = re.search(r"^\| resnet_5 \| 2 \| ([\d.]+) \| ([\d.]+) \|$", out, re.M)
    assert m and float(m.group(1)) > 0, out


@pytest.mark.slow
def test_bench_demo_train_compares_pinned_with_unpinned_kernels():
    out = _run("bench_demo_train.py", "--runs", "resnet_5", "--native")
    m = re.search(r"^\| resnet_5 \| 2 \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| (\d+\.\d+)x \|$", out, re.M)
    assert m and float(m.group(3)) > 0 and float(m.group(4)) > 0, out


def test_bench_demo_train_knows_the_params_runs():
    """The fast half of the demo-train benchmark: it reads params.yaml's runs (a renamed run fails)."""
    out = _run("bench_demo_train.py", "--help")
    assert "--runs" in out


def test_loop_times_prints_min_and_median():
    out = _run("loop_times.py", "--repeat", "2", "--no-dvc", "--only", "numpy")
    assert re.search(r"^\| interpreter \+ numpy \| ([\d.]+) \| ([\d.]+) \|$", out, re.M), out


def test_stage_times_tables_dvc_output():
    log = "Running stage 'prepare':\nx\nRunning stage 'train@a':\nRunning stage 'train@b':\n"
    out = _run("stage_times.py", stdin=log)
    assert re.search(r"^\| train \| 2 \| \d+ \|$", out, re.M) and re.search(r"^\| \*\*total\*\* .* \| 3 \|", out, re.M), out


def test_cache_size_groups_the_lock_outputs(tmp_path):
    cache = tmp_path / ".dvc" / "cache" / "files" / "md5"
    (cache / "ab").mkdir(parents=True)
    (cache / "ab" / "cdef").write_bytes(b"x" * 1000)
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages:\n  s:\n    outs:\n    - path: data/faces/x.npy\n"
                                       "      md5: abcdef\n")
    out = _run("cache_size.py", "--repo", str(tmp_path))
    assert re.search(r"^DVC cache total: 0\.0 MB", out, re.M) and "data/faces" in out, out


def test_gpu_script_calls_scripts_with_options_they_accept():
    """gpu.sh runs on a lent machine only: check its syntax and every option it passes."""
    text = (BENCH / "gpu.sh").read_text()
    assert subprocess.run(["bash", "-n", str(BENCH / "gpu.sh")]).returncode == 0
    common = re.search(r"common=\(([^)]*)\)", text).group(1).split()
    calls = re.findall(r"python3 benchmarks/(\w+\.py) (.*?)(?: 2>&1|$)", text.replace("\\\n", " "), re.M)
    assert {c[0] for c in calls} == {"bench_train.py", "bench_loader.py"}, calls
    for script, args in calls:
        helptext = _run(script, "--help")
        words = [w for w in shlex.split(args.replace('"${common[@]}"', " ".join(common))) if w.startswith("--")]
        assert words and all(w in helptext for w in words), (script, words)


def test_bench_face_recall_scores_every_policy():
    out = _run("bench_face_recall.py", "--tiny")
    assert re.search(r"^\| whole \| 0\.5 \| [\d.]+ % ", out, re.M), out
