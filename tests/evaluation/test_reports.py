"""Results tables: every cell equals the file it comes from; mismatched rows are marked or
refused; paired differences; provenance; dvc.yaml sections derived from params."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from dfpipe.core.config import build, load_section, load_yaml, to_dict
from dfpipe.core.io import read_json, write_json
from dfpipe.evaluation import cells
from dfpipe.evaluation import evaluate as E
from dfpipe.scoring import metrics as M
from dfpipe.evaluation import protocol as P
from dfpipe.evaluation import predictions as PR
from dfpipe.evaluation import reports as R
from dfpipe.evaluation import tables as T
from dfpipe.evaluation.compare import compare
from helpers import make_manifest, scored_frames

REPO = Path(__file__).resolve().parents[2]


def write_eval(name: str, seeds, skill: float, offset: int, run: dict, leak: dict | None = None,
               mask: dict | None = None) -> None:
    """evaluate@<name>'s outputs (real metrics code on generated scores) under ./eval."""
    frames = scored_frames(make_manifest(), seeds=seeds, skill=skill, offset=offset)
    head, details = E.evaluate_seeds(frames, n_boot=30, seed=0, level=0.95)
    items, probs = PR.stack_seeds(frames)
    details["baselines"] = {"majority": E.majority_baseline(items["label"].to_numpy(), np.array([0, 0, 1, 2]), 3)}
    details["ffpp"] = M.nan_to_none(P.protocol_metrics(items, probs, M.item_groups(items), [0.5] * len(seeds),
                                                       30, 0, 0.95))
    details["run"] = {"name": name, "model": "f3net", "f3net_mode": "mix", "backbone": "full", "image_size": 64,
                      "init": "scratch", "dropout": 0.2, "train_variant": "v4", "eval_variant": "v4", "epochs": 2,
                      "seeds": ",".join(map(str, seeds)), **run}
    details["provenance"] = {"code": "abc123def456", "scale": 0.04, "variant": details["run"]["eval_variant"],
                             "train_variant": details["run"]["train_variant"], "seeds": list(seeds),
                             "data": {"test": "0123456789ab", "val": "ba9876543210"}}
    if leak is not None:
        details["leak"] = leak
    if mask is not None:
        details["mask"] = mask
    E.write_outputs(name, frames, head, details, Path("eval") / f"{name}.json", Path("eval") / name)


def table(rows, reference="", varies=(), strict=False, paper=False, notes="", mask=False, caption="t"):
    return {"caption": caption, "rows": rows, "reference": reference, "varies": list(varies), "strict": strict,
            "paper": paper, "notes": notes, "mask": mask}


def make_cfg(**over) -> R.ReportConfig:
    data = {
        "out_dir": "tables", "eval_dir": "eval", "audit_dir": "audit", "paper": "paper.yaml",
        "notes": "notes.yaml", "bootstrap": 40, "ci_level": 0.95, "seed": 0,
        "tables": {
            "f3net": table({"Baseline": "base", "Mix": "mix", "Mix (reduced)": "mix_red"}, "Baseline",
                           ("model", "f3net_mode"), paper=True, notes="f3net"),
            "loss_ablation": table({"cls + BCE + Dice": "seg", "cls only": "seg_cls"}, "cls + BCE + Dice", (), mask=True),
        },
        "leakage": {"audits": ["v3", "v4"], "audit_keys": ["leak_check", "group_leaks"], "within": ["r5"],
                    "pairs": {"r5 (v3) - r5_v4": ["r5_on_v4", "r5_v4"]}},
        "shortcut": ["v3"],
    }
    data.update(over)
    return build(R.ReportConfig, data)


MASK = {k: {"dice": {"mean": d, "sd": 0.01}, "iou": {"mean": d / 2, "sd": 0.01},
            "pbca": {"mean": a, "sd": 0.01}, "n": 10}
        for k, d, a in (("model", 0.4, 0.8), ("all_zeros", 0.0, 0.7), ("all_ones", 0.55, 0.3))}
