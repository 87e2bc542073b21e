"""Stage scripts' argument handling: a usage line and exit status 2 on a wrong call."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dfpipe.core.cli import stage_args

REPO = Path(__file__).resolve().parents[1]


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
