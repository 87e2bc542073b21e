"""backdoor@ end to end on a toy variant and two toy runs, and the backdoor table built from its files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dfpipe.core.config import ConfigError, build, to_dict
from dfpipe.core.io import write_json
from dfpipe.core.manifest import read_table
from dfpipe.evaluation.backdoor import BackdoorConfig, BackdoorExperiment, run_backdoor
from dfpipe.evaluation.backdoor_table import BackdoorTable, backdoor_rows, caption
from dfpipe.evaluation.predictions import write_predictions
from dfpipe.splits.poison import TRIGGERED, PoisonConfig, build_poisoned_variant
from helpers import make_variant, run_dict

POISON = dict(base="clean", source_label=1, target_label=0, rate=0.3, mode="dirty", salt="s",
              trigger={"kind": "patch", "size": 0.125})


def _run_cfg(variant: str, **kw):
    from dfpipe.training.train import RunConfig

    settings = dict(model={"name": "resnet18", "width": 0.25, "image_size": 32}, variant=variant, lr=2e-4,
                    batch_size=16, epochs=1, bn_recalibration_images=0, max_steps_per_epoch=0)
    return build(RunConfig, run_dict(**{**settings, **kw}))


def _checkpoints(models: Path, run: str, cfg) -> None:
    from dfpipe.models import build_model

    (models / run).mkdir(parents=True)
    for s in (0, 1):
        torch.manual_seed(s)
        torch.save({"model": build_model(cfg.model).state_dict(), "config": to_dict(cfg)}, models / run / f"seed{s}.pt")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("bd")
    variants, models = root / "variants", root / "models"
    make_variant(variants / "clean", {"train": 30, "val": 4, "test": 12}, size=32)
    write_json(variants / "clean/summary.json", {"variant": "clean", "counts": {}})
    poison = build(PoisonConfig, POISON)
    build_poisoned_variant("clean_bd", poison, variants, "salt", shard_size=16)
    _checkpoints(models, "r_clean", _run_cfg("clean"))
    _checkpoints(models, "r_bd", _run_cfg("clean_bd"))
    cfg = build(BackdoorConfig, {"out_dir": "metrics/backdoor", "batch_size": 16, "ss_factor": 1.5, "ac_dims": 10,
                                 "ac_max_share": 0.35, "experiments": {"toy": {"clean": "r_clean", "poisoned": "r_bd",
                                 "clean_variant": "clean", "poisoned_variant": "clean_bd"}}})
    cfg = cfg.model_copy(update={"out_dir": root / "metrics/backdoor"})
    record = run_backdoor("toy", cfg.experiments["toy"], cfg, poison, models, variants, device="cpu")
    return root, cfg, poison, record


def test_stage_scores_the_triggered_copy_and_audits_both_runs(experiment):
    root, cfg, poison, record = experiment
    assert json.loads((cfg.out_dir / "toy.json").read_text()) == json.loads(json.dumps(record))
    trig = pd.read_parquet(cfg.out_dir / "toy/triggered.parquet")
    n_trig = len(read_table(root / "variants/clean_bd" / TRIGGERED / "test/manifest.parquet"))
    assert n_trig == 12 and len(trig) == 2 * 2 * n_trig and set(trig["role"]) == {"clean", "poisoned"}
    assert (trig["label"] == 1).all()
    flags = pd.read_parquet(cfg.out_dir / "toy/flags.parquet")
    train = read_table(root / "variants/clean_bd/train/manifest.parquet").set_index("id")
    bd = flags[(flags["role"] == "poisoned") & (flags["seed"] == 0)].set_index("id")
    assert np.array_equal(bd["poisoned"].to_numpy(), train.loc[bd.index, "poisoned"].to_numpy())
    assert np.array_equal(bd["label"].to_numpy(), train.loc[bd.index, "label"].to_numpy())  # training labels
    assert not flags.loc[flags["role"] == "clean", "poisoned"].any()
    ss = record["roles"]["poisoned"]["audit"]["0"]["spectral_signatures"]["target_class"]
    assert ss["planted"] == int(train["poisoned"].sum()) > 0
    n_real = int((train["label"] == 0).sum())
    assert ss["flagged"] == int(np.ceil(1.5 * poison.rate * n_real - 1e-9))
    clean_ss = record["roles"]["clean"]["audit"]["0"]["spectral_signatures"]["target_class"]
    assert clean_ss["planted"] == 0 and clean_ss["precision"] == 0.0 or clean_ss["flagged"] == 0


def test_runs_with_other_settings_are_refused(experiment, tmp_path):
    root, cfg, poison, _ = experiment
    models = tmp_path / "models"
    _checkpoints(models, "r_clean", _run_cfg("clean"))
    _checkpoints(models, "r_bd", _run_cfg("clean_bd", lr=1e-3))  # not the same detector
    with pytest.raises(ConfigError, match="differ in"):
        run_backdoor("toy", cfg.experiments["toy"], cfg, poison, models, root / "variants", device="cpu")
    wrong = BackdoorExperiment(clean="r_clean", poisoned="r_bd", clean_variant="clean_bd", poisoned_variant="clean_bd")
    with pytest.raises(ConfigError, match="clean_variant"):
        run_backdoor("toy", wrong, cfg, poison, root / "models", root / "variants", device="cpu")


def test_table_reports_attack_success_with_group_intervals(experiment, tmp_path):
    root, cfg, poison, record = experiment
    out = tmp_path / "backdoor"
    (out / "toy").mkdir(parents=True)
    write_json(out / "toy.json", record)
    trig = pd.read_parquet(cfg.out_dir / "toy/triggered.parquet")
    # planted outcome: the poisoned run scores every triggered fake real, the clean run none
    hit = (trig["role"] == "poisoned").to_numpy()
    trig["p_real"], trig["p_fake"], trig["p_edited"] = np.where(hit, 0.9, 0.05), np.where(hit, 0.05, 0.9), 0.05
    trig.to_parquet(out / "toy/triggered.parquet")
    ev = read_table(root / "variants/clean/test/manifest.parquet")
    for run in ("r_clean", "r_bd"):
        probs = np.eye(3)[ev["label"].to_numpy()] * 0.8 + 0.2 / 3
        frame = ev[["id", "source", "method", "video_id", "label"]].assign(group=ev["id"], p_real=probs[:, 0],
                                                                            p_fake=probs[:, 1], p_edited=probs[:, 2])
        (tmp_path / "eval" / run).mkdir(parents=True)
        write_predictions({0: frame, 1: frame}, tmp_path / "eval" / run / "predictions.parquet")
    table = build(BackdoorTable, {"caption": "Backdoor", "dir": "x", "rows": {"ResNet-18": ["toy"]}, "demo": True,
                                  "bootstrap": 50, "ci_level": 0.95, "seed": 0})
    table = table.model_copy(update={"dir": out})
    read: set[Path] = set()
    columns, rows, notes, runs = backdoor_rows(table, tmp_path / "eval", read)
    assert runs == ["r_clean", "r_bd"] and len(rows) == 2
    asr = columns.index("ASR: triggered scored target [CI]")
    assert rows[0][asr].startswith("0.00") and rows[1][asr].startswith("100.00")
    assert "n too small: 12 groups" not in rows[1][asr] and "[" in rows[1][asr]
    assert rows[0][columns.index("Clean acc [CI]")].startswith("100.00")
    assert "(clean)" in rows[0][1] and "dirty label, patch trigger, rate 30% of fake" in rows[1][1]
    assert "DEMO NUMBERS" in notes[0] and caption(table).endswith("(demo numbers)")
    assert out / "toy.json" in read and tmp_path / "eval/r_bd/predictions.parquet" in read
    # fewer than 10 identity groups: no interval
    few = trig[trig["id"].isin(sorted(set(trig["id"]))[:5])]
    few.to_parquet(out / "toy/triggered.parquet")
    _, rows, _, _ = backdoor_rows(table, tmp_path / "eval", set())
    assert "n too small: 5 groups" in rows[1][asr]
    files = table.files({"backdoor": {"experiments": {"toy": {"clean": "r_clean", "poisoned": "r_bd"}}}},
                        tmp_path / "eval")
    assert out / "toy/triggered.parquet" in files and tmp_path / "eval/r_clean/details.json" in files


@pytest.mark.parametrize("profile", ["demo", "full"])
def test_params_pair_identical_runs_in_every_experiment(tmp_path, profile):
    """params.yaml (demo) and the full profile: each experiment's runs differ in their variant only,
    the poisoned variant is built from the clean one, and the report's rows name known experiments."""
    import shutil

    from dfpipe.core.config import load_entry, load_section, load_yaml
    from dfpipe.core.profile import apply_profile
    from dfpipe.evaluation.backdoor import check_experiment
    from dfpipe.evaluation.reports import ReportConfig
    from dfpipe.training.train import RunConfig

    repo = Path(__file__).resolve().parents[2]
    shutil.copy(repo / "params.yaml", tmp_path / "params.yaml")
    shutil.copy(repo / "params.full.yaml", tmp_path / "params.full.yaml")
    if profile == "full":
        apply_profile("full", tmp_path / "params.yaml")
    params = tmp_path / "params.yaml"
    cfg = load_section("backdoor", BackdoorConfig, params)
    assert cfg.experiments
    for name, exp in cfg.experiments.items():
        runs = {role: load_entry("runs", getattr(exp, role), RunConfig, params) for role in ("clean", "poisoned")}
        check_experiment(name, exp, runs, load_entry("poison", exp.poisoned_variant, PoisonConfig, params))
    report = load_section("report", ReportConfig, params)
    assert report.backdoor is not None and report.backdoor.demo == (profile == "demo")
    assert {e for es in report.backdoor.rows.values() for e in es} <= set(cfg.experiments)
    rates = {load_entry("poison", e.poisoned_variant, PoisonConfig, params).rate for e in cfg.experiments.values()}
    assert len(rates) == (1 if profile == "demo" else 3)  # the demo affords one rate; full scale lists several
    data = load_yaml(params)
    with pytest.raises(ConfigError, match="differ in"):  # control: another lr is another detector
        exp = next(iter(cfg.experiments.values()))
        other = data["runs"][exp.poisoned] | {"lr": 0.5}
        runs = {"clean": load_entry("runs", exp.clean, RunConfig, params),
                "poisoned": build(RunConfig, {**data["run_defaults"], **other})}
        check_experiment("x", exp, runs, load_entry("poison", exp.poisoned_variant, PoisonConfig, params))
