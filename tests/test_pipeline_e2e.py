"""End to end: the real dvc.yaml on a tiny generated data set, in a fresh copy of the repository.

One session-scoped `dvc repro` of the whole pipeline (make_demo -> ... -> report) with params shrunk
by :func:`tiny_params`; then the promises of the README are checked on it: a clean `dvc status`,
every table written, byte-identical data and CPU-training outputs on `dvc repro -f`, and an
interrupted stage that finishes with the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
# Everything a stage writes; the copy must start without any of it.
OUTPUT_PREFIXES = ("data/", "models/", "metrics/eval", "metrics/train", "metrics/audit",
                   "metrics/spectra", "metrics/plots", "metrics/preprocess", "metrics/tables",
                   "dvc.lock", "dvc_plots")


def tiny_params(params: dict) -> dict:
    """Shrink the demo so the whole pipeline runs in a few minutes; keep every stage and run."""
    demo = params["demo"]
    demo.update(ffhq_identities=40, gan_images=60, ffpp_videos=6, ffpp_frames=40)
    params["split"].update(scale=0.005, on_shortfall="cap")
    for run in params["runs"].values():
        run.update(epochs=1, max_steps_per_epoch=1, batch_size=4)
        if "eval_batch_size" in run:
            run["eval_batch_size"] = 16
    params["evaluate"].update(bootstrap=20, featuremap_per_class=1, batch_size=16)
    params["report"].update(bootstrap=20)
    return params


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("DVC_NO_ANALYTICS", None)
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 1500) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def dvc(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run([str(VENV_BIN / "dvc"), *args], cwd=cwd, check=check)


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
    # set-up assets (git-ignored, fetched by `make setup`)
    shutil.copytree(ROOT / "models" / "mediapipe", dest / "models" / "mediapipe")


def lock_hashes(repo: Path) -> dict[str, str]:
    """path -> md5 of every cached output in dvc.lock (metrics files with timings excluded)."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    out = {}
    for stage in lock["stages"].values():
        for o in stage.get("outs", []):
            if o["path"].startswith(("data/", "models/")) or o["path"].endswith(".parquet"):
                out[o["path"]] = o["md5"]
    return out


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("pipeline") / "repo"
    repo.mkdir()
    copy_repository(repo)
    params = tiny_params(yaml.safe_load((repo / "params.yaml").read_text()))
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny"]):
        run(cmd, cwd=repo)
    # keep the DVC cache and remote inside the temporary folder
    dvc("remote", "modify", "local", "url", str(repo.parent / "remote"), cwd=repo)
    dvc("repro", cwd=repo)
    return repo


def test_repro_then_status_is_clean(pipeline):
    out = dvc("status", cwd=pipeline).stdout
    assert "up to date" in out, out


def test_every_table_and_plot_is_written(pipeline):
    tables = sorted(p.name for p in (pipeline / "metrics" / "tables").iterdir())
    for stem in ("resnet", "f3net", "loss_ablation", "leakage", "crossdataset"):
        assert any(t.startswith(stem) and t.endswith(".md") for t in tables), tables
        assert any(t.startswith(stem) and t.endswith(".tex") for t in tables), tables
    assert list((pipeline / "metrics" / "plots" / "spectra").rglob("*.png"))
    shown = dvc("metrics", "show", "--json", cwd=pipeline).stdout
    assert "macro_f1" in shown


def test_leak_is_found_in_v3_and_not_in_v4(pipeline):
    import json

    v3 = json.loads((pipeline / "metrics/audit/v3.json").read_text())
    v4 = json.loads((pipeline / "metrics/audit/v4.json").read_text())
    assert v4["group_leaks"] == 0 and v4["video_leaks"] == 0 and v4["exact_duplicates"] == 0
    assert v3["group_leaks"] > 0 or v3["video_leaks"] > 0


def test_forced_repro_is_byte_identical(pipeline):
    before = lock_hashes(pipeline)
    assert any(p.startswith("models/") for p in before) and any(p.startswith("data/variants") for p in before)
    # Forcing train@resnet_2 re-runs it and everything upstream (make_demo, every preprocess,
    # variants v1/v2, spectra); the other variants complete the data stages. Evaluations re-read
    # unchanged files, so they are left out to keep the test short.
    dvc("repro", "-f", "train@resnet_2", "variant@v3", "variant@v4", "variant@v4_nomask", cwd=pipeline)
    after = lock_hashes(pipeline)
    changed = sorted(p for p in before if before[p] != after.get(p))
    assert not changed, f"outputs changed on dvc repro -f: {changed}"


def test_interrupted_stage_finishes_with_the_same_bytes(pipeline):
    before = lock_hashes(pipeline)
    proc = subprocess.Popen([str(VENV_BIN / "dvc"), "repro", "-f", "-s", "preprocess@ffhq"], cwd=pipeline,
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    manifest = pipeline / "data" / "faces" / "ffhq" / "manifest.parquet"
    deadline = time.monotonic() + 120
    while manifest.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)  # DVC removes a stage's outputs right before running its command
    assert not manifest.exists(), "the stage never started"
    time.sleep(1.0)  # mid-stage: the command is importing / writing new outputs
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # a killed run leaves DVC's lock behind only while it runs; a new repro finishes the work
    dvc("repro", cwd=pipeline)
    after = lock_hashes(pipeline)
    assert after == before
    assert "up to date" in dvc("status", cwd=pipeline).stdout
