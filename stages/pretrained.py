"""DVC stage ``pretrained@<name>``: obtain pinned ImageNet weights (see dfpipe.models.pretrained)."""

import sys

from dfpipe.core.cli import run_stage, stage_args
from dfpipe.core.config import ConfigError, load_section
from dfpipe.models.pretrained import PretrainedConfig, PretrainedError, obtain


def main() -> None:
    (name,) = stage_args("pretrained", "name")
    cfg = load_section("pretrained", PretrainedConfig)
    if name not in cfg.weights:
        raise ConfigError(f"pretrained.weights.{name}: no such entry (known: {sorted(cfg.weights)})")
    try:
        rec = obtain(name, cfg.weights[name], cfg.out_dir)
    except PretrainedError as exc:
        sys.exit(str(exc))
    print(
        f"pretrained@{name}: {rec['origin']} -> {cfg.out_dir.as_posix()}/{name}.pt, sha256 {rec['sha256']} "
        f"({rec['bytes']} bytes); pin the full digest in params.yaml"
    )


if __name__ == "__main__":
    run_stage(main)
