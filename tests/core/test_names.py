"""Names that become folders: the library functions refuse a bad one before reading, writing or deleting.

The stage scripts check their argument and params.yaml's keys first (tests/core/test_cli.py,
tests/core/test_config.py); these are the second line, for callers that pass a name directly.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dfpipe.core.config import ConfigError, load_entry, load_section
from dfpipe.ingest.output import prepare_outputs

BAD = "../victim"


def test_prepare_outputs_refuses_a_source_name_before_deleting(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    files = {"manifest.parquet": "x", "rejects.parquet": "x", "images-00000.npy": "x", ".a.tmp": "x"}
    for name, text in files.items():
        (victim / name).write_text(text)
    faces = tmp_path / "faces"
    with pytest.raises(ConfigError, match=r"^sources\.\.\./victim: .*not a plain name"):
        prepare_outputs(faces / BAD, tmp_path / "m" / f"{BAD}.json", name=BAD)
    assert {p.name: p.read_text() for p in victim.iterdir()} == files
    assert not faces.exists() and not (tmp_path / "m").exists()


def _variant(repo):
    from dfpipe.splits.variants import SplitConfig, VariantConfig, build_variant

    params = repo / "params.yaml"
    return lambda: build_variant(BAD, load_entry("variants", "v1", VariantConfig, params),
                                 load_section("split", SplitConfig, params))


def _spectra(repo):
    from dfpipe.features.spectra import SpectraConfig, build_variant

    return lambda: build_variant(BAD, load_section("spectra", SpectraConfig, repo / "params.yaml"))


def _run_paths(repo):
    from dfpipe.training.train import RunConfig, RunPaths, TrainConfig

    params = repo / "params.yaml"
    return lambda: RunPaths.for_run(BAD, load_entry("runs", "resnet_1", RunConfig, params),
                                    load_section("train", TrainConfig, params), audit_dir=Path("metrics/audit"))


def _evaluation(repo):
    from dfpipe.evaluation.evaluate import EvaluateConfig, run_evaluation
    from dfpipe.evaluation.evaluations import load_evaluation

    params = repo / "params.yaml"
    return lambda: run_evaluation(BAD, load_evaluation("resnet_1", params),
                                  load_section("evaluate", EvaluateConfig, params), scale=0.04)


@pytest.mark.parametrize("call, key", [(_variant, "variants"), (_spectra, "spectra.variants"),
                                       (_run_paths, "runs"), (_evaluation, "evaluations")])
def test_library_entry_points_refuse_a_bad_name(call, key, repo, tmp_path, monkeypatch):
    """variant@, spectra@, train@ and evaluate@'s library calls, with real configs from params.yaml."""
    fn = call(repo)
    monkeypatch.chdir(tmp_path)  # relative outputs, had any been written, would land here
    with pytest.raises(ConfigError, match=rf"^{key.replace('.', '[.]')}\.\.\./victim: .*not a plain name"):
        fn()
    assert list(tmp_path.iterdir()) == []
