"""Code deps in dvc.yaml equal each stage script's import closure (dfpipe.core.stagedeps).

The first test is the guard of issue 14: it fails as soon as a stage imports a module that dvc.yaml
does not list (or lists one it no longer imports); ``python -m dfpipe.core.stagedeps --write`` fixes it.
The others check the closure rules and the rewrite on a small generated package.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import yaml

from dfpipe.core import stagedeps

ROOT = Path(__file__).resolve().parents[1]


def test_dvc_yaml_code_deps_match_the_import_closure():
    diffs = stagedeps.differences(ROOT / "dvc.yaml")
    assert not diffs, "run `python -m dfpipe.core.stagedeps --write`:\n" + "\n".join(diffs)


def test_every_python_stage_is_analysed():
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    python_stages = {name for name, st in spec["stages"].items()
                     if re.search(r"stages/\S+\.py|-m dfpipe", str(st.get("do", st).get("cmd", "")))}
    assert python_stages and set(stagedeps.expected_code_deps(ROOT / "dvc.yaml")) == python_stages


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


PACKAGE = {
    "src/dfpipe/__init__.py": '"""doc."""\n__version__ = "1"\n',
    "src/dfpipe/core/__init__.py": '"""doc only."""\n',
    "src/dfpipe/core/io.py": "import json\n",
    "src/dfpipe/core/unused.py": "",
    "src/dfpipe/ingest/__init__.py": "from .helper import thing  # runs on import: listed\n",
    "src/dfpipe/ingest/helper.py": "from ..core import io\nthing = 1\n",
    "src/dfpipe/ingest/work.py": """
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from dfpipe.core import unused   # never runs
        def run():
            from dfpipe.models.registry import build   # lazy import inside a function
            return build
        """,
    "src/dfpipe/models/__init__.py": '"""doc."""\n',
    "src/dfpipe/models/registry.py": """
        import importlib
        NAMES = {"a": "arch_a"}
        def build(name):
            return importlib.import_module(f"{__package__}.{NAMES[name]}")
        """,
    "src/dfpipe/models/arch_a.py": "",
    "src/dfpipe/models/arch_b.py": "",
    "stages/work.py": "import sys\nfrom dfpipe.ingest.work import run\n",
    "stages/plain.py": "import dfpipe.core.io\n",
}

DVC_YAML = """\
stages:
  # a comment that must survive
  work:
    foreach: [x, y]
    do:
      cmd: python stages/work.py ${item}
      deps:
        - data/in/${item}   # data dep stays first
        - stages/work.py
        - src/dfpipe/ingest/work.py
      params:
        - work
      outs:
        - data/out/${item}
  plain:
    cmd: python stages/plain.py
    deps:
      - stages/plain.py
      - src/dfpipe/core/io.py
    outs:
      - data/plain
  copy:
    cmd: cp a b
    deps:
      - a
    outs:
      - b