LEAK = {"frames_in": 4, "videos_in": 2, "frames_out": 6, "videos_out": 3,
        "gap": {"acc": {"a": 1.0, "b": 0.5, "diff": 0.5, "low": 0.2, "high": 0.8, "undefined": 0},
                "p_true": {"a": 0.9, "b": 0.4, "diff": 0.5, "low": 0.3, "high": 0.7, "undefined": 0}}}


@pytest.fixture()
def repo(tmp_path, monkeypatch):
    """A tmp repository with generated evaluation outputs; cwd inside it (paths are relative)."""
    monkeypatch.chdir(tmp_path)
    write_eval("base", (0, 1), 1.0, 0, {"model": "xception", "f3net_mode": ""})
    write_eval("mix", (0, 1), 2.5, 10, {})
    write_eval("mix_red", (0, 1), 2.0, 20, {"backbone": "reduced"})
    write_eval("seg", (0, 1), 2.0, 30, {"w_bce": 1.0}, mask=MASK)
    write_eval("seg_cls", (0, 1), 2.0, 40, {"w_bce": 0.0}, mask=MASK)
    write_eval("r5", (0, 1), 2.0, 50, {"train_variant": "v3", "eval_variant": "v3"}, leak=LEAK)
    write_eval("r5_on_v4", (0, 1), 3.0, 60, {"train_variant": "v3"})
    write_eval("r5_v4", (0, 1), 1.5, 70, {})
    for v, leaks in (("v3", 7), ("v4", 0)):
        write_json(Path("audit") / f"{v}.json", {"leak_check": "not required" if leaks else "passed", "group_leaks": leaks,
                                                 "shortcut": {"check": "not required", "threshold": 0.6,
                                                 "features": {"all": ["codec", "brightness"], "gate": ["codec"]}, "probes": {
                                                     "all": {"logistic": {"auc": 0.8, "auc_ci": [0.7, 0.9],
                                                                          "macro_f1": 0.61, "macro_f1_ci": [0.5, 0.7]},
                                                             "tree": {"auc": 0.9, "auc_ci": [0.8, 0.95],
                                                                      "macro_f1": 0.75, "macro_f1_ci": [0.7, 0.8]}},
                                                     "gate": {"logistic": {"auc": 0.97, "auc_ci": [0.95, 0.99],
                                                                           "macro_f1": 0.91, "macro_f1_ci": [0.88, 0.93]},
                                                              "tree": {"auc": 0.55, "auc_ci": [0.5, 0.6],
                                                                       "macro_f1": 0.4, "macro_f1_ci": [0.35, 0.45]}}}}})
    Path("paper.yaml").write_bytes((REPO / "metrics/reference/qian2020_f3net.yaml").read_bytes())
    Path("notes.yaml").write_bytes((REPO / "metrics/reference/notes_runs.yaml").read_bytes())
    return make_cfg()


def parse_markdown(path: Path) -> list[dict[str, str]]:
    """Rows of the (single) table in a markdown file as {column: cell}."""
    lines = [l for l in path.read_text().splitlines() if l.startswith("|")]
    split = lambda l: [c.strip() for c in l.strip("|").split(" | ")]
    header = split(lines[0])
    return [dict(zip(header, split(l))) for l in lines[2:]]


pct = lambda v: f"{100 * v:.2f}"


