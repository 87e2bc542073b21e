"""The strict params loader: unknown, missing and mistyped keys are errors, never silent defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import pytest
from pydantic import model_validator

from dfpipe.core.config import Config, ConfigError, RepoPath, build, load_section, to_dict


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
        ({"inner": {"size": 3, "extra": 1}}, "outer.inner: unknown key"),
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
    with pytest.raises(ConfigError, match="missing required key 'inner'"):
        build(Outer, data)


def test_load_section(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("sec:\n  size: 4\n")
    assert load_section("sec", Inner, p) == Inner(size=4)
    with pytest.raises(ConfigError, match="missing section 'other'"):
        load_section("other", Inner, p)
    with pytest.raises(ConfigError, match="not found"):
        load_section("sec", Inner, tmp_path / "nope.yaml")


def test_load_entry_names_known_keys(tmp_path):
    from dfpipe.core.config import load_entry

    p = tmp_path / "params.yaml"
    p.write_text("runs:\n  a: {size: 1}\n  b: {size: x}\n")
    assert load_entry("runs", "a", Inner, p) == Inner(size=1)
    with pytest.raises(ConfigError, match=r"no entry 'c' under 'runs' \(known: \['a', 'b'\]\)"):
        load_entry("runs", "c", Inner, p)
    with pytest.raises(ConfigError, match="runs.b.size: expected an integer"):
        load_entry("runs", "b", Inner, p)