"""


def test_closure_follows_lazy_and_dynamic_imports_and_skips_type_checking(tmp_path):
    _write(tmp_path, PACKAGE)
    deps = stagedeps.import_closure(Path("stages/work.py"), tmp_path)
    assert deps == [
        "stages/work.py",
        "src/dfpipe/core/io.py",
        "src/dfpipe/ingest/__init__.py",     # has code, runs on `import dfpipe.ingest.work`
        "src/dfpipe/ingest/helper.py",
        "src/dfpipe/ingest/work.py",
        "src/dfpipe/models/arch_a.py",       # dynamic import_module: the whole package
        "src/dfpipe/models/arch_b.py",
        "src/dfpipe/models/registry.py",
    ]
    assert stagedeps.import_closure(Path("stages/plain.py"), tmp_path) == ["stages/plain.py",
                                                                           "src/dfpipe/core/io.py"]


def test_check_fails_then_write_fixes_only_code_lines(tmp_path, capsys):
    _write(tmp_path, PACKAGE)
    dvc_yaml = tmp_path / "dvc.yaml"
    dvc_yaml.write_text(DVC_YAML)
    assert stagedeps.main(["--check", "--dvc-yaml", str(dvc_yaml)]) == 1
    out = capsys.readouterr().out
    assert "work: missing code deps" in out and "src/dfpipe/ingest/helper.py" in out
    assert "plain" not in out  # that stage was already right

    assert stagedeps.main(["--write", "--dvc-yaml", str(dvc_yaml)]) == 0
    text = dvc_yaml.read_text()
    assert "# a comment that must survive" in text
    assert "- data/in/${item}   # data dep stays first" in text
    spec = yaml.safe_load(text)
    work = spec["stages"]["work"]["do"]
    assert work["deps"][0] == "data/in/${item}"
    assert work["deps"][1:] == stagedeps.import_closure(Path("stages/work.py"), tmp_path)
    assert work["params"] == ["work"] and work["outs"] == ["data/out/${item}"]
    assert spec["stages"]["copy"] == yaml.safe_load(DVC_YAML)["stages"]["copy"]
    # idempotent, and --check agrees
    assert stagedeps.rewrite(text, stagedeps.expected_code_deps(dvc_yaml)) == text
    assert stagedeps.main(["--check", "--dvc-yaml", str(dvc_yaml)]) == 0


def test_a_new_import_is_a_missing_dep(tmp_path):
    _write(tmp_path, PACKAGE)
    dvc_yaml = tmp_path / "dvc.yaml"
    dvc_yaml.write_text(DVC_YAML)
    stagedeps.main(["--write", "--dvc-yaml", str(dvc_yaml)])
    assert stagedeps.differences(dvc_yaml) == []
    (tmp_path / "src/dfpipe/core/io.py").write_text("import json\nfrom dfpipe.core import unused\n")
    diffs = stagedeps.differences(dvc_yaml)
    assert any(d.startswith("plain: missing") and "src/dfpipe/core/unused.py" in d for d in diffs), diffs
    assert any(d.startswith("work: missing") for d in diffs), diffs


def test_params_are_narrow():
    problems = stagedeps.param_problems(ROOT / "dvc.yaml", ROOT / "params.yaml")
    assert not problems, "\n".join(problems)


def test_param_check_finds_whole_sections_and_unlisted_keys(tmp_path):
    (tmp_path / "params.yaml").write_text("train: {progress: true, lr_scale: 1, amp: auto}\n")
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  train:\n    cmd: echo\n    params: [train]\n"
        "  evaluate:\n    cmd: echo\n    params: [{params.yaml: [train.progress]}]\n")
    problems = stagedeps.param_problems(tmp_path / "dvc.yaml")
    assert any(p.startswith("train: param 'train' covers non-result keys") and "'train.progress'" in p
               for p in problems)
    assert any(p.startswith("train: result params not listed ['train.amp', 'train.lr_scale']") for p in problems)
    assert any(p.startswith("evaluate: param 'train.progress'") for p in problems)


def test_official_split_folder_must_be_the_variant_dep(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "params.yaml").write_text(
        "split: {ffpp_official: data/raw/ff/splits}\npipeline: {ffpp_splits: data/raw/demo/ffpp/splits}\n")
    assert any("pipeline.ffpp_splits" in p for p in stagedeps.param_problems(tmp_path / "dvc.yaml"))
    (tmp_path / "params.yaml").write_text(
        "split: {ffpp_official: data/raw/ff/splits}\npipeline: {ffpp_splits: data/raw/ff/splits}\n")
    assert stagedeps.param_problems(tmp_path / "dvc.yaml") == []


def test_a_declared_folder_covers_the_files_below_it(tmp_path):
    _write(tmp_path, PACKAGE)
    dvc_yaml = tmp_path / "dvc.yaml"
    dvc_yaml.write_text(DVC_YAML.replace("- src/dfpipe/ingest/work.py", "- src/dfpipe/ingest"))
    diffs = stagedeps.differences(dvc_yaml)
    assert diffs and "src/dfpipe/ingest/helper.py" not in "".join(diffs)   # covered by the folder
    assert stagedeps.main(["--write", "--dvc-yaml", str(dvc_yaml)]) == 0
    deps = yaml.safe_load(dvc_yaml.read_text())["stages"]["work"]["do"]["deps"]
    assert "src/dfpipe/ingest" in deps and "src/dfpipe/ingest/helper.py" not in deps
    assert "src/dfpipe/models/registry.py" in deps


def test_no_tracked_metrics_of_retired_runs():
    """Git-tracked stage outputs under metrics/{eval,train,audit} all belong to a current
    evaluation / frank baseline, run or variant of params.yaml: a renamed or removed entry must not
    leave numbers behind that no stage rewrites (a reader would take them for current results)."""
    import subprocess

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    owners = {"eval": set(params["evaluations"]) | set(params["frank"]), "train": set(params["runs"]),
              "audit": set(params["variants"])}
    tracked = subprocess.run(["git", "ls-files", "metrics"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    stale = set()
    for path in tracked:
        parts = path.split("/")
        if len(parts) > 2 and parts[1] in owners:
            if parts[2].removesuffix(".json").removesuffix(".md") not in owners[parts[1]]:
                stale.add("/".join(parts[:3]))
    stale = sorted(stale)
    assert not stale, f"tracked outputs of no current stage (git rm them): {stale}"