def test_cells_equal_files(repo):
    cfg = repo
    written = T.write_tables(cfg)
    assert sorted(p.name for p in written) == sorted([
        f"{t}.{s}" for t in ("f3net", "loss_ablation", "leakage_audit", "leak_within", "leak_cross", "shortcut_audit")
        for s in ("md", "tex")] + ["results.md"])
    rows = parse_markdown(Path("tables/f3net.md"))
    baselines = rows[3:]
    rows = rows[:3]
    assert [r["Row"] for r in rows] == ["Baseline", "Mix", "Mix (reduced)"]
    # trivial baselines: the val-majority rule scored on the test items, the audit's best nuisance probe
    maj = read_json("eval/base/details.json")["baselines"]["majority"]
    assert maj["class"] == "real" and maj["auc_real_vs_fake"] == 0.5
    assert [(b["Row"], b["Variant"], b["Macro-F1 ± sd [CI]"], b["AUC real/fake"]) for b in baselines] == [
        ("Majority class (real, chosen on val)", "v4", pct(maj["macro_f1"]), "50.00"),
        ("Nuisance probe (tree on codec, brightness)", "v4", "75.00 [70.00, 80.00]", "–")]
    for r in rows:
        head = read_json(Path("eval") / f"{r['Evaluation']}.json")
        det = read_json(Path("eval") / r["Evaluation"] / "details.json")
        m = head["macro_f1"]
        assert r["Macro-F1 ± sd [CI]"] == f"{pct(m['mean'])} ± {pct(m['sd'])} [{pct(m['low'])}, {pct(m['high'])}]"
        assert r["Weighted-F1"] == f"{pct(head['weighted_f1']['mean'])} ± {pct(head['weighted_f1']['sd'])}"
        for c in ("real", "fake", "edited"):  # per-class F1 in every table
            s = det["summary"][f"f1_{c}"]
            assert r[f"F1 {c}"] == f"{pct(s['mean'])} ± {pct(s['sd'])}"
        v = det["video"]["summary"]["auc_real_vs_fake"]  # video level reported, keyed method:video_id
        assert r["Video AUC"] == f"{pct(v['mean'])} ± {pct(v['sd'])}"
        assert r["Seeds"] == "0,1" and r["Size"] == "64" and r["Init"] == "scratch" and r["Variant"] == "v4"
    notes = yaml.safe_load(Path("notes.yaml").read_text())["sections"]["f3net"]["values"]
    assert {r["Row"]: r["Notes Valid (%)"] for r in rows} == {"Baseline": str(notes["Baseline"]),
                                                             "Mix": str(notes["Mix"]), "Mix (reduced)": "–"}
    assert {r["Row"]: r["Paper AUC (%)"] for r in rows} == {"Baseline": "89.3", "Mix": "93.3", "Mix (reduced)": "–"}
    md = Path("tables/f3net.md").read_text()
    assert "the group's earlier, unverified runs" in md
    assert ("_Provenance: data split.scale 0.04 (1 = full counts); variant v4; data sha256 v4/test 0123456789ab + "
            "v4/val ba9876543210 (over every file of the split folders scored); seeds 0,1; evaluation code "
            "abc123def456") in md

    rows = parse_markdown(Path("tables/loss_ablation.md"))
    assert rows[0]["Mask Dice"] == "40.00 ± 1.00" and rows[0]["Dice all-0"] == "0.00 ± 1.00"
    assert rows[0]["Dice all-1"] == "55.00 ± 1.00" and rows[0]["IoU all-1"] == "27.50 ± 1.00"
    assert (rows[0]["Mask PBCA"], rows[0]["PBCA all-0"], rows[0]["PBCA all-1"]) == (
        "80.00 ± 1.00", "70.00 ± 1.00", "30.00 ± 1.00")

    rows = parse_markdown(Path("tables/leak_within.md"))
    assert rows == [{"Evaluation": "r5", "Frames (videos) in train": "4 (2)", "Frames (videos) unseen": "6 (3)",
                     "Acc in train": "100.00", "Acc unseen": "50.00", "Δ Acc [CI]": "+50.00 [20.00, 80.00]",
                     "Δ p(true class) [CI]": "+50.00 [30.00, 70.00]"}]
    rows = parse_markdown(Path("tables/leak_cross.md"))
    c = compare(Path("eval/r5_on_v4/predictions.parquet"), Path("eval/r5_v4/predictions.parquet"), 40, 0, 0.95)
    m = c["metrics"]["macro_f1"]
    assert rows[0]["ΔMacro-F1 [CI]"] == f"{100 * m['diff']:+.2f} [{pct(m['low'])}, {pct(m['high'])}]"
    assert m["low"] > 0  # the better-scoring (skill 3.0 vs 1.5) model's gain is clear
    assert rows[0]["Items"] == str(len(make_manifest()))

    rows = [r for r in parse_markdown(Path("tables/shortcut_audit.md")) if r["Features"] == "gate"]
    assert rows[0] == {"Variant": "v3", "Check": "not required", "Features": "gate", "Probe": "logistic",
                       "AUC [CI]": "97.00 [95.00, 99.00]", "Macro-F1 [CI]": "91.00 [88.00, 93.00]",
                       "Threshold (max AUC)": "60.00"}
    assert [r["Probe"] for r in rows] == ["logistic", "tree"]
    assert parse_markdown(Path("tables/leakage_audit.md"))[0] == {"Variant": "v3", "leak_check": "not required",
                                                                 "group_leaks": "7"}
    tex = Path("tables/f3net.tex").read_text()
    assert "Mix (reduced)" in tex and "$\\pm$" in tex and "Provenance" in tex
    results = Path("tables/results.md").read_text()
    assert "`eval/r5_on_v4/predictions.parquet`" in results and "`audit/v3.json`" in results
    before = {p: p.read_bytes() for p in written}
    T.write_tables(cfg)  # deterministic: a second build gives the same bytes
    assert all(p.read_bytes() == b for p, b in before.items())


