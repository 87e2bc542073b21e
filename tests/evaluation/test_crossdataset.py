"""Cross-dataset table: frame and video AUC (seed mean, bootstrap CI) from predictions files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dfpipe.core.config import ConfigError, build
from dfpipe.core.io import write_json
from dfpipe.evaluation import reports as R
from dfpipe.evaluation import tables as T
from dfpipe.evaluation.crossdataset import CrossDatasetTable, auc_with_ci, score_predictions
from dfpipe.scoring.metrics import binary_auc


def predictions(n_videos: int, frames: int, seeds, flip_video: int | None = None, rng_seed: int = 0) -> pd.DataFrame:
    """Celeb-DF-like predictions: half real (label 0), half fake as edited (label 2)."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for s in seeds:
        for v in range(n_videos):
            label = 0 if v % 2 == 0 else 2
            vid = f"Celeb-real/id{v}_0000" if label == 0 else f"Celeb-synthesis/id{v}_id0_0000"
            for f in range(frames):
                fake = 0.35 + 0.3 * (label == 2) + rng.normal(0, 0.2)
                if v == flip_video:
                    fake = 1.0 - fake
                fake = float(np.clip(fake, 0.01, 0.98))
                rows.append(dict(id=f"cdf/{vid}.mp4#f{f:05d}", source="cdf_real" if label == 0 else "cdf_fake",
                                 method="Celeb-real" if label == 0 else "Celeb-synthesis", video_id=vid,
                                 label=label, pred=2 if fake > 0.5 else 0, p_real=1 - fake, p_fake=fake / 3,
                                 p_edited=2 * fake / 3, seed=s))
    return pd.DataFrame(rows)


def test_frame_and_video_auc_match_direct_computation():
    pred = predictions(12, 4, seeds=[0, 1])
    res = score_predictions(pred, Path("p"), n_boot=200, seed=3, level=0.95)
    per_seed = []
    for s in (0, 1):
        sub = pred[pred.seed == s]
        per_seed.append(binary_auc(sub.label != 0, 1 - sub.p_real))
    assert res["frame"]["auc"] == pytest.approx(np.mean(per_seed))
    assert res["frame"]["sd"] == pytest.approx(np.std(per_seed, ddof=1))
    assert res["frame"]["n"] == 48 and res["frame"]["seeds"] == 2
    assert res["frame"]["low"] <= res["frame"]["auc"] <= res["frame"]["high"]
    vid = pred.groupby(["seed", "video_id"]).agg(label=("label", "first"), s=("p_real", "mean")).reset_index()
    v_auc = np.mean([binary_auc(g.label != 0, 1 - g.s) for _, g in vid.groupby("seed")])
    assert res["video"]["auc"] == pytest.approx(v_auc) and res["video"]["n"] == 12
    # row order does not matter; a changed prediction does
    again = score_predictions(pred.sample(frac=1, random_state=1), Path("p"), 200, 3, 0.95)
    assert again == res
    worse = score_predictions(predictions(12, 4, [0, 1], flip_video=1), Path("p"), 200, 3, 0.95)
    assert worse["video"]["auc"] < res["video"]["auc"]


def test_auc_undefined_with_one_class_and_seed_mismatch_is_an_error():
    out = auc_with_ci(np.ones(4, dtype=int), np.random.default_rng(0).random((1, 4)), np.arange(4), 20, 0, 0.95)
    assert out["auc"] is None and out["low"] is None
    pred = predictions(4, 2, seeds=[0, 1])
    with pytest.raises(ValueError, match="seed 1 scored other items"):
        score_predictions(pred.iloc[:-1], Path("p.parquet"), 10, 0, 0.95)


def test_report_writes_crossdataset_table(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, rs in (("r_on_cdf", 0), ("r_on_dfdc", 1), ("n_on_cdf", 2)):
        Path("eval", name).mkdir(parents=True)
        predictions(10, 3, seeds=[0, 1], rng_seed=rs).to_parquet(Path("eval", name, "predictions.parquet"))
        write_json(Path("eval", name, "details.json"), {
            "run": {"init": "xception_imagenet"} if name == "n_on_cdf" else {},
            "provenance": {"code": "c0de", "scale": 0.04, "variant": "celebdf_test", "train_variant": "v4_nomask",
                           "seeds": [0, 1], "data": {"test": f"e{rs}", "val": "v"}}})
    cfg = build(R.ReportConfig, {
        "out_dir": "tables", "eval_dir": "eval", "audit_dir": "audit", "paper": "ref.yaml", "notes": "notes.yaml",
        "bootstrap": 10, "ci_level": 0.95, "seed": 0, "tables": {}, "shortcut": [],
        "leakage": {"audits": [], "audit_keys": ["leak_check"], "within": [], "pairs": {}},
        "crossdataset": {"test_sets": {"Celeb-DF v2": "celebdf_test", "DFDC": "dfdc_test"},
                         "detectors": {"ResNet-18": {"Celeb-DF v2": "r_on_cdf", "DFDC": "r_on_dfdc"},
                                       "NPR": {"Celeb-DF v2": "n_on_cdf"}},
                         "bootstrap": 100, "ci_level": 0.95, "seed": 1}})
    assert cfg.evaluation_names() == ["n_on_cdf", "r_on_cdf", "r_on_dfdc"]
    T.write_tables(cfg)
    text = Path("tables/crossdataset.md").read_text()
    lines = [l for l in text.splitlines() if l.startswith("| ")]
    assert lines[0] == ("| Detector | init | Celeb-DF v2 frame AUC | Celeb-DF v2 video AUC | DFDC frame AUC "
                        "| DFDC video AUC | Differs from paper |")
    res = score_predictions(pd.read_parquet("eval/r_on_cdf/predictions.parquet"), Path("x"), 100, 1, 0.95)
    cell = f"{100 * res['frame']['auc']:.2f} ± {100 * res['frame']['sd']:.2f}"
    assert lines[1].startswith(f"| ResNet-18 | scratch | {cell} [")
    assert lines[2].startswith("| NPR | xception_imagenet | ") and lines[2].endswith("|  |  | – |")
    # provenance: which bytes were scored, by which code
    assert "data sha256 celebdf_test/test e2 + v4_nomask/val v, celebdf_test/test e0 + v4_nomask/val v" in text
    assert "evaluation code c0de" in text
    assert "eval/r_on_dfdc/predictions.parquet" in Path("tables/results.md").read_text()
    with pytest.raises(ConfigError, match="not in test_sets"):
        build(CrossDatasetTable, {"test_sets": {"A": "a"}, "detectors": {"x": {"B": "e"}},
                                  "bootstrap": 10, "ci_level": 0.95, "seed": 0})
