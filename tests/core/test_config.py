"""The strict params loader: unknown, missing and mistyped keys are errors, never silent defaults."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Optional

import pytest
import yaml
from pydantic import model_validator

from dfpipe.core.config import (Config, ConfigError, RepoPath, SafeName, build, load_entry, load_section, safe_name,
                                 to_dict)


class Inner(Config):
    size: int
    ratio: float = 0.5


class Outer(Config):
    name: str
    mode: Literal["raw", "crop"]
    inner: Inner
    path: RepoPath
    tags: tuple[str, ...] = ()
    counts: dict[str, int] = {}
    weights: Optional[RepoPath] = None

    @model_validator(mode="after")
    def _check(self):
        if self.inner.size <= 0:
            raise ValueError("inner.size must be positive")
        return self


GOOD = {"name": "x", "mode": "crop", "inner": {"size": 3}, "path": "data/x", "counts": {"a": 1}}


def test_build_good_and_round_trip():
    cfg = build(Outer, GOOD)
    assert cfg.inner == Inner(size=3, ratio=0.5)
    assert cfg.path == Path("data/x") and cfg.weights is None
    assert to_dict(cfg)["path"] == "data/x"
    assert build(Outer, to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"nmae": "typo"}, "unknown key"),
        ({"inner": {"size": 3, "extra": 1}}, r"outer\.inner\.extra: unknown key \(allowed: \['ratio', 'size'\]\)"),
        ({"mode": "seg"}, "is not one of"),
        ({"inner": {"size": "3"}}, "expected an integer"),
        ({"inner": {"size": True}}, "expected an integer"),
        ({"path": "/etc/passwd"}, "absolute paths are not allowed"),
        ({"inner": {"size": 0}}, "inner.size must be positive"),
        ({"tags": "a"}, "expected a list"),
        ({"counts": {"a": 1.5}}, "expected an integer"),
    ],
)
def test_bad_values_are_errors(patch, message):
    with pytest.raises(ConfigError, match=message):
        build(Outer, {**GOOD, **patch}, where="outer")


def test_missing_required_key():
    data = dict(GOOD)
    del data["inner"]
    with pytest.raises(ConfigError, match=r"^Outer\.inner: missing required key 'inner'$"):
        build(Outer, data)


def test_load_section(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("sec:\n  size: 4\n")
    assert load_section("sec", Inner, p) == Inner(size=4)
    with pytest.raises(ConfigError, match=r"^other: missing section in "):
        load_section("other", Inner, p)
    with pytest.raises(ConfigError, match="not found"):
        load_section("sec", Inner, tmp_path / "nope.yaml")


def test_load_entry_names_known_keys(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("runs:\n  a: {size: 1}\n  b: {size: x}\n")
    assert load_entry("runs", "a", Inner, p) == Inner(size=1)
    with pytest.raises(ConfigError, match=r"^runs\.c: no such entry in .* \(known: \['a', 'b'\]\)"):
        load_entry("runs", "c", Inner, p)
    with pytest.raises(ConfigError, match="runs.b.size: expected an integer"):
        load_entry("runs", "b", Inner, p)


# ---- names that become path components


@pytest.mark.parametrize("name", ["v1", "ffhq_c23", "resnet_5.v2", "F3Net-Mix", "0", "a..b"])
def test_safe_name_accepts_plain_names(name):
    assert safe_name("sources.x", name) == name


@pytest.mark.parametrize("name, why", [
    ("", "it is empty"), ("../x", "path separator"), ("a/b", "path separator"), ("/abs", "path separator"),
    ("a\\b", "path separator"), (".hidden", "starts with '.'"), ("..", "starts with '.'"),
    ("a b", "contains ' '"), ("café", "contains 'é'"), (3, "expected a name string"),
])
def test_safe_name_refuses_names_that_are_not_one_path_component(name, why):
    with pytest.raises(ConfigError, match=rf"^variants\.v9: .*{re.escape(why)}"):
        safe_name("variants.v9", name)


def test_bad_entry_key_is_refused_at_load_naming_the_dotted_key(tmp_path):
    """Any stage reading a section refuses it while one of its keys cannot be a folder name."""
    p = tmp_path / "params.yaml"
    p.write_text("runs:\n  a: {size: 1}\n  x/y: {size: 1}\n")
    with pytest.raises(ConfigError, match=r"^runs\.x/y: 'x/y' is not a plain name: it contains a path separator"):
        load_entry("runs", "a", Inner, p)
    p.write_text("runs:\n  a: {size: 1}\n")
    with pytest.raises(ConfigError, match=r"^runs\.\.\./a: .*path separator"):  # checked before lookup
        load_entry("runs", "../a", Inner, p)


class Counts(Config):
    counts: dict[SafeName, int]


def test_mapping_keys_typed_safename_are_checked_with_their_dotted_key():
    with pytest.raises(ConfigError, match=r"^variants\.v1\.counts\.\.\./ffhq: '\.\./ffhq' is not a plain name"):
        build(Counts, {"counts": {"ok": 1, "../ffhq": 2}}, where="variants.v1")


def test_params_models_refuse_path_like_keys(repo):
    """The params keys that name folders inside an entry: a variant's per-source counts, feature caches."""
    from dfpipe.core.config import load_yaml
    from dfpipe.features.encoders import FeaturesConfig
    from dfpipe.splits.variants import VariantConfig

    params = load_yaml(repo / "params.yaml")
    v1 = params["variants"]["v1"]
    with pytest.raises(ConfigError, match=r"^variants\.v1\.train\.\.\./\.\./x: .*path separator"):
        build(VariantConfig, {**v1, "train": {**v1["train"], "../../x": 5}}, where="variants.v1")
    features = params["features"]
    caches = {**features["caches"], ".hidden": next(iter(features["caches"].values()))}
    with pytest.raises(ConfigError, match=r"^features\.caches\.\.hidden: .*starts with '\.'"):
        build(FeaturesConfig, {**features, "caches": caches}, where="features", root=repo)


def test_runtime_keys_merge_into_their_section_and_are_named_there(tmp_path):
    """runtime.<section> holds the keys that change no result; the loader merges them, refuses a key
    set in both places, and names a bad one by where it is written."""
    from dfpipe.core.config import load_yaml, section_data
    from dfpipe.training.config import TrainConfig

    REPO = Path(__file__).resolve().parents[2]

    params = load_yaml(REPO / "params.yaml")
    assert "progress" not in params["train"] and section_data(params, "train")["progress"] is True
    path = tmp_path / "params.yaml"
    bad = {**params, "runtime": {**params["runtime"], "train": {**params["runtime"]["train"], "gpus": 0}}}
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match=r"^runtime\.train\.gpus: must be >= 1, got 0$"):
        load_section("train", TrainConfig, path)
    both = {**params, "train": {**params["train"], "progress": False}}
    path.write_text(yaml.safe_dump(both))
    with pytest.raises(ConfigError, match=r"train\.progress: also set as runtime\.train\.progress"):
        load_section("train", TrainConfig, path)
