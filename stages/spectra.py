"""spectra@<variant>: train-only spectrum statistics and plots in one pass; the cache if listed.

Usage (from the repository root): python stages/spectra.py <variant>
Writes data/spectra/<variant>/ (stats_dct.npz / stats_dft.npz, which dct/dft-input runs read,
stats.npz for spectra.kind, and for variants in spectra.cache the spectra.kind cache of every split,
which the Frank et al. baseline reads), metrics/spectra/<variant>.json, metrics/plots/spectra/<variant>/.
"""

from __future__ import annotations

import sys

from dfpipe.core.cli import run_stage, stage_args
from dfpipe.core.config import ConfigError, load_section
from dfpipe.core.io import write_json
from dfpipe.features.spectra import SpectraConfig, build_variant
from dfpipe.features.spectra_plots import write_plots


def main(argv: list[str]) -> None:
    (name,) = stage_args("spectra", "variant", argv=argv)
    cfg = load_section("spectra", SpectraConfig)
    if name not in cfg.variants:
        raise ConfigError(f"spectra: variant {name!r} is not in spectra.variants {list(cfg.variants)}")
    metrics, means = build_variant(name, cfg)
    write_plots(name, cfg, means)
    write_json(cfg.metrics_dir / f"{name}.json", metrics)


if __name__ == "__main__":
    run_stage(main, sys.argv[1:])
