"""CPU kernels pinned so that every stage gives the same bytes on any x86-64 machine with AVX2.

PyTorch, oneDNN, MKL and OpenBLAS pick their kernels at run time from the CPU's instruction set,
and kernels of different vector widths add in different orders: measured on this project's
ResNet-18, three Adam steps give different weights under oneDNN's AVX-512 and AVX2 kernels, and
under MKL's AVX-512 and AVX2 paths (inference differs too). The variables below cap each library
at AVX2, which every x86-64 CPU since 2013-2015 (Intel Haswell, AMD Excavator/Zen) has, so a
laptop and a server compute the same thing:

- ``ATEN_CPU_CAPABILITY=avx2``: PyTorch's own vectorised kernels (elementwise, reductions);
- ``ONEDNN_MAX_CPU_ISA=AVX2``: oneDNN (convolutions, pooling, batch norm on CPU);
- ``MKL_CBWR=AVX2,STRICT``, ``MKL_DYNAMIC=FALSE``: MKL's conditional numerical reproducibility
  (PyTorch's GEMMs) on the AVX2 path, STRICT so that results do not depend on the arrays'
  alignment (Intel's CNR notes: without it only 64-byte aligned inputs reproduce), and exactly
  the requested threads, never fewer chosen at run time;
- ``OPENBLAS_CORETYPE=Haswell``, ``OPENBLAS_NUM_THREADS=1``: OpenBLAS's kernel and thread count in
  numpy and scipy (a float64 GEMM gives other bits on 2 threads than on 1; the library reads both
  when it loads, so this module runs before numpy is imported: the package's ``__init__`` calls
  :func:`pin_cpu_numerics`). The project's numpy linear algebra is small (the audit's probes),
  so one thread costs little;
- ``NPY_DISABLE_CPU_FEATURES``: numpy's own SIMD loops (its ``__cpu_dispatch__`` targets above
  AVX2). numpy's float32 ``exp`` and ``sin`` and float64 ``tanh`` give other bits at another
  dispatch level (measured: AVX2 against its baseline on an AVX2 machine), and on AVX-512 it
  takes other kernels again (Intel's SVML for float64 ``exp``, ``log``, ``tanh``...);
- ``OPENCV_CPU_DISABLE=AVX512-SKX`` (on AVX-512 CPUs): OpenCV's AVX-512 dispatch (the wheel builds 9 source files
  also for AVX-512, ``cv2.getBuildInformation()``); its AVX2 paths are the ones every machine runs.
  Preprocessing gave the same bytes with OpenCV held at SSE (AVX and AVX2 off) on an AVX2 machine.

oneDNN and ATen read their variables lazily, at the first kernel, so the pin also holds when torch
was imported first. The cost is the AVX-512 speed-up: about 1.3x per CPU training step of ResNet-18
(``benchmarks/bench_train.py``); GPU runs are unaffected. The thread count matters as well
(training's backward reductions split by thread), so each torch stage sets a fixed count from its
params (``train.threads``, ``evaluate.threads``, ``features.threads``), never the machine's core count.

Not covered: MediaPipe's XNNPACK (preprocessing) picks its kernels without a switch; its float
outputs become integer boxes and thresholded masks, which absorb last-bit differences in all
but rare frames. Other CPUs (ARM) give other bits. Setting ``DFPIPE_NATIVE_CPU=1`` leaves the
libraries at their fastest kernels, and results are then those of the machine.
"""

from __future__ import annotations

import os
import platform

#: The variables set (overriding the environment's) before numpy or torch start.
CPU_PINS: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_CBWR": "AVX2,STRICT",
    "MKL_DYNAMIC": "FALSE",
    "OPENBLAS_CORETYPE": "Haswell",
    "OPENBLAS_NUM_THREADS": "1",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
}

#: Set as well where the CPU has AVX-512 (OpenCV prints a line at every import when it is asked
#: to disable a feature the CPU lacks).
AVX512_PINS: dict[str, str] = {"OPENCV_CPU_DISABLE": "AVX512-SKX"}

#: Environment switch: a non-empty value other than "0" leaves the kernels unpinned.
NATIVE_ENV = "DFPIPE_NATIVE_CPU"


def pinned() -> bool:
    """Whether this process pins kernels: an x86-64 machine and no ``DFPIPE_NATIVE_CPU``."""
    native = os.environ.get(NATIVE_ENV, "") not in ("", "0")
    return not native and platform.machine().lower() in ("x86_64", "amd64")


def has_avx512() -> bool:
    """Whether this CPU has AVX-512 (Linux: the ``avx512f`` flag of ``/proc/cpuinfo``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            return "avx512f" in fh.read()
    except OSError:
        return False


def pin_cpu_numerics() -> None:
    """Set :data:`CPU_PINS` (and :data:`AVX512_PINS` on an AVX-512 CPU) in ``os.environ``
    (inherited by every worker process) when :func:`pinned`."""
    if pinned():
        os.environ.update(CPU_PINS)
        if has_avx512():
            os.environ.update(AVX512_PINS)


def set_torch_threads(threads: int) -> None:
    """Fix torch's intra-op thread count (>= 1): results then do not depend on the machine's cores."""
    import torch

    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
