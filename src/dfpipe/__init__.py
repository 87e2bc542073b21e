"""dfpipe: the reproducible deepfake-detection pipeline (library behind the DVC stages)."""

from dfpipe.core.numerics import pin_cpu_numerics

# Before any stage imports numpy or torch: the same kernels, hence the same bytes, on every
# x86-64 machine (dfpipe.core.numerics says which and why).
pin_cpu_numerics()

__version__ = "0.1.0"
