"""End to end: the real dvc.yaml on a tiny generated data set, in a fresh copy of the repository.

One session-scoped `dvc repro` of the whole pipeline (assets, make_demo -> ... -> report) with params
shrunk by :func:`tiny_params`, committed to git; then the promises of the README are checked on it:
a clean `dvc status`, every table written, byte-identical data and CPU-training outputs on
`dvc repro -f`, an interrupted stage that finishes with the same bytes; a `git clone` in another
folder with its own empty DVC cache rebuilds the data stages and one train/evaluate chain with the
same md5 of every output and leaves `git status` clean (no timings, no absolute paths, no untracked
outputs); the run-cache restores a train stage whose params were seen; `dvc exp run -S` reruns only
the dependent stages; `dvc exp run --queue` + `dvc queue start` run two experiments that
`dvc exp show` lists, in a table that the README's command keeps within 200 columns.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dfpipe.core import stagedeps
from dfpipe.core.config import load_yaml
from tiny_repo import copy_repository, tiny_params

# One session-scoped `dvc repro` of the whole tiny pipeline runs inside the first test: the
# per-test timeout of pyproject.toml (a hang guard) is raised for this module only.
pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(3600)]

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


#: The second folder's `dvc repro` runs as on another machine would: other thread counts, OpenBLAS
#: kernels, AVX-512 allowed for oneDNN / ATen / MKL, numpy without its AVX-512 loops. The kernels
#: pinned by dfpipe.core.numerics (and the stages' fixed torch threads) must give the same bytes.
ANOTHER_MACHINE = {
    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "2", "OPENBLAS_CORETYPE": "SkylakeX",
    "ONEDNN_MAX_CPU_ISA": "ALL", "ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AUTO",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
}


def _env(extra: dict[str, str] | None = None) -> dict:
    env = {**os.environ, **(extra or {})}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    # the `assets` stage copies the pinned MediaPipe models from here (offline, sha256-checked)
    env["DFPIPE_ASSETS_FROM"] = str(ROOT / "models" / "mediapipe")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("DVC_NO_ANALYTICS", None)
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 3600,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(env), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def dvc(*args: str, cwd: Path, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return run([str(VENV_BIN / "dvc"), *args], cwd=cwd, check=check, env=env)


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
    reuse = os.environ.get("DFPIPE_E2E_REUSE")
    if reuse:  # debugging: a tiny repo this fixture built before (its `dvc repro` committed)
        return Path(reuse)
    repo = tmp_path_factory.mktemp("pipeline") / "repo"
    repo.mkdir()
    copy_repository(repo)
    # YAML 1.2, as DVC reads it: after `dvc exp run -S` a value like `off` is unquoted
    params = tiny_params(load_yaml(repo / "params.yaml"))
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny"]):
        run(cmd, cwd=repo)
    # keep the DVC cache and remote inside the temporary folder
    dvc("remote", "modify", "local", "url", str(repo.parent / "remote"), cwd=repo)
    dvc("repro", cwd=repo)
    # what a researcher commits after a run (dvc.lock, git-tracked metrics, DVC's .gitignore files)
    git_commit(repo, "tiny repro")
    return repo


def git_commit(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], cwd=repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message, "--allow-empty"], cwd=repo)


def ran_stages(output: str) -> set[str]:
    """Stages whose command DVC ran, from `dvc repro` / `dvc exp run` output."""
    return set(re.findall(r"Running stage '([^']+)'", output))


def test_repro_then_status_is_clean(pipeline):
    out = dvc("status", cwd=pipeline).stdout
    assert "up to date" in out, out


def test_every_table_and_plot_is_written(pipeline):
    tables = sorted(p.name for p in (pipeline / "metrics" / "tables").iterdir())
    for stem in ("resnet", "f3net", "loss_ablation", "leakage", "crossdataset", "controls"):
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


# ---- a second folder (as on another machine): location independence and a clean tree ---------
# What the clone rebuilds from scratch (its own empty cache: no run-cache): every data stage and one
# train -> evaluate chain through spectra. The other train/evaluate stages differ only in params.
SECOND_FOLDER_TARGETS = ("assets", "make_demo", "preprocess", "variant", "audit", "spectra",
                         "train@resnet_2", "evaluate@resnet_2")


def lock_outs(repo: Path, stages: set[str]) -> dict[str, str]:
    """path -> md5 of every out (cached or not: metrics too) of the given stages in dvc.lock."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {o["path"]: o["md5"] for name in stages for o in lock[name].get("outs", [])}


@pytest.fixture(scope="session")
def second_folder(pipeline, tmp_path_factory) -> tuple[Path, set[str]]:
    clone = tmp_path_factory.mktemp("elsewhere") / "deeper" / "clone"
    clone.parent.mkdir(parents=True)
    run(["git", "clone", "-q", str(pipeline), str(clone)], cwd=clone.parent)
    # an empty cache of its own: every stage really runs, nothing is restored
    dvc("remote", "modify", "--local", "local", "url", str(clone.parent / "remote"), cwd=clone)
    out = dvc("repro", *SECOND_FOLDER_TARGETS, cwd=clone, env=ANOTHER_MACHINE).stdout
    return clone, ran_stages(out)


