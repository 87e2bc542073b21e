"""params.yaml as a whole: run_defaults merge, YAML 1.2 round trip (dvc exp run -S), the full-scale
profile, and paths that must stay inside the repository."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from ruamel.yaml import YAML

from dfpipe.core.config import ConfigError, load_entry, load_section, load_yaml, to_dict
from dfpipe.core.profile import apply_profile
from dfpipe.demo import DemoConfig
from dfpipe.evaluation.evaluate import EvaluateConfig
from dfpipe.evaluation.evaluations import EvaluationEntry
from dfpipe.evaluation.reports import ReportConfig
from dfpipe.features.spectra import SpectraConfig
from dfpipe.ingest.preprocess import PreprocessConfig
from dfpipe.ingest.sources import SourceConfig
from dfpipe.splits.audit import AuditConfig
from dfpipe.features.encoders import FeaturesConfig
from dfpipe.splits.variants import SplitConfig, VariantConfig
from dfpipe.training.train import RunConfig, TrainConfig

REPO = Path(__file__).resolve().parents[2]


def dvc_rewrite(text: str, edit=lambda data: None) -> str:
    """``text`` parsed and written back by DVC's own YAML writer (round trip, quotes not preserved),
    as ``dvc exp run -S`` does; ``edit`` changes the parsed data in between."""
    from dvc.utils.serialize._yaml import _dump, parse_yaml_for_update

    data = parse_yaml_for_update(text, "params.yaml")
    edit(data)
    buf = io.StringIO()
    _dump(data, buf)
    return buf.getvalue()
SECTIONS = {"demo": DemoConfig, "preprocess": PreprocessConfig, "split": SplitConfig, "audit": AuditConfig,
            "spectra": SpectraConfig, "train": TrainConfig, "evaluate": EvaluateConfig, "report": ReportConfig,
            "features": FeaturesConfig}
ENTRIES = {"sources": SourceConfig, "variants": VariantConfig, "runs": RunConfig, "evaluations": EvaluationEntry}


def all_configs(params: Path) -> dict[str, dict]:
    """Every section and entry of ``params`` built strictly, as plain dicts keyed by dotted name."""
    data = load_yaml(params)
    out = {sec: to_dict(load_section(sec, cls, params)) for sec, cls in SECTIONS.items()}
    for sec, cls in ENTRIES.items():
        assert data[sec], sec
        out.update({f"{sec}.{k}": to_dict(load_entry(sec, k, cls, params)) for k in data[sec]})
    return out


def test_runs_resolve_to_the_former_explicit_configs():
    """run_defaults + short runs == the configs the runs had when every key was spelled out (plus seeds)."""
    before = json.loads((REPO / "tests/data/runs_resolved_before.json").read_text())
    runs = load_yaml(REPO / "params.yaml")["runs"]
    assert set(before) <= set(runs)  # runs added since (e.g. resnet_5_v3g) have no former config
    # Changed on purpose (leak measure, multi-seed training): seeds replace seed; precise BN counted in
    # images; class-balanced demo sampling; mask losses on edited items; init; demo-only widths.
    family_width = {"resnet18": 0.5, "xception": 0.25, "f3net": 0.25, "npr": 1.0}
    for name in before:
        cfg = to_dict(load_entry("runs", name, RunConfig, REPO / "params.yaml"))
        # keys added for the reading group's detectors, at values that change nothing for the former runs
        assert cfg.pop("augment") == "none"
        assert cfg.pop("patience") is None  # early stopping off: every epoch runs, as before
        old = dict(before[name])
        assert cfg.pop("seeds") == [0, 1] and old.pop("seed") == 0
        assert old.pop("bn_recalibration_batches") * 64 == cfg.pop("bn_recalibration_images") == 256
        assert (old.pop("balance"), cfg.pop("balance"), cfg.pop("init")) == (False, True, "scratch")
        assert cfg["loss"].pop("mask_on") == "edited"
        model = cfg["model"]
        assert model.pop("width", 1.0) == family_width[model["name"]], name
        assert (model.pop("spectrum_color", "per_channel"), model.pop("spectrum_eps", 1e-12)) == ("per_channel", 1e-12)
        # each model's config now holds only its own knobs; the others were at values it ignored
        assert set(model) <= set(old["model"]), name
        old["model"] = {k: v for k, v in old["model"].items() if k in model}
        if name.startswith("f3net_") and not name.startswith("f3net_seg"):
            # the F3Net ablation now runs at one budget: batch 32 x 6 steps (12 updates, 384 images)
            images = lambda c: c["batch_size"] * c["max_steps_per_epoch"] * c["epochs"]
            assert images(old) == 384 == images(cfg)
            old.update(batch_size=32, max_steps_per_epoch=6)
        assert cfg == old, name


def test_run_defaults_merge_is_deep(tmp_path):
    p = tmp_path / "params.yaml"
    data = load_yaml(REPO / "params.yaml")
    data["runs"] = {"r": {"variant": "v1", "model": {"name": "resnet18", "image_size": 32}, "lr": 0.1,
                          "batch_size": 4, "epochs": 1, "max_steps_per_epoch": 0, "loss": {"w_dice": 0.0}}}
    p.write_text(yaml.safe_dump(data))
    cfg = load_entry("runs", "r", RunConfig, p)
    assert cfg.model.image_size == 32 and cfg.model.num_classes == data["run_defaults"]["model"]["num_classes"]
    assert cfg.loss.w_cls == data["run_defaults"]["loss"]["w_cls"]
    del data["run_defaults"]["optimizer"]  # no default in code: a key missing from both is an error
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"runs\.r\.optimizer: missing required key 'optimizer'"):
        load_entry("runs", "r", RunConfig, p)


def test_params_survive_a_yaml12_round_trip(tmp_path):
    """dvc exp run -S rewrites params.yaml with ruamel (YAML 1.2), dropping quotes: configs must not change."""
    from dvc.utils.serialize._yaml import parse_yaml

    # what `-S runs.resnet_5.lr=0.001` writes
    text = dvc_rewrite((REPO / "params.yaml").read_text(), lambda d: d["runs"]["resnet_5"].update(lr=0.001))
    # the hazard is real: a YAML 1.1 reader (PyYAML) now reads some value differently
    assert yaml.safe_load(text) != YAML(typ="safe", pure=True).load(text)
    # DVC itself must still read the file it wrote (with ruamel.yaml.clib it parses with libyaml,
    # which rejects `key: a:b` plain scalars inside flow mappings once the quotes are gone)
    parse_yaml(text, "params.yaml")
    (tmp_path / "params.yaml").write_text(text)
    before, after = all_configs(REPO / "params.yaml"), all_configs(tmp_path / "params.yaml")
    assert after.pop("runs.resnet_5")["lr"] == 0.001
    before.pop("runs.resnet_5")
    assert after == before


def test_full_profile_merges_and_validates(tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    shutil.copy(REPO / "params.full.yaml", tmp_path / "params.full.yaml")
    _, changed = apply_profile("full", tmp_path / "params.yaml")
    cfgs = all_configs(tmp_path / "params.yaml")
    assert cfgs["preprocess"]["size"] == 256 and cfgs["preprocess"]["frames_per_video"] == 30  # the papers' side
    assert cfgs["split"]["scale"] == 1.0 and cfgs["split"]["ffpp_official"] == "data/raw/FaceForensics++/splits"
    assert cfgs["train"]["deterministic"] is False
    runs = {k: v for k, v in cfgs.items() if k.startswith("runs.")}
    assert all(r["max_steps_per_epoch"] == 0 for r in runs.values())
    nulls = {"runs.resnet_5_v4_reseeded", "runs.r18_ctl_leak_group_reseeded"}
    assert {k for k, r in runs.items() if r["seeds"] != [0, 1, 2]} == nulls
    assert all(runs[k]["seeds"] == [3, 4, 5] for k in nulls)   # the null controls: other seeds
    # the planted-leak control keeps its demo recipe (32 px) on the demo's clips at every scale
    runs = {k: r for k, r in runs.items() if "_ctl_leak_" not in k}
    assert {r["model"]["image_size"] for r in runs.values() if r["model"]["name"] in ("xception", "f3net")} == {299}
    assert {r["model"]["image_size"] for r in runs.values() if r["model"]["name"] in ("resnet18", "npr")} == {224}
    assert "split.scale" in changed
    # comments survive the rewrite
    assert "# run_defaults: deep-merged" in (tmp_path / "params.yaml").read_text()
    # DVC reads the profiled file with its own (libyaml) loader, also after an `-S` rewrite of it
    from dvc.utils.serialize._yaml import parse_yaml

    text = (tmp_path / "params.yaml").read_text()
    parse_yaml(text, "params.yaml")
    parse_yaml(dvc_rewrite(text), "params.yaml")
    # a typo in a profile is an error, not a new key
    (tmp_path / "params.typo.yaml").write_text("split: {scael: 1.0}\n")
    with pytest.raises(ConfigError, match="split.scael: not in params.yaml"):
        apply_profile("typo", tmp_path / "params.yaml", write=False)


@pytest.mark.parametrize("section, key, cls, field", [
    ("split", None, SplitConfig, "out_dir"),
    ("split", None, SplitConfig, "ffpp_official"),
    ("audit", None, AuditConfig, "out_dir"),
    ("preprocess", None, PreprocessConfig, "detector_model"),
    ("sources", "ffhq", SourceConfig, "path"),
])
def test_paths_that_leave_the_repository_are_refused(tmp_path, section, key, cls, field):
    repo = tmp_path / "repo"
    repo.mkdir()
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", repo / "link_out")
    (repo / "inside").mkdir()
    os.symlink(repo / "inside", repo / "link_in")
    data = load_yaml(REPO / "params.yaml")
    target = data[section][key] if key else data[section]
    where = f"{section}.{key}.{field}" if key else f"{section}.{field}"

    def load(value):
        target[field] = value
        (repo / "params.yaml").write_text(yaml.safe_dump(data))
        return load_entry(section, key, cls, repo / "params.yaml") if key else load_section(section, cls, repo / "params.yaml")

    for bad, why in [("../elsewhere", "escapes the repository"), ("data/../../x", "escapes the repository"),
                     ("link_out/x", "resolves outside the repository"), ("/etc", "absolute paths are not allowed")]:
        with pytest.raises(ConfigError, match=rf"{where}: .*{why}"):
            load(bad)
    assert getattr(load("link_in/x"), field) == Path("link_in/x")  # a symlink inside the repository is fine
    assert getattr(load("data/./x/../y"), field) == Path("data/./x/../y")