def test_mismatched_settings_are_marked_or_refused(repo):
    cfg = repo
    tables, _ = T.build_tables(cfg)
    rows = {r[0]: dict(zip(tables[0].columns, r)) for r in tables[0].rows}
    assert rows["Mix"]["Differs from reference"] == "none"
    assert not rows["Mix"]["ΔMacro-F1 vs Baseline [CI]"].startswith("≠")
    # the reduced backbone differs from the reference in more than the ablated part: marked
    assert rows["Mix (reduced)"]["Differs from reference"] == "≠ backbone reduced"
    assert rows["Mix (reduced)"]["ΔMacro-F1 vs Baseline [CI]"].startswith("≠ ")
    assert any(n.startswith("≠: the row differs") for n in tables[0].notes)
    strict = {**to_dict(cfg.tables["f3net"]), "strict": True}
    with pytest.raises(ValueError, match=r"row 'Mix \(reduced\)' differs from reference 'Baseline' in \['backbone'\]"):
        T.build_tables(make_cfg(tables={"f3net": strict}))
    # a difference in seeds counts as well
    det = read_json("eval/mix/details.json")
    det["run"]["seeds"] = "0"
    write_json("eval/mix/details.json", det)
    tables, _ = T.build_tables(make_cfg(tables={"f3net": to_dict(cfg.tables["f3net"])}))
    assert tables[0].rows[1][-1] == "≠ seeds 0"


def test_ffpp_protocol_columns_come_from_details(repo):
    tables, _ = T.build_tables(repo)
    rows = {r[0]: dict(zip(tables[0].columns, r)) for r in tables[0].rows}
    ffpp = read_json("eval/mix/details.json")["ffpp"]
    auc = ffpp["frame"]["all"]["auc"]
    assert rows["Mix"]["FF++ AUC frame [CI]"] == (f"{pct(auc['mean'])} ± {pct(auc['sd'])} "
                                                  f"[n too small: {ffpp['frame']['all']['n_units']} groups]")
    assert ffpp["frame"]["all"]["n_units"] == 7  # the 7 videos of make_manifest, one group each
    assert any(n.startswith("FF++ columns") for n in tables[0].notes)


