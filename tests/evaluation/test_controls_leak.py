"""The planted-leak control of the controls table (dfpipe.evaluation.controls.leak_rows) on
synthetic predictions: a model that memorised its training clips fires leak measures (a) and (b)
and the nulls hold; a model that did not memorise, a "null" pair with a real difference, or too
few clips fail the report stage instead of passing silently."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dfpipe.core.config import build
from dfpipe.core.io import write_json
from dfpipe.evaluation import controls as C
from dfpipe.evaluation import reports as R
from dfpipe.evaluation import tables as T
from dfpipe.evaluation.predictions import write_predictions

CLIPS, FRAMES = 60, 4
TRAINED = set(range(40))  # clips with a frame in the leaky variant's train split
TWIN_EVAL = range(20, 60)  # the leak-free twin's test clips: 20 leaked (20..39), 20 never trained on


def clip(k: int) -> str:
    return f"{k:03d}"


def items(prefix: str, clips) -> pd.DataFrame:
    rows = [(f"{prefix}/{clip(k)}.mp4#f{i}", ("ctl_real", "ctl_fake")[k % 2], "ctl", clip(k), k % 2,
             f"ctl:{clip(k)}.mp4") for k in clips for i in range(FRAMES)]
    return pd.DataFrame(rows, columns=["id", "source", "method", "video_id", "label", "group"])


def scores(frame: pd.DataFrame, seed: int, knows: set[int]) -> dict:
    """A binary model's probabilities: right with p 0.9 on the clips it ``knows``, a coin elsewhere."""
    rng = np.random.default_rng(seed)
    clips = frame["video_id"].astype(int).to_numpy()
    y = frame["label"].to_numpy()
    p_true = np.where(np.isin(clips, list(knows)), 0.9, rng.uniform(0.2, 0.8, len(frame)))
    p1 = np.where(y == 1, p_true, 1 - p_true)
    return frame.assign(p_real=1 - p1, p_fake=p1)


def write_eval(name: str, frame: pd.DataFrame, seeds, knows: set[int], variant: str, train_variant: str) -> None:
    write_predictions({s: scores(frame, 100 * len(name) + s, knows) for s in seeds},
                      Path("eval", name, "predictions.parquet"))
    run = {"train_variant": train_variant, "eval_variant": variant, "model": "resnet18", "width": 0.25, "lr": 0.001,
           "batch_size": 16, "epochs": 12, "seeds": ",".join(map(str, seeds))}
    write_json(Path("eval", name, "details.json"),
               {"run": run, "provenance": {"variant": variant, "train_variant": train_variant, "seeds": list(seeds)}})
    write_json(Path("eval", f"{name}.json"), {})


def cfg(**leak) -> R.ReportConfig:
    control = {"within": "w", "leaky": "l_on_g", "leak_free": "g", "reseeded": "g2", **leak}
    return build(R.ReportConfig, {
        "out_dir": "tables", "eval_dir": "eval", "audit_dir": "audit", "paper": "paper.yaml", "notes": "notes.yaml",
        "bootstrap": 100, "ci_level": 0.95, "seed": 0, "tables": {},
        "leakage": {"audits": [], "audit_keys": [], "within": [], "pairs": {}}, "shortcut": [],
        "controls": {"null_ablation": {}, "shortcut": {}, "generator_families": {},
                     "planted_leak": {"toy": control}, "variants_dir": "variants"}})


@pytest.fixture()
def demo(tmp_path, monkeypatch):
    """Evaluations of a model trained on the frame-level variant ``lf`` (it memorised its training
    clips), of one trained on the clip-level twin ``lg`` and of that one reseeded (both at chance)."""
    monkeypatch.chdir(tmp_path)
    own = items("lf", range(CLIPS))
    flags = pd.DataFrame({"id": own["id"], "video_key": "ctl:" + own["video_id"],
                          "group_in_train": own["video_id"].astype(int).isin(TRAINED),
                          "video_in_train": own["video_id"].astype(int).isin(TRAINED)})
    Path("audit/lf").mkdir(parents=True)
    flags.to_parquet("audit/lf/test_items.parquet")
    Path("variants/lf/train").mkdir(parents=True)
    items("lf", sorted(TRAINED))[["id", "method", "video_id"]].to_parquet("variants/lf/train/manifest.parquet")
    twin = items("lg", TWIN_EVAL)
    write_eval("w", own, (0, 1), TRAINED, "lf", "lf")
    write_eval("l_on_g", twin, (0, 1), TRAINED, "lg", "lf")
    write_eval("g", twin, (0, 1), set(), "lg", "lg")
    write_eval("g2", twin, (2, 3), set(), "lg", "lg")
    return twin


