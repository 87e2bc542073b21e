"""features@<cache>: run one frozen encoder (CLIP / LGrad transformation model / face landmarks) once over a variant.

Usage (from the repository root): python stages/features.py <cache>
Writes <features.out_dir>/<encoder>/<variant>/{train,val,test}/ (dfpipe.features.encoders).
"""

from __future__ import annotations

import sys

from dfpipe.core.cli import run_stage, stage_args
from dfpipe.core.config import load_section
from dfpipe.core.numerics import set_torch_threads
from dfpipe.features.encoders import FeaturesConfig, build_cache


def main(argv: list[str]) -> None:
    (name,) = stage_args("features", "cache", argv=argv)
    cfg = load_section("features", FeaturesConfig)
    set_torch_threads(cfg.threads)
    for split, index in build_cache(name, cfg).items():
        print(
            f"features@{name}: {split} {index['count']} x {index['shape']} float16"
            + (" (random encoder: demo features)" if index["random"] else "")
            + (f" status {index['status']}" if "status" in index else "")  # landmarks: rejected items by reason
        )


if __name__ == "__main__":
    run_stage(main, sys.argv[1:])
