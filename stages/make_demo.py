"""DVC stage make_demo: write the embedded demo data (params.yaml `demo:`) under demo.out_dir."""

from dfpipe.core.cli import run_stage, stage_args
from dfpipe.core.config import load_section
from dfpipe.demo import DemoConfig, make_demo


def main() -> None:
    stage_args("make_demo")
    cfg = load_section("demo", DemoConfig)
    counts = make_demo(cfg)
    print(f"make_demo: wrote {counts} under {cfg.out_dir}")


if __name__ == "__main__":
    run_stage(main)
