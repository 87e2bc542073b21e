"""The dress rehearsal ("rehearsal.sh" -> "rehearsal.py", stages under "rehearsal_probe.py"): its params
build with the project's configs, the probe records a stage's peaks, and (slow) the tiny CPU mode
runs `dvc repro` in a temporary copy and prints one row per stage with positive figures."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dfpipe.core.config import build, merged_entry, section_data
from dfpipe.core.profile import apply_profile
from dfpipe.evaluation.reports import ReportConfig
from dfpipe.training.config import RunConfig, TrainConfig

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
#: What `dvc repro report` runs in the rehearsal: every stage upstream of the trimmed report.
SOURCES = {"ffhq", "gan_wgan_gp", "gan_stylegan", "gan_mspie_stylegan2", "ff_f2f_k", "ff_fs_k", "ff_youtube_k"}
STAGES = ({"assets", "make_demo", "variant@v4", "variant@v4_nomask", "audit@v4", "audit@v4_nomask", "spectra@v4",
           "train@resnet_5_v4", "train@f3net_mix", "evaluate@resnet_5_v4", "evaluate@f3net_mix", "report"}
          | {f"preprocess@{s}" for s in SOURCES})
NUM = r"([\d.]+|-)"
ROW = re.compile(rf"^\| ([\w@]+) \| {NUM} \| {NUM} \| {NUM}(?: (?:items|img)/s)? \| {NUM} \| {NUM} \| {NUM} \|$", re.M)


def _rehearsal():
    sys.path.insert(0, str(BENCH))
    import rehearsal

    return rehearsal


def table_problems(text: str) -> list[str]:
    """What is wrong with a printed rehearsal table: a missing stage, a figure that is not positive
    (a stage that the pipeline adds upstream later may appear too; it must have positive figures)."""
    rows = {m.group(1): m.groups()[1:] for m in ROW.finditer(text)}
    problems = [f"missing row {s}" for s in sorted(STAGES - set(rows))]
    for stage, (wall, items, rate, _gpu, rss, full) in rows.items():
        if not float(wall) > 0 or rss == "-" or not float(rss) > 0:
            problems.append(f"{stage}: wall {wall} s, peak RSS {rss} MiB")
        per_item = stage not in ("code", "assets", "make_demo")  # no items: fingerprints, model files, drawn data
        if per_item and not all(x != "-" and float(x) > 0 for x in (items, rate, full)):
            problems.append(f"{stage}: items {items}, throughput {rate}, extrapolated {full}")
    return problems


def test_table_check_fires_on_a_bad_table():
    good = "\n".join(f"| {s} | 1.0 | 5 | 5.0 items/s | - | 100 | 50 |" for s in sorted(STAGES))
    assert table_problems(good) == []
    bad = good.replace("| report | 1.0 | 5 | 5.0 items/s |", "| report | 1.0 | 0 | 0.0 items/s |")
    assert table_problems(bad) == ["report: items 0, throughput 0.0, extrapolated 50"]
    assert table_problems(good.replace("| spectra@v4 |", "| spectra@v1 |")) == ["missing row spectra@v4"]
    assert table_problems(good.replace("| audit@v4 | 1.0 |", "| audit@v4 | 0.0 |")) == [
        "audit@v4: wall 0.0 s, peak RSS 100 MiB"]


@pytest.mark.parametrize("tiny", [False, True])
def test_rehearsal_params_are_the_full_profile_cut_to_two_runs(tmp_path, tiny):
    rehearsal = _rehearsal()
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copy(ROOT / "params.full.yaml", tmp_path / "params.full.yaml")
    demo = yaml.safe_load((tmp_path / "params.yaml").read_text())
    apply_profile("full", tmp_path / "params.yaml")
    full = yaml.safe_load((tmp_path / "params.yaml").read_text())
    p = rehearsal.rehearsal_params(demo, full, "cpu", tiny, 16, None)
    # full crop size and K frames per video, as profiled
    assert (p["preprocess"]["size"], p["preprocess"]["frames_per_video"]) == (full["preprocess"]["size"], 30)
    assert p["preprocess"]["size"] > demo["preprocess"]["size"]
    assert p["runtime"]["preprocess"] == {**p["runtime"]["preprocess"], "executor": "ray", "workers": 16}
    assert set(p["sources"]) == SOURCES and p["sources"]["ffhq"] == demo["sources"]["ffhq"]  # generated data
    assert set(p["variants"]) == {"v4", "v4_nomask"} and set(p["runs"]) == {"resnet_5_v4", "f3net_mix"}
    runs = {r: build(RunConfig, merged_entry(p, "runs", r), where=r) for r in p["runs"]}
    # the networks' input sizes of the full profile (tiny: the demo's 64 px networks, resized on the device)
    want = (64, 64) if tiny else (224, 299)
    assert (runs["resnet_5_v4"].model.image_size, runs["f3net_mix"].model.image_size) == want
    assert all(r.epochs == 1 and r.seeds == (0,) and r.init == "scratch" for r in runs.values())
    train = build(TrainConfig, section_data(p, "train"), where="train")
    assert train.device == "cpu" and train.compile == bool(full["train"].get("compile", False))
    report = build(ReportConfig, p["report"], where="report", root=tmp_path)
    assert report.evaluation_names() == ["f3net_mix", "resnet_5_v4"]
    assert p["split"]["scale"] == (0.005 if tiny else 0.04) and p["split"]["on_shortfall"] == "cap"


def test_probe_records_a_commands_peaks_and_exit_status(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text("import sys\nblock = bytearray(64 * 2**20)\nraise SystemExit(int(sys.argv[1]))\n")
    log = tmp_path / "probe.jsonl"
    env = {**os.environ, "REHEARSAL_PROBE_LOG": str(log), "DVC_STAGE": "x@y"}
    for code in (0, 3):
        proc = subprocess.run([sys.executable, str(BENCH / "rehearsal_probe.py"), str(script), str(code)], env=env)
        assert proc.returncode == code
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["rc"] for r in records] == [0, 3] and {r["stage"] for r in records} == {"x@y"}
    assert all(r["peak_rss_mib"] > 64 and r["wall_s"] > 0 and r["peak_gpu_mib"] is None for r in records)


def test_rehearsal_script_parses_and_knows_its_options():
    assert subprocess.run(["bash", "-n", str(BENCH / "rehearsal.sh")]).returncode == 0
    out = subprocess.run([sys.executable, str(BENCH / "rehearsal.py"), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and all(o in out.stdout for o in ("--device", "--tiny", "--compile", "--timeout"))


@pytest.mark.slow
def test_tiny_cpu_rehearsal_prints_one_positive_row_per_stage(tmp_path):
    env = {**os.environ, "REHEARSAL_DEVICE": "cpu", "REHEARSAL_TINY": "1", "TQDM_DISABLE": "1",
           "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(BENCH / "rehearsal.sh"), "--workdir", str(tmp_path), "--workers", "2",
                           "--timeout", "1500"], env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert table_problems(proc.stdout) == [], proc.stdout
    assert re.search(r"^Extrapolation, linear in items: T_full = T \* N_full / N", proc.stdout, re.M), proc.stdout
    assert list(tmp_path.iterdir()) == []  # the temporary copy is gone
