"""spectra@<variant>: cache log-DCT/DFT spectra of a variant's splits, train-only stats, plots.

Usage (from the repository root): python stages/spectra.py <variant>
Writes data/spectra/<variant>/ (cache of spectra.kind; stats.npz for that kind and
stats_dct.npz / stats_dft.npz for both, which dct/dft-input runs read), metrics/spectra/<variant>.json,
metrics/plots/spectra/<variant>/.
"""

from __future__ import annotations

import sys

from dfpipe.core.cli import stage_args
from dfpipe.core.config import ConfigError, load_section
from dfpipe.core.io import write_json
from dfpipe.features.spectra import SpectraConfig, build_variant, write_plots


def main(argv: list[str]) -> None:
    (name,) = stage_args("spectra", "variant", argv=argv)
    cfg = load_section("spectra", SpectraConfig)
    if name not in cfg.variants:
        raise ConfigError(f"spectra: variant {name!r} is not in spectra.variants {list(cfg.variants)}")
    metrics = build_variant(name, cfg)
    write_plots(name, cfg)
    write_json(cfg.metrics_dir / f"{name}.json", metrics)


if __name__ == "__main__":
    main(sys.argv[1:])