@pytest.mark.parametrize("budget", [{"batch_size": 16}, {"updates": 24}, {"images_seen": 768},
                                    {"steps_per_epoch": 12}, {"lr": 0.01}, {"optimizer": "sgd"}, {"balance": False}])
def test_a_row_at_another_budget_is_marked(repo, budget):
    """Batch size, updates, images seen, optimizer settings: every setting that changes a result
    is checked, not only the ones a table lists; only the table's ``varies`` are exempt."""
    same = {"batch_size": 32, "updates": 12, "images_seen": 384, "steps_per_epoch": 6, "lr": 0.002,
            "optimizer": "adam", "balance": True}
    for name in ("base", "mix"):
        det = read_json(f"eval/{name}/details.json")
        det["run"].update(same | (budget if name == "mix" else {}))
        write_json(f"eval/{name}/details.json", det)
    tables, _ = T.build_tables(repo)
    rows = {r[0]: dict(zip(tables[0].columns, r)) for r in tables[0].rows}
    (key, value), = budget.items()
    assert rows["Mix"]["Differs from reference"] == f"≠ {key} {R.plain(value)}"
    assert rows["Mix"]["ΔMacro-F1 vs Baseline [CI]"].startswith("≠ ")
    # the same difference in a setting the table varies on purpose is not marked
    varied = make_cfg(tables={"f3net": {**to_dict(repo.tables["f3net"]), "varies": ["model", "f3net_mode", key]}})
    tables, _ = T.build_tables(varied)
    assert dict(zip(tables[0].columns, tables[0].rows[1]))["Differs from reference"] == "none"


def test_paired_difference_of_identical_models_is_zero(repo):
    write_eval("base_copy", (0,), 1.0, 0, {})
    write_eval("base_one", (0,), 1.0, 0, {})
    cfg = make_cfg(tables={"t": table({"A": "base_one", "B": "base_copy"}, "A", ())}, leakage={
        "audits": [], "audit_keys": [], "within": [], "pairs": {}}, shortcut=[])
    tables, _ = T.build_tables(cfg)
    row = dict(zip(tables[0].columns, tables[0].rows[1]))
    assert row["ΔMacro-F1 vs A [CI]"] == "+0.00 [0.00, 0.00]"
    # evaluations of different items cannot be paired: said, not computed
    other = make_manifest(n_images=10)
    frames = scored_frames(other, seeds=(0,))
    head, det = E.evaluate_seeds(frames, 10, 0, 0.95)
    det.update({"run": read_json("eval/base_one/details.json")["run"], "provenance": read_json("eval/base_one/details.json")["provenance"]})
    E.write_outputs("small", frames, head, det, Path("eval/small.json"), Path("eval/small"))
    cfg = make_cfg(tables={"t": table({"A": "base_one", "B": "small"}, "A", ())}, leakage={
        "audits": [], "audit_keys": [], "within": [], "pairs": {}}, shortcut=[])
    tables, _ = T.build_tables(cfg)
    assert dict(zip(tables[0].columns, tables[0].rows[1]))["ΔMacro-F1 vs A [CI]"] == "n/a (not paired)"


