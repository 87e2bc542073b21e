"""Results tables: every cell equals the metrics file it comes from; missing files are named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from dfpipe.evaluation import evaluate as E
from dfpipe.evaluation import reports as R
from dfpipe.core.config import build, load_section
from dfpipe.core.io import write_json

from helpers import make_manifest, fake_scores

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "metrics/reference/qian2020_f3net.yaml"


def write_eval(path: Path, seed: int, run: str, train_variant: str, eval_variant: str) -> dict:
    """A metrics/eval/<name>.json as evaluate@ writes it (real metrics code on generated scores)."""
    man = make_manifest()
    labels = man["label"].to_numpy(np.int64)
    frame = E.align_predictions(man, man["id"], labels, fake_scores(labels, seed), "test")
    head, _ = E.evaluate_predictions(frame, n_boot=20, seed=seed, level=0.95)
    head["run"] = {"name": run, "model": "resnet18", "input": "raw", "train_variant": train_variant,
                   "eval_variant": eval_variant, "lr": 0.0002 * (seed + 1), "batch_size": 64 + seed,
                   "w_cls": 1.0, "w_bce": float(seed % 2), "w_dice": 0.0}
    if "seg" in run:  # only multi-task models write mask scores
        head["mask"] = {"n": 10, "dice": 0.1 * seed, "iou": 0.05 * seed}
    head["leak"] = {"n_eval": len(man), "overlap_train": 3 * seed, "overlap_train_frames": 2 * seed,
                    "overlap_train_videos": seed, "overlap_val": 0, "overlap_val_frames": 0, "overlap_val_videos": 0}
    write_json(path, head)
    return json.loads(path.read_text())


def make_cfg(tmp_path: Path) -> R.ReportConfig:
    data = {
        "out_dir": str((tmp_path / "tables").relative_to(tmp_path)),
        "eval_dir": "eval", "audit_dir": "audit", "reference": "ref.yaml",
        "resnet": ["resnet_4", "resnet_5"],
        "f3net": {"Baseline": "f3_base", "FAD": "f3_fad", "LFS": "f3_lfs", "Both": "f3_both",
                  "Mix": "f3_mix", "w/Seg": "f3_seg"},
        "loss_ablation": {"cls + BCE + Dice": "f3_seg", "cls only": "f3_cls"},
        "leakage": {"audits": ["v3", "v4"], "audit_keys": ["leak_check", "group_leaks", "exact_duplicates"],
                    "evaluations": ["r5_on_v4", "r5_v4"]},
        "unseen": {"rows": {}, "generators": {}, "seen": []},
    }
    return build(R.ReportConfig, data)


@pytest.fixture()
def repo(tmp_path, monkeypatch):
    """A tmp repository with generated metrics files; cwd inside it (paths are relative)."""
    monkeypatch.chdir(tmp_path)
    cfg = make_cfg(tmp_path)
    files = {}
    for i, name in enumerate(cfg.evaluation_names()):
        tv = "v4" if name == "r5_v4" else "v3"
        files[name] = write_eval(Path("eval") / f"{name}.json", i, name, tv, "v4")
    for v, leaks in (("v3", 7), ("v4", 0)):
        write_json(Path("audit") / f"{v}.json", {"leak_check": "not required" if leaks else "passed",
                                                 "group_leaks": leaks, "exact_duplicates": 2 * leaks})
    Path("ref.yaml").write_bytes(REFERENCE.read_bytes())
    return cfg, files


def parse_markdown(path: Path) -> list[dict[str, str]]:
    """Rows of the (single) table in a markdown file as {column: cell}."""
    lines = [l for l in path.read_text().splitlines() if l.startswith("|")]
    split = lambda l: [c.strip() for c in l.strip("|").split(" | ")]
    header = split(lines[0])
    return [dict(zip(header, split(l))) for l in lines[2:]]


def test_cells_equal_metrics_files(repo):
    cfg, files = repo
    written = R.write_tables(cfg)
    names = sorted(p.name for p in written)
    assert names == sorted(f"{t}.{s}" for t in ("resnet", "f3net_ablation", "loss_ablation",
                                                  "leakage_audit", "leakage_cross") for s in ("md", "tex")) + ["results.md"]
    pct = lambda v: f"{100 * v:.2f}"

    rows = parse_markdown(cfg.out_dir / "resnet.md")
    assert [r["Run"] for r in rows] == ["resnet_4", "resnet_5"]
    for r in rows:
        m = files[r["Run"]]
        assert r["Acc"] == pct(m["acc"])
        assert r["F1 real"] == pct(m["f1_real"]) and r["F1 edited"] == pct(m["f1_edited"])
        assert r["AUC real/fake"] == pct(m["auc_real_vs_fake"]) and r["EER"] == pct(m["eer"])
        ci = m["ci"]["macro_f1"]
        assert r["Macro-F1 [95% CI]"] == f"{pct(m['macro_f1'])} [{pct(ci['low'])}, {pct(ci['high'])}]"
        assert float(r["lr"]) == m["run"]["lr"] and int(r["Batch"]) == m["run"]["batch_size"]
        assert r["Variant"] == m["run"]["train_variant"]

    ref = yaml.safe_load(REFERENCE.read_text())
    rows = parse_markdown(cfg.out_dir / "f3net_ablation.md")
    assert [r["Model"] for r in rows] == ["Baseline", "FAD", "LFS", "Both", "Mix", "w/Seg"]
    paper = {r["Model"]: r["Paper AUC (%)"] for r in rows}
    assert paper == {"Baseline": "89.3", "FAD": "90.7", "LFS": "88.9", "Both": "92.8", "Mix": "93.3", "w/Seg": "–"}
    assert {k: float(v) for k, v in paper.items() if v != "–"} == ref["values"]
    for r in rows:
        assert r["Macro-F1"] == pct(files[r["Run"]]["macro_f1"])

    rows = parse_markdown(cfg.out_dir / "loss_ablation.md")
    assert [r["Run"] for r in rows] == ["f3_seg", "f3_cls"]
    for r in rows:
        m = files[r["Run"]]
        assert float(r["w_bce"]) == m["run"]["w_bce"]
        assert r["Mask Dice"] == (pct(m["mask"]["dice"]) if "mask" in m else "n/a")
    assert {r["Mask Dice"] == "n/a" for r in rows} == {True, False}  # both cases covered

    rows = parse_markdown(cfg.out_dir / "leakage_cross.md")
    for r in rows:
        m = files[r["Evaluation"]]
        assert int(r["Eval items in train (hash)"]) == m["leak"]["overlap_train"]
        assert int(r["of which video frames"]) == m["leak"]["overlap_train_frames"]
        assert r["Trained on"] == m["run"]["train_variant"] and r["Scored on"] == "v4"
    rows = parse_markdown(cfg.out_dir / "leakage_audit.md")
    assert rows[0] == {"Variant": "v3", "leak_check": "not required", "group_leaks": "7", "exact_duplicates": "14"}

    tex = (cfg.out_dir / "f3net_ablation.tex").read_text()
    assert "\\begin{tabular}{lrrrrrr}" in tex and "w/Seg" in tex and "f3\\_seg" in tex
    results = (cfg.out_dir / "results.md").read_text()
    assert "`eval/r5_on_v4.json`" in results and "`audit/v3.json`" in results
    # deterministic: a second build gives the same bytes
    before = {p: p.read_bytes() for p in written}
    R.write_tables(cfg)
    assert all(p.read_bytes() == b for p, b in before.items())


def test_missing_metrics_file_is_named(repo):
    cfg, _ = repo
    Path("eval/f3_lfs.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"eval/f3_lfs.json: metrics file not found \(written by `evaluate@f3_lfs`"):
        R.write_tables(cfg)
    Path("audit/v4.json").unlink()
    with pytest.raises(FileNotFoundError, match="audit/v4.json"):
        R.build_tables(build(R.ReportConfig, {**_raw(cfg), "f3net": {}, "resnet": [], "loss_ablation": {}}))


def test_missing_key_is_named(repo):
    cfg, _ = repo
    data = json.loads(Path("eval/resnet_5.json").read_text())
    del data["run"]["lr"]
    write_json("eval/resnet_5.json", data)
    with pytest.raises(KeyError, match="resnet_5.json: key 'run.lr' not found"):
        R.write_tables(cfg)


def test_null_metric_prints_na():
    assert R.pct(None) == "n/a" and R.pct(0.12345) == "12.35"


def _raw(cfg: R.ReportConfig) -> dict:
    from dfpipe.core.config import to_dict

    return to_dict(cfg)


def test_dvc_report_deps_match_params():
    """dvc.yaml's report deps are exactly the files the configured tables read."""
    cfg = load_section("report", R.ReportConfig, REPO / "params.yaml")
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["report"]
    expected = {(cfg.eval_dir / f"{n}.json").as_posix() for n in cfg.evaluation_names()}
    expected |= {(cfg.audit_dir / f"{a}.json").as_posix() for a in cfg.leakage.audits}
    expected |= {(cfg.eval_dir / n / "details.json").as_posix() for n in cfg.details_names()}
    expected.add(cfg.reference.as_posix())
    deps = {d for d in stage["deps"] if d.startswith("metrics/")}
    assert deps == expected
    evaluations = yaml.safe_load((REPO / "params.yaml").read_text())["evaluations"]
    assert set(cfg.evaluation_names()) | set(cfg.details_names()) <= set(evaluations)
