"""The tiny demo repository of the end-to-end tests and the rehearsal: a copy of the working tree
without stage outputs, and the params profile that shrinks the demo to minutes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

OUTPUT_PREFIXES = ("data/", "models/", "metrics/eval", "metrics/train", "metrics/audit",
                   "metrics/spectra", "metrics/plots", "metrics/preprocess", "metrics/tables",
                   "metrics/backdoor", "dvc.lock", "dvc_plots")


def copy_repository(dest: Path) -> None:
    """Copy what a clean clone has (tracked + untracked-not-ignored files), minus stage outputs."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        if rel.startswith(OUTPUT_PREFIXES) or not (ROOT / rel).is_file():
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)


def tiny_params(params: dict) -> dict:
    """Shrink the demo so the whole pipeline runs in a few minutes; keep every stage and run."""
    demo = params["demo"]
    demo.update(ffhq_identities=40, gan_images=60, ffpp_videos=6, ffpp_frames=40)
    params["split"].update(scale=0.005, on_shortfall="cap")
    # the planted-leak control's clips are not shrunk: its variants keep the demo's counts (x 0.04 / 0.005),
    # else the clip-level twin has no val clip and its runs refuse to start
    for name, variant in params["variants"].items():
        if name.startswith("ctl_leak_"):
            for part in ("train", "test"):
                variant[part] = {k: n * 8 for k, n in variant[part].items()}
    params["run_defaults"]["seeds"] = [0]  # one seed: the multi-seed paths have unit tests (test_stats)
    for run in params["runs"].values():
        run.update(epochs=1, max_steps_per_epoch=1, batch_size=4)
        if "eval_batch_size" in run:
            run["eval_batch_size"] = 16
    params["evaluate"].update(bootstrap=20, featuremap_per_class=1, batch_size=16)
    params["report"].update(bootstrap=20)
    # the controls need the demo's scale: a nuisance probe on a few dozen items cannot show the
    # planted shortcut, and one seed of one step per run cannot show seed noise (a null ablation
    # needs >= 2 seeds a side). The demo's `make run` and tests/evaluation/test_reports.py check them.
    params["report"]["controls"] = {"null_ablation": {}, "shortcut": {}, "generator_families": {}}
    return params
