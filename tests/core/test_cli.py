"""Stage scripts' command line: a usage line, or one ``ConfigError`` line, and exit status 2 on a wrong call."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dfpipe.core.cli import DEBUG_ENV, run_stage, stage_args
from dfpipe.core.config import ConfigError, load_yaml

REPO = Path(__file__).resolve().parents[2]


def test_stage_args_returns_the_arguments():
    assert stage_args("train", "run", argv=["resnet_5"]) == ["resnet_5"]
    assert stage_args("report", argv=[]) == []


@pytest.mark.parametrize("argv", [[], ["a", "b"], ["--help"]])
def test_wrong_call_prints_usage_and_exits_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        stage_args("train", "run", argv=argv)
    assert exc.value.code == 2
    assert "usage: python stages/train.py <run>" in capsys.readouterr().err


@pytest.mark.parametrize("script", sorted(p.name for p in (REPO / "stages").glob("*.py")))
def test_every_stage_script_checks_its_arguments(script):
    """Each stage calls stage_args first thing in main() (static check: no subprocess per stage)."""
    code = (REPO / "stages" / script).read_text()
    main = code.split("def main", 1)[1]
    assert "stage_args(" in main.split("\n\n")[0], f"{script}: main() does not start with stage_args"


def test_stage_without_its_argument_exits_2():
    proc = subprocess.run([sys.executable, "stages/variant.py"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and "usage: python stages/variant.py <variant>" in proc.stderr


# ---- names from the command line, config errors as one line


def test_name_arguments_must_be_plain_names():
    """A stage argument becomes a folder name: refused, naming the params key, before any read or write."""
    with pytest.raises(ConfigError, match=r"^sources\.\.\./\.\./x: '\.\./\.\./x' is not a plain name"):
        stage_args("preprocess", "source", argv=["../../x"])
    with pytest.raises(ConfigError, match=r"^runs\./abs: .*path separator"):
        stage_args("train", "run", argv=["/abs"])
    with pytest.raises(ConfigError, match=r"^evaluations\.\.x: .*starts with '\.'"):
        stage_args("evaluate", "evaluation", argv=[".x"])
    # placeholders listing alternatives are the script's to check (a part is written I/N)
    assert stage_args("preprocess_scale", "part|merge|pair", "source", "I/N|N|source",
                      argv=["part", "ffhq", "0/2"]) == ["part", "ffhq", "0/2"]


def test_run_stage_prints_a_config_error_as_one_line(capsys, monkeypatch):
    def main(bad):
        raise ConfigError(f"split.{bad}: not valid YAML: while parsing\n  in line 3\nexpected a mapping")

    monkeypatch.delenv(DEBUG_ENV, raising=False)
    with pytest.raises(SystemExit) as exc:
        run_stage(main, "salt")
    assert exc.value.code == 2
    assert capsys.readouterr().err == ("ConfigError: split.salt: not valid YAML: while parsing in line 3 "
                                       "expected a mapping\n")
    monkeypatch.setenv(DEBUG_ENV, "1")  # the debug switch: the error itself, with its traceback
    with pytest.raises(ConfigError, match="split.salt"):
        run_stage(main, "salt")


@pytest.mark.parametrize("script", sorted(p.name for p in (REPO / "stages").glob("*.py")))
def test_every_stage_script_runs_main_through_run_stage(script):
    """So that every stage prints a config error as one line and exits 2 (static check)."""
    code = (REPO / "stages" / script).read_text()
    guard = code.split('if __name__ == "__main__":', 1)[1]
    assert guard.strip().startswith("run_stage(main"), f"{script}: main() is not called through run_stage"


def _stage(script: str, *args: str, cwd: Path, debug: bool = False) -> subprocess.CompletedProcess:
    """``python stages/<script>.py args`` of this checkout, run in ``cwd`` (its params.yaml)."""
    env = {k: v for k, v in os.environ.items() if k != DEBUG_ENV}
    if debug:
        env[DEBUG_ENV] = "1"
    return subprocess.run([sys.executable, str(REPO / "stages" / f"{script}.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("change, key", [("unknown", "split.salty: unknown key"),
                                         ("missing", "split.salt: missing required key 'salt'")])
def test_config_error_is_one_stderr_line_and_exit_2(tmp_path, change, key):
    params = load_yaml(REPO / "params.yaml")
    split = dict(params["split"])
    if change == "unknown":
        split["salty"] = split["salt"]
    else:
        del split["salt"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"split": split, "variants": params["variants"]}))
    proc = _stage("variant", "v1", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ConfigError: {key}"), proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "data").exists()
    debug = _stage("variant", "v1", cwd=tmp_path, debug=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and key in debug.stderr


@pytest.mark.slow
def test_source_key_cannot_reach_outside_the_repository(tmp_path, repo):
    """A sources key ``../../../escape_src`` would put data/faces/<key> beside the repository, where
    preprocess first deletes shards, manifest and rejects: the stage refuses before touching anything."""
    work, outside = tmp_path / "work", tmp_path / "escape_src"
    (work / "raw").mkdir(parents=True)
    outside.mkdir()
    sentinels = {"manifest.parquet": "not ours", "images-00000.npy": "not ours", ".x.tmp": "not ours"}
    for name, text in sentinels.items():
        (outside / name).write_text(text)
    # the MediaPipe models inside the temporary repository (a symlink out of it is refused as a path)
    (work / "models" / "mediapipe").mkdir(parents=True)
    for model in (repo / "models" / "mediapipe").glob("*.tflite"):
        shutil.copyfile(model, work / "models" / "mediapipe" / model.name)
    params = load_yaml(repo / "params.yaml")
    bad = "../../../escape_src"  # data/faces/../../../escape_src = <tmp>/escape_src
    (work / "params.yaml").write_text(yaml.safe_dump({
        "preprocess": {**params["preprocess"], "workers": 1},
        "sources": {bad: {"kind": "image_folder", "path": "raw", "label": 0, "method": "m", "mode": "crop"},
                    "ok": {"kind": "image_folder", "path": "raw", "label": 0, "method": "m", "mode": "crop"}},
        "split": {"faces_dir": "data/faces"},
    }))
    expected = f"ConfigError: sources.{bad}: '{bad}' is not a plain name: it contains a path separator"
    for arg in (bad, "ok"):  # the argument itself, and a good one while the section holds the bad key
        proc = _stage("preprocess", arg, cwd=work)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(expected), proc.stderr
    assert {p.name: p.read_text() for p in outside.iterdir()} == sentinels
    assert sorted(p.name for p in work.iterdir()) == ["models", "params.yaml", "raw"]  # nothing written