def test_second_folder_rebuilds_the_same_bytes(pipeline, second_folder):
    clone, ran = second_folder
    assert {"assets", "make_demo", "train@resnet_2", "evaluate@resnet_2"} <= ran, ran
    # audit@ outs are git-tracked (cache: false): with identical variants DVC rightly skips it
    assert any(s.startswith("preprocess@") for s in ran) and any(s.startswith("variant@") for s in ran)
    ours, theirs = lock_outs(pipeline, ran), lock_outs(clone, ran)
    assert ours.keys() == theirs.keys()
    differ = sorted(p for p in ours if ours[p] != theirs[p])
    assert not differ, f"outputs differ between {pipeline} and {clone}: {differ}"


def test_rebuild_leaves_git_status_clean(second_folder):
    clone, _ = second_folder
    status = run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=clone).stdout
    assert status == "", f"`dvc repro` in a fresh clone changed git-tracked files:\n{status}"


# ---- params: narrow deps ------------------------------------------------------------------------
def test_runtime_keys_leave_stages_clean(pipeline):
    """Progress bars, worker counts, executors, logging and the training device (params.yaml
    runtime:) are no stage's params: changing every one of them leaves every stage up to date."""
    params_file = pipeline / "params.yaml"
    original = params_file.read_text()
    params = yaml.safe_load(original)
    keys = stagedeps.runtime_keys(params)
    assert "runtime.train.progress" in keys and "runtime.preprocess.workers" in keys
    for dotted in keys:
        _, section, key = dotted.split(".")
        value = params["runtime"][section][key]
        params["runtime"][section][key] = (not value) if isinstance(value, bool) else (
            value + 1 if isinstance(value, int) else "cpu")
    try:
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        out = dvc("status", cwd=pipeline).stdout
    finally:
        params_file.write_text(original)
    assert "up to date" in out, f"changing {keys} made stages stale:\n{out}"


# ---- experiments ----------------------------------------------------------------------------------
def test_run_cache_restores_a_train_stage_seen_before(pipeline):
    """Train with another lr, then go back: DVC restores the first run from its run-cache."""
    params_file = pipeline / "params.yaml"
    original = params_file.read_text()
    params = yaml.safe_load(original)
    params["runs"]["resnet_1"]["lr"] = params["runs"]["resnet_1"]["lr"] / 2
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc("repro", "train@resnet_1", cwd=pipeline).stdout
    assert "train@resnet_1" in ran_stages(out), out
    params_file.write_text(original)
    out = dvc("repro", "train@resnet_1", cwd=pipeline).stdout
    assert "Stage 'train@resnet_1' is cached - skipping run" in out, out
    assert not ran_stages(out), out
    assert "up to date" in dvc("status", "train@resnet_1", cwd=pipeline).stdout


def test_exp_run_set_param_reruns_only_dependent_stages(pipeline):
    # a value no earlier test trained with (0.01 is in the run-cache from the test above: restored, not run)
    out = dvc("exp", "run", "-n", "lr_new", "-S", "runs.resnet_1.lr=0.015", cwd=pipeline).stdout
    ran = ran_stages(out)
    # report re-runs only if resnet_1's headline numbers moved (one tiny step may not move them)
    assert {"train@resnet_1", "evaluate@resnet_1"} <= ran <= {"train@resnet_1", "evaluate@resnet_1", "report"}, out
    # -S rewrote params.yaml (YAML 1.2 writer): every stage still reads it, nothing else is stale
    assert "up to date" in dvc("status", cwd=pipeline).stdout
    shown = dvc("exp", "show", "--csv", cwd=pipeline).stdout
    assert "lr_new" in shown


def test_queued_experiments_run_and_are_listed(pipeline):
    dvc("exp", "run", "--queue", "-S", "runs.resnet_1.lr=0.005,0.0025", "evaluate@resnet_1", cwd=pipeline)
    dvc("queue", "start", "-j", "1", cwd=pipeline)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = dvc("queue", "status", cwd=pipeline).stdout
        if not re.search(r"\b(Queued|Running)\b", status):
            break
        time.sleep(3)
    dvc("queue", "stop", cwd=pipeline, check=False)
    if re.search(r"\bFailed\b", status):
        logs = [dvc("queue", "logs", line.split()[0], cwd=pipeline, check=False).stdout[-3000:]
                for line in status.splitlines() if "Failed" in line]
        pytest.fail(status + "\n".join(logs))
    assert status.count("Success") == 2, status
    shown = dvc("exp", "show", "--csv", cwd=pipeline).stdout
    for lr in ("0.005", "0.0025"):
        assert lr in shown, shown


def test_readme_exp_show_command_fits_200_columns(pipeline):
    """The README's `dvc exp show` command: a readable table of the experiments, <= 200 columns."""
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"^(dvc exp show [^\n#]*?)\s*(#.*)?$", readme, re.M)
    assert m, "README gives no `dvc exp show` command"
    args = shlex.split(m.group(1))[3:]
    env = _env()
    env["COLUMNS"] = "200"
    proc = subprocess.run([str(VENV_BIN / "dvc"), "exp", "show", "--no-pager", *args], cwd=pipeline,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert max(map(len, lines)) <= 200, proc.stdout
    assert "…" not in proc.stdout, f"truncated cells:\n{proc.stdout}"
    assert "runs.resnet_1.lr" in proc.stdout or "lr" in proc.stdout, proc.stdout
