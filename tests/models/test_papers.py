"""The full-scale profile runs every detector as its paper did: each run's settings, read the way a
checkpoint stores them, checked against its model's paper record; the gaps the project cannot close
yet are listed here, each with its reason, and must still be gaps (a closed one fails until removed)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from dfpipe.core.config import load_yaml
from dfpipe.core.profile import apply_profile
from dfpipe.models.papers import DOC_RUNS, paper_differences, paper_table, run_and_features, run_settings
from dfpipe.models.registry import paper_record, registered_names

REPO = Path(__file__).resolve().parents[2]

#: Settings no params key can set yet, per model (docs/full_scale.md, "Paper settings"): none left.
NOT_CONFIGURABLE: dict[str, set[str]] = {
    "npr": set(),
    "cnndetection": set(),
    "clip_probe": set(),
    "lgrad": set(),
    "f3net": set(),
    "xception": set(),
    "ffd": set(),
}
#: Runs that change a paper setting on purpose (the group's experiments).
DELIBERATE = {
    # NPR on the notes' three-class task (real / synthetic / edited): three softmax logits; ug_npr
    # is the paper's binary task with its single-logit BCE head
    "npr": {"head"},
    # the notes' shortened backbone (experiment 4) and the multi-task head on it (experiment 5)
    **{
        run: {"network"}
        for run in ("f3net_mix", "f3net_seg", "f3net_seg_no_bce", "f3net_seg_no_dice", "f3net_seg_cls_only")
    },
    # FFD on the notes' three-class task: three softmax logits (the authors' code: two)
    "ffd_sup": {"head"},
    "ffd_unsup": {"head"},
    # the group's own F3Net recipe, kept as named runs beside the paper's
    "f3net_baseline_notes": {"init", "lr", "batch_size"},
    "f3net_mix_full_notes": {"init", "lr", "batch_size"},
}


@pytest.fixture(scope="module")
def params(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("profile")
    shutil.copy(REPO / "params.yaml", tmp / "params.yaml")
    shutil.copy(REPO / "params.full.yaml", tmp / "params.full.yaml")
    demo = load_yaml(tmp / "params.yaml")
    apply_profile("full", tmp / "params.yaml")
    return demo, load_yaml(tmp / "params.yaml")


def paper_runs(p: dict) -> list[str]:
    return sorted(r for r in p["runs"] if paper_record(run_and_features(p, r)[0]["model"]["name"]) is not None)


def test_every_paper_detector_has_a_record_with_a_citation():
    have = {n for n in registered_names() if paper_record(n) is not None}
    assert have == set(NOT_CONFIGURABLE)
    assert paper_record("resnet18") is None  # the group's own baseline
    for name in have:
        assert re.search(r"(CVPR|ECCV) 20\d\d", paper_record(name).citation)


def test_the_binary_papers_head_is_one_logit_under_bce(params):
    """The full profile's binary runs train the papers' single-logit BCE head; the demo keeps two
    softmax logits, and the check says so (a control: the head is compared at all)."""
    demo, full = params
    for run in ("ug_npr", "ug_cnndetection", "ug_ufd", "ug_lgrad"):
        assert run_settings(*run_and_features(full, run))["head"] == "1 logit, BCE", run
        cfg, features = run_and_features(demo, run)
        assert "head" not in cfg["model"]  # the default (softmax) is left out of the dumped config
        diffs = {k: (p, o) for k, p, o in paper_differences(paper_record(cfg["model"]["name"]), cfg, features)}
        assert diffs["head"] == ("1 logit, BCE", "2 logits, softmax CE"), run


def test_full_profile_equals_each_paper_record(params):
    _, full = params
    runs = paper_runs(full)
    assert {"npr", "ug_npr", "ug_cnndetection", "ug_ufd", "ug_lgrad", "f3net_baseline", "f3net_mix_full"} <= set(runs)
    found = {}
    for run in runs:
        cfg, features = run_and_features(full, run)
        model = cfg["model"]["name"]
        found[run] = {k for k, _, _ in paper_differences(paper_record(model), cfg, features)}
        expected = NOT_CONFIGURABLE[model] | DELIBERATE.get(run, set())
        assert found[run] == expected, f"runs.{run}: differs from the paper in {found[run]}, expected {expected}"


def test_the_check_fires_on_the_demo(params):
    """Control: the demo keeps its own settings, and the same check says where they differ."""
    demo, _ = params
    cfg, features = run_and_features(demo, "ug_cnndetection")
    diffs = {k: (p, o) for k, p, o in paper_differences(paper_record("cnndetection"), cfg, features)}
    assert diffs["init"] == ("resnet50_imagenet", "scratch")
    assert diffs["image_size"] == (224, 64)
    cfg, features = run_and_features(demo, "ug_ufd")
    diffs = {k: (p, o) for k, p, o in paper_differences(paper_record("clip_probe"), cfg, features)}
    assert diffs["encoder"] == ("ViT-L-14 OpenAI CLIP", "random ViT (demo)") and "activation" in diffs


def test_paper_values_stated_here_independently(params):
    """A few of the records' values written out from the papers, so a record edit shows up here."""
    _, full = params
    expected = {
        "npr": {"lr": 2e-4, "batch_size": 32, "epochs": 50, "schedule": "step x0.9 every 10"},
        "ug_cnndetection": {"init": "resnet50_imagenet", "lr": 1e-4, "batch_size": 64, "test_input": "centre crop 224"},
        "ug_ufd": {"lr": 1e-4, "batch_size": 256, "activation": "QuickGELU", "encoder_size": 224},
        "ug_lgrad": {"lr": 5e-4, "batch_size": 16, "epochs": 100, "encoder_size": 256, "gradients": "per image"},
        "f3net_mix_full": {"init": "xception_imagenet", "lr": 2e-4, "batch_size": 128, "image_size": 299},
    }
    for run, values in expected.items():
        cfg, features = run_and_features(full, run)
        ours = run_settings(cfg, features)
        assert {k: ours[k] for k in values} == values, run


def test_docs_table_is_the_generated_one(params):
    demo, full = params
    table = paper_table(demo, full, DOC_RUNS)
    docs = (REPO / "docs" / "full_scale.md").read_text(encoding="utf-8")
    assert table in docs, "docs/full_scale.md: paste the output of `python -m dfpipe.models.papers`"