def test_missing_file_and_key_are_named(repo):
    cfg = repo
    Path("eval/mix/details.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"eval/mix/details.json: metrics file not found \(written by `evaluate@mix`"):
        T.write_tables(cfg)
    write_eval("mix", (0, 1), 2.5, 10, {})
    det = read_json("eval/r5/details.json")
    del det["leak"]
    write_json("eval/r5/details.json", det)
    with pytest.raises(KeyError, match="r5/details.json: key 'leak' not found"):
        T.write_tables(cfg)


def test_config_checks():
    with pytest.raises(Exception, match="reference 'X' is not a row label"):
        make_cfg(tables={"t": table({"A": "a"}, "X")})
    with pytest.raises(Exception, match="unknown settings"):
        make_cfg(tables={"t": table({"A": "a"}, "A", ("colour",))})
    assert cells.pct(None) == "n/a" and cells.pct(0.12345) == "12.35"


def test_dvc_yaml_matches_params():
    """Every derived part of dvc.yaml (code and data deps, the evaluate foreach, the report's deps,
    plots and artifacts) is what the generator writes from params.yaml and the imports."""
    from dfpipe.pipeline import dvcfile

    assert dvcfile.derived(REPO / "dvc.yaml") == (REPO / "dvc.yaml").read_text(), (
        "dvc.yaml is out of date: python -m dfpipe.pipeline.dvcfile --write"
    )
    params = load_yaml(REPO / "params.yaml")
    cfg = load_section("report", R.ReportConfig, REPO / "params.yaml")
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    deps = [d for d in dvc["stages"]["report"]["deps"] if not d.startswith("data/code/")]  # all but the code dep
    assert deps == R.report_deps(cfg, params)
    assert set(cfg.evaluation_names()) <= set(dvc["stages"]["evaluate"]["foreach"]) | set(params.get("frank", {}))
    assert "evaluate" in dvc["stages"]["evaluate"]["do"]["params"]  # the whole section (no runtime key in it)


def test_generator_rewrites_a_stale_dvc_yaml(tmp_path):
    """The control: a dvc.yaml with a stale foreach, report dep and plot is rewritten, and --check fails
    on it first."""
    import shutil

    from dfpipe.pipeline import dvcfile

    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "src", tmp_path / "src")
    shutil.copytree(REPO / "stages", tmp_path / "stages")
    shutil.copytree(REPO / "metrics/reference", tmp_path / "metrics/reference")
    good = (tmp_path / "dvc.yaml").read_text()
    stale = good.replace("npr_on_dfdc: {run: npr, variant: dfdc_test", "npr_on_dfdc: {run: npr, variant: v4")
    stale = stale.replace("      - metrics/reference/notes_runs.yaml\n", "", 1)
    stale = stale.replace("artifacts:\n", "artifacts:\n  extra:\n    path: models/extra\n", 1)
    assert stale.count("\n") < good.count("\n") + 3 and stale != good
    (tmp_path / "dvc.yaml").write_text(stale)
    assert dvcfile.main(["--check", "--dvc-yaml", str(tmp_path / "dvc.yaml")]) == 1
    assert dvcfile.main(["--write", "--dvc-yaml", str(tmp_path / "dvc.yaml")]) == 0
    assert (tmp_path / "dvc.yaml").read_text() == good


def test_controls_hold_or_fail_the_report(repo):
    """A null ablation (seeds differ, nothing else) must give a Δ interval that includes 0, a
    planted shortcut must make the audit fire and its twin must pass; a control that does not
    hold fails write_tables after the tables are written, never silently."""
    for v, top in (("v3", 0.9), ("v4", 0.55)):
        audit = read_json(f"audit/{v}.json")
        audit["shortcut"].update(max_auc=top, threshold=0.75)
        write_json(f"audit/{v}.json", audit)
    write_eval("r5_v4_s23", (2, 3), 1.5, 70, {})   # r5_v4's scores, other seeds: a null
    write_eval("r5_v4_better", (2, 3), 4.0, 70, {})   # same settings, planted real difference
    ok = {"null_ablation": {"reseeded": ["r5_v4_s23", "r5_v4"]}, "shortcut": {"codec": ["v3", "v4"]},
          "generator_families": {}}
    written = T.write_tables(make_cfg(controls=ok))
    rows = parse_markdown(Path("tables/controls.md"))
    assert Path("tables/controls.md") in written
    assert [r["Holds"] for r in rows] == ["yes", "yes", "yes"]
    assert rows[1]["Measured"].startswith("90.00") and rows[2]["Expected"] == "gate probe AUC <= 75.00"
    # a planted difference is not a null: the control fails the stage, the table is still written
    with pytest.raises(R.ControlError, match=r"controls that did not hold: \['Null ablation: planted'\]"):
        T.write_tables(make_cfg(controls={**ok, "null_ablation": {"planted": ["r5_v4_better", "r5_v4"]}}))
    assert parse_markdown(Path("tables/controls.md"))[0]["Holds"] == "NO"
    # a shortcut that does not fire on the planted variant fails too
    with pytest.raises(R.ControlError, match="Planted shortcut: swapped"):
        T.write_tables(make_cfg(controls={**ok, "shortcut": {"swapped": ["v4", "v3"]}}))
    # a side with one seed cannot show seed noise: refused, not "failed"
    write_eval("r5_v4_one", (2,), 1.5, 70, {})
    with pytest.raises(R.ControlError, match="r5_v4_one has one seed"):
        T.write_tables(make_cfg(controls={**ok, "null_ablation": {"x": ["r5_v4_one", "r5_v4"]}}))
    # a "null" pair that differs in a setting is refused outright
    write_eval("r5_v4_lr", (2, 3), 1.5, 70, {"lr": 0.1})
    with pytest.raises(R.ControlError, match=r"differ in \['lr'\]"):
        T.write_tables(make_cfg(controls={**ok, "null_ablation": {"x": ["r5_v4_lr", "r5_v4"]}}))


def write_family_predictions(name: str) -> None:
    """eval/<name>/predictions.parquet of a binary detector trained on real + gan_a: gan_a and its
    look-alike gan_c score high, gan_b (another family) is scored like the real items."""
    rng = np.random.default_rng(5)
    frames = []
    for seed in (0, 1):
        rows = []
        for src, label, loc in (("ffhq", 0, 0.3), ("gan_a", 1, 0.8), ("gan_b", 1, 0.35), ("gan_c", 1, 0.8)):
            for i in range(30):
                p_fake = float(np.clip(rng.normal(loc, 0.12), 0.0, 1.0))
                rows.append({"id": f"{src}_{i:02d}", "seed": seed, "label": label, "p_real": 1.0 - p_fake,
                             "p_fake": p_fake, "source": src, "method": "", "video_id": "",
                             "group": f"{src}/{i // 2}"})
        frames.append(pd.DataFrame(rows))
    Path("eval", name).mkdir(parents=True, exist_ok=True)
    pd.concat(frames).to_parquet(Path("eval", name, "predictions.parquet"))


def test_generator_family_control_fires_on_a_look_alike_family(repo):
    """A family scored well below the seen one holds; a family the detector scores like the seen
    one (as if it had been trained on it) fails the report stage, after the table is written."""
    write_family_predictions("ug")
    for v in ("v3", "v4"):
        audit = read_json(f"audit/{v}.json")
        audit["shortcut"].update(max_auc=0.9 if v == "v3" else 0.55, threshold=0.75)
        write_json(f"audit/{v}.json", audit)
    base = {"null_ablation": {}, "shortcut": {"codec": ["v3", "v4"]}}
    fam = {"evaluation": "ug", "seen": "gan_a", "unseen": ["gan_b"], "min_gap": 0.05}
    T.write_tables(make_cfg(controls={**base, "generator_families": {"fam": fam}}))
    rows = [r for r in parse_markdown(Path("tables/controls.md")) if r["Control"].startswith("Generator")]
    assert [r["Holds"] for r in rows] == ["yes"] and "gan_b" in rows[0]["Planted"]
    gap = float(rows[0]["Measured"].split("= ")[1].split(" ")[0])
    assert gap > 20 and "(60 identity groups)" in rows[0]["Measured"]
    with pytest.raises(R.ControlError, match="Generator families: fam"):
        T.write_tables(make_cfg(controls={**base, "generator_families": {"fam": {**fam, "unseen": ["gan_b", "gan_c"]}}}))
    rows = [r for r in parse_markdown(Path("tables/controls.md")) if r["Control"].startswith("Generator")]
    assert [r["Holds"] for r in rows] == ["yes", "NO"]
