"""dfpipe: the reproducible deepfake-detection pipeline (library behind the DVC stages)."""

__version__ = "0.1.0"
