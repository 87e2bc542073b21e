"""Training and inference give the same bytes under other thread settings and CPU kernels (dfpipe.core.numerics)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dfpipe.core.numerics import AVX512_PINS, CPU_PINS, has_avx512

TESTS = Path(__file__).resolve().parents[1]

#: fit() of a small ResNet-18 on a toy variant, then its test-split probabilities; prints one md5
#: over the weights, the probabilities and a float64 GEMM through numpy's OpenBLAS.
SCRIPT = textwrap.dedent(
    """
    import dataclasses, hashlib, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    import dfpipe  # first: pins the kernels before numpy and torch load
    import numpy as np
    import torch
    from dfpipe.core.config import build
    from dfpipe.training.data import VariantDataset, make_loader
    from dfpipe.training.train import RunConfig, RunPaths, TrainConfig, fit
    from dfpipe.training.checkpoint import load_model
    from helpers import approve_variant, make_variant, run_dict

    root = Path.cwd()
    make_variant(root / "data/variants/toy")
    run = build(RunConfig, run_dict(model={"name": "resnet18", "num_classes": 3, "image_size": 32}, variant="toy",
                lr=0.001, batch_size=8, epochs=1, optimizer="adam", seeds=[3], max_steps_per_epoch=3,
                bn_recalibration_images=0), where="runs.t")
    train = build(TrainConfig, {"device": "cpu", "num_workers": 0, "amp": "off", "progress": False, "threads": 2,
                                "log_every": 0, "variants_dir": "data/variants", "models_dir": "models",
                                "metrics_dir": "metrics", "scratch_dir": "scratch", "log_dir": "logs"})
    paths = RunPaths.for_run("t", run, train, Path("audit"))
    approve_variant(paths.variant_dir, paths.gate)
    fit("t", run, train, paths)
    model = load_model(root / "models/t/seed3.pt")[0].eval()
    weights, probs = hashlib.md5(), hashlib.md5()
    for t in model.state_dict().values():
        weights.update(t.numpy().tobytes())
    with torch.no_grad():
        evaluation = VariantDataset(root / "data/variants/toy", "test")
        for batch in make_loader(evaluation, 8, train=False, num_workers=0, seed=0):
            probs.update(torch.softmax(model(batch["image"])["logits"], 1).numpy().tobytes())
    a = np.random.default_rng(0).standard_normal((300, 300))
    gemm = hashlib.md5((a @ a.T @ a).tobytes())
    digests = "/".join(h.hexdigest()[:8] for h in (weights, probs, gemm))
    print("MD5", torch.backends.cpu.get_cpu_capability(), digests)
    """
)

#: Two machines as the environment can make them: thread counts, OpenBLAS kernels, and the
#: instruction set of oneDNN / ATen / MKL (AVX-512 where the CPU has it vs AVX2 only), numpy SIMD.
SETTINGS = {
    "1 thread, AVX-512 kernels": {
        "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_CORETYPE": "SkylakeX",
        "ONEDNN_MAX_CPU_ISA": "ALL", "ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AUTO",
    },
    "2 threads, older kernels": {
        "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "OPENBLAS_CORETYPE": "Prescott",
        "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE",
        "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    },
}


def _md5(tmp_path: Path, name: str, env: dict[str, str]) -> tuple[str, str]:
    cwd = tmp_path / name.replace(" ", "_").replace(",", "")
    cwd.mkdir()
    clean = {k: v for k, v in os.environ.items() if k not in {*SETTINGS[next(iter(SETTINGS))], "DFPIPE_NATIVE_CPU"}}
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(TESTS)], cwd=cwd, env={**clean, **env},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    _, capability, digest = next(line for line in out.stdout.splitlines() if line.startswith("MD5")).split()
    return capability, digest


@pytest.mark.slow
def test_training_and_inference_bytes_do_not_depend_on_threads_or_cpu_kernels(tmp_path):
    pinned = {name: _md5(tmp_path, name, env) for name, env in SETTINGS.items()}
    assert {cap for cap, _ in pinned.values()} == {"AVX2"}, pinned
    assert len({digest for _, digest in pinned.values()}) == 1, pinned
    if not has_avx512():
        pytest.skip("control needs a CPU with AVX-512 (the unpinned kernels are then AVX2 in both settings)")
    # control: unpinned, the same two settings give different bytes, so the comparison above can fail
    native = {name: _md5(tmp_path, f"native {name}", {**env, "DFPIPE_NATIVE_CPU": "1"})
              for name, env in SETTINGS.items()}
    assert len({digest for _, digest in native.values()}) == 2, native


#: In a fresh process: the pins, then what numpy and OpenCV report of their dispatch.
PIN_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    import dfpipe  # first: pins the kernels before numpy and OpenCV load
    import hashlib, cv2, numpy as np
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    x = (np.random.default_rng(0).random(4096) * 20 - 10).astype(np.float32)
    print("DISPATCH", " ".join(__cpu_dispatch__))
    print("ON", " ".join(k for k, v in __cpu_features__.items() if v))
    print("EXP", hashlib.md5(np.exp(x).tobytes()).hexdigest())
    print("CV", "AVX512_SKX" in cv2.getBuildInformation())
    """
)


def _pinned_run(env: dict[str, str]) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in {"DFPIPE_NATIVE_CPU", "NPY_DISABLE_CPU_FEATURES",
                                                              "OPENCV_CPU_DISABLE"}}
    out = subprocess.run([sys.executable, "-c", PIN_SCRIPT, str(TESTS)], env={**clean, **env},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return {**dict(line.split(" ", 1) for line in out.stdout.splitlines()), "stderr": out.stderr}


@pytest.mark.skipif(not has_avx512() and "avx2" not in Path("/proc/cpuinfo").read_text(), reason="needs an AVX2 CPU")
def test_numpy_and_opencv_are_capped_at_avx2():
    got = _pinned_run({})
    assert got["stderr"] == ""  # nothing printed at import (OpenCV speaks of a feature it cannot disable)
    capped = CPU_PINS["NPY_DISABLE_CPU_FEATURES"].split()
    # every name is one of this numpy's dispatch targets (a renamed target fails here, not silently),
    # and together they are every target above AVX2 (X86_V3)
    assert set(capped) == set(got["DISPATCH"].split()) - {"X86_V3"}, got["DISPATCH"]
    assert not set(capped) & set(got["ON"].split()) and "X86_V3" in got["ON"].split(), got["ON"]
    # OpenCV's wheel dispatches to AVX-512 and knows the pinned name (it ignores an unknown one after
    # one line: "unknown CPU feature"; on a CPU without AVX-512 the name is "unavailable" instead)
    assert got["CV"] == "True"
    named = _pinned_run({"DFPIPE_NATIVE_CPU": "1", **AVX512_PINS})["stderr"]
    assert named == "" if has_avx512() else "unavailable CPU feature" in named, named
    # control: numpy's dispatch level changes bits (AVX2 off as well gives another float32 exp), so a
    # machine whose numpy ran the AVX-512 kernels would compute other numbers than an AVX2 one
    lower = _pinned_run({"DFPIPE_NATIVE_CPU": "1", "NPY_DISABLE_CPU_FEATURES": " ".join([*capped, "X86_V3"])})
    assert lower["EXP"] != got["EXP"]