def rows_of(config: R.ReportConfig) -> list[tuple]:
    reader = R.Reader(config)
    assert config.controls is not None and config.controls.variants_dir is not None
    return C.leak_rows(reader, "toy", config.controls.planted_leak["toy"], config.controls.variants_dir,
                       100, 0, 0.95)


def test_memorised_clips_fire_both_measures_and_the_nulls_hold(demo):
    rows = rows_of(cfg())
    assert [ok for _, ok in rows] == [True, True, True, True]
    (a, _), (b, _), (unseen, _), (reseeded, _) = rows
    assert a[2] == "Δ acc interval above 0" and "40 vs 20 clips in 40 vs 20 identity groups" in a[3]
    assert "20 clips in 20 identity groups, 80 frames" in b[3] and "trained on" in b[1]
    assert unseen[2] == "Δ acc interval includes 0" and "neither run trained on" in unseen[1]
    assert "seeds 2,3 vs 0,1" in reseeded[1] and "40 clips in 40 identity groups" in reseeded[3]
    low = float(b[3].split("[")[1].split(",")[0])
    assert low > 20  # p(true) 0.9 vs a coin: about +40 points, well clear of 0


def test_a_leak_that_does_not_fire_fails_the_report(demo):
    """The leaky-trained model at chance (no memorisation): measures (a) and (b) do not fire, and
    write_tables raises after writing the table, naming the failing rows."""
    write_eval("w", items("lf", range(CLIPS)), (0, 1), set(), "lf", "lf")
    write_eval("l_on_g", demo, (0, 1), set(), "lg", "lf")
    assert [ok for _, ok in rows_of(cfg())] == [False, False, True, True]
    with pytest.raises(R.ControlError, match=r"Planted leak: toy, measure \(a\)"):
        T.write_tables(cfg())
    table = Path("tables/controls.md").read_text()
    assert table.count("| NO |") == 2


def test_a_null_pair_with_a_real_difference_fails(demo):
    write_eval("g2", demo, (2, 3), set(range(CLIPS)), "lg", "lg")  # "reseeded" run that knows every clip
    rows = rows_of(cfg())
    assert [ok for _, ok in rows] == [True, True, True, False]
    with pytest.raises(R.ControlError, match="Planted leak: toy, measure"):
        T.write_tables(cfg())


def test_too_few_clips_do_not_hold(demo):
    """With 10 clips a side the interval is wide: the control does not count, whatever it shows."""
    few = items("lg", range(30, 50))  # 10 leaked (30..39), 10 never trained on
    write_eval("l_on_g", few, (0, 1), TRAINED, "lg", "lf")
    write_eval("g", few, (0, 1), set(), "lg", "lg")
    write_eval("g2", few, (2, 3), set(), "lg", "lg")
    rows = rows_of(cfg())
    assert [ok for _, ok in rows] == [True, False, False, True]
    assert "n too small" in rows[1][0][3] and "n too small" in rows[2][0][3]


def test_pairs_that_are_not_the_protocol_are_refused(demo):
    write_eval("g2", demo, (2, 3), set(), "lg", "lg")
    details = json.loads(Path("eval/g2/details.json").read_text())
    details["run"]["lr"] = 0.1
    write_json(Path("eval/g2/details.json"), details)
    with pytest.raises(R.ControlError, match=r"differ in \['lr'\]"):
        rows_of(cfg())
    with pytest.raises(R.ControlError, match="not its training variant"):
        rows_of(cfg(within="l_on_g"))
    with pytest.raises(ValueError, match="planted_leak needs variants_dir"):
        build(R.ControlsConfig, {"null_ablation": {}, "shortcut": {}, "generator_families": {},
                                 "planted_leak": {"x": {"within": "a", "leaky": "b", "leak_free": "c",
                                                        "reseeded": "d"}}})


def test_report_deps_name_the_flags_and_the_leaky_train_manifest():
    params = {"runs": {"r_frame": {"variant": "lf"}, "r_group": {"variant": "lg"}, "r_group2": {"variant": "lg"}},
              "evaluations": {"r_frame_on_g": {"run": "r_frame", "variant": "lg"}}}
    controls = build(R.ControlsConfig, {"null_ablation": {}, "shortcut": {}, "generator_families": {},
                                        "planted_leak": {"x": {"within": "r_frame", "leaky": "r_frame_on_g",
                                                               "leak_free": "r_group", "reseeded": "r_group2"}},
                                        "variants_dir": "data/variants"})
    assert controls.leak_files(params, Path("metrics/audit")) == {
        Path("metrics/audit/lf/test_items.parquet"), Path("data/variants/lf/train/manifest.parquet")}
    assert controls.evaluation_names() == {"r_frame", "r_frame_on_g", "r_group", "r_group2"}
