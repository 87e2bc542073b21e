"""Code deps in dvc.yaml equal each stage script's import closure, data deps the reads each stage
declares (dfpipe.core.stagedeps).

The first tests are the guards: they fail as soon as a stage imports a module that dvc.yaml does not
list (or lists one it no longer imports), or dvc.yaml's data deps differ from ``DATA_DEPS``;
``python -m dfpipe.pipeline.dvcfile --write`` fixes both. A real DVC repository shows that a changed
file the evaluate stage reads (the training variant's val split) makes it stale. The others check
the closure rules, the path-param guard and the rewrite on a small generated package.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from dfpipe.core import stagedeps
from dfpipe.core.stagedeps import DataDep
from dfpipe.pipeline import dvcfile
from dfpipe.evaluation.evaluations import resolved_evaluations

ROOT = Path(__file__).resolve().parents[2]


def test_dvc_yaml_code_deps_match_the_import_closure():
    diffs = stagedeps.differences(ROOT / "dvc.yaml")
    assert not diffs, "run `python -m dfpipe.pipeline.dvcfile --write`:\n" + "\n".join(diffs)


def test_every_python_stage_is_analysed():
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    python_stages = {name for name, st in spec["stages"].items()
                     if re.search(r"stages/\S+\.py|-m dfpipe", str(st.get("do", st).get("cmd", "")))}
    assert python_stages and set(stagedeps.expected_code_deps(ROOT / "dvc.yaml")) == python_stages
    assert python_stages <= set(stagedeps.DATA_DEPS)   # every stage declares what it reads


def test_dvc_yaml_data_deps_are_the_declared_reads():
    """Every data dep line of dvc.yaml is a declared read and every declared read is listed; every
    path param of a stage's config is a data dep, an output or explained."""
    diffs = stagedeps.data_differences(ROOT / "dvc.yaml")
    assert not diffs, "run `python -m dfpipe.pipeline.dvcfile --write`:\n" + "\n".join(diffs)


def test_evaluate_depends_on_the_val_split_its_thresholds_come_from():
    """evaluate@ picks binary runs' real-vs-fake threshold on the *training* variant's val split
    (dfpipe.evaluation.evaluate.run_evaluation), which is not under the scored variant's test folder."""
    want = "${train.variants_dir}/${item.train_variant}/val"
    assert want in [d.path for d in stagedeps.expected_data_deps(ROOT / "dvc.yaml")["evaluate"]]
    assert want in stagedeps.declared_data_deps(ROOT / "dvc.yaml")["evaluate"]


def _resolve(template: str, params: dict, key: str, item: dict) -> str:
    """A dvc.yaml template with ``${key}``, ``${item.<f>}`` and ``${<params key>}`` filled in."""
    def value(m: re.Match) -> str:
        name = m.group(1)
        if name == "key":
            return key
        if name.startswith("item."):
            return str(item[name[5:]])
        node = params
        for part in name.split("."):
            node = node[part]
        return str(node)
    return re.sub(r"\$\{([\w.]+)\}", value, template)


@pytest.mark.slow
def test_a_changed_val_split_makes_evaluations_of_runs_trained_on_it_stale(tmp_path):
    """Real DVC on the repository's evaluate stage (its data deps and params, a stand-in command):
    after a repro, a changed file of the training variant's val split makes ``dvc status`` report
    the evaluation changed; a changed train-split file (not read) does not."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    item = {"run": "r", "variant": "scored", "train_variant": "trained", "param": "evaluations.e"}
    params["evaluations"] = {"e": {"run": "r", "variant": "scored"}}
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["evaluate"]
    stage["foreach"] = {"e": item}  # as the generator resolves it (run r trained on "trained")
    body = stage["do"]
    body["deps"] = [d for d in body["deps"] if not d.startswith(stagedeps.CODE_PREFIXES)]
    outs = [_resolve(next(iter(o)) if isinstance(o, dict) else o, params, "e", item)
            for k in ("outs", "metrics", "plots") for o in body.get(k) or []]
    body["cmd"] = "python make_outs.py " + " ".join(outs)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"evaluate": stage}}, sort_keys=False))
    (tmp_path / "make_outs.py").write_text(
        "import sys, pathlib\n"
        "for p in map(pathlib.Path, sys.argv[1:]):\n"
        "    target = p / 'x.png' if not p.suffix else p\n"
        "    target.parent.mkdir(parents=True, exist_ok=True)\n"
        "    target.write_text('{}')\n")
    for dep in body["deps"]:
        path = tmp_path / _resolve(dep, params, "e", item)
        target = path if path.suffix else path / "manifest.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(dep)
    variants = tmp_path / params["train"]["variants_dir"]
    val_file = variants / "trained" / "val" / "manifest.parquet"   # what run_evaluation reads for thresholds
    train_file = variants / "trained" / "train" / "manifest.parquet"
    train_file.parent.mkdir(parents=True, exist_ok=True)
    train_file.write_text("train")
    val_file.parent.mkdir(parents=True, exist_ok=True)
    val_file.write_text("val")
    env = dict(os.environ, DVC_NO_ANALYTICS="1")

    def dvc(*args: str) -> str:
        proc = subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    dvc("init", "--no-scm", "-q")
    dvc("repro", "-q")
    assert "up to date" in dvc("status")
    train_file.write_text("train, changed")
    assert "up to date" in dvc("status")
    val_file.write_text("val, changed")
    status = dvc("status")
    assert "evaluate@e" in status and "trained/val" in status, status


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


@pytest.fixture()
def tmp_table(monkeypatch):
    """The generated package's data-dep declaration in place of the repository's."""
    table = {"work": (DataDep("data/in/${item}", "data dep stays first"),), "plain": (), "copy": None}
    monkeypatch.setattr(stagedeps, "DATA_DEPS", table)
    return table


def test_check_fails_then_write_fixes_only_code_lines(tmp_path, capsys, tmp_table):
    _write(tmp_path, PACKAGE)
    dvc_yaml = tmp_path / "dvc.yaml"
    dvc_yaml.write_text(DVC_YAML)
    assert dvcfile.main(["--check", "--dvc-yaml", str(dvc_yaml)]) == 1
    out = capsys.readouterr().out
    assert "work: missing code deps" in out and "src/dfpipe/ingest/helper.py" in out
    assert "plain" not in out  # that stage was already right

    assert dvcfile.main(["--write", "--dvc-yaml", str(dvc_yaml)]) == 0
    text = dvc_yaml.read_text()
    assert "# a comment that must survive" in text
    assert "        # data dep stays first\n        - data/in/${item}\n" in text   # the declared note
    spec = yaml.safe_load(text)
    work = spec["stages"]["work"]["do"]
    assert work["deps"][0] == "data/in/${item}"
    assert work["deps"][1:] == stagedeps.compacted(stagedeps.import_closure(Path("stages/work.py"), tmp_path), tmp_path)
    assert work["params"] == ["work"] and work["outs"] == ["data/out/${item}"]
    assert spec["stages"]["copy"] == yaml.safe_load(DVC_YAML)["stages"]["copy"]
    # idempotent, and --check agrees
    assert stagedeps.rewrite(text, stagedeps.derived_code_deps(dvc_yaml)) == text
    assert dvcfile.main(["--check", "--dvc-yaml", str(dvc_yaml)]) == 0


def test_a_new_import_is_a_missing_dep(tmp_path):
    _write(tmp_path, PACKAGE)
    dvc_yaml = tmp_path / "dvc.yaml"
    dvc_yaml.write_text(DVC_YAML)
    dvcfile.main(["--write", "--dvc-yaml", str(dvc_yaml)])
    assert stagedeps.differences(dvc_yaml) == []
    (tmp_path / "src/dfpipe/core/io.py").write_text("import json\nfrom dfpipe.core import unused\n")
    diffs = stagedeps.differences(dvc_yaml)
    assert any(d.startswith("plain: missing") and "src/dfpipe/core/unused.py" in d for d in diffs), diffs
    assert any(d.startswith("work: missing") for d in diffs), diffs


def test_params_are_narrow():
    problems = stagedeps.param_problems(ROOT / "dvc.yaml", ROOT / "params.yaml")
    assert not problems, "\n".join(problems)


def test_param_check_finds_runtime_params_and_unlisted_keys(tmp_path):
    (tmp_path / "params.yaml").write_text("train: {lr_scale: 1, amp: auto}\nruntime: {train: {progress: true}}\n")
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  train:\n    cmd: echo\n    params: [train.amp]\n"
        "  evaluate:\n    cmd: echo\n    params: [{params.yaml: [runtime.train.progress]}]\n"
        "  make_demo:\n    cmd: echo\n    params: [runtime]\n")
    problems = stagedeps.param_problems(tmp_path / "dvc.yaml")
    assert any(p.startswith("train: result params not listed ['train.lr_scale']") for p in problems), problems
    assert any(p.startswith("evaluate: param 'runtime.train.progress' is a runtime key") for p in problems)
    assert any(p.startswith("make_demo: param 'runtime' is a runtime key") for p in problems)
    (tmp_path / "dvc.yaml").write_text("stages:\n  train:\n    cmd: echo\n    params: [train]\n")
    assert stagedeps.param_problems(tmp_path / "dvc.yaml") == []  # the whole section covers every key


def test_official_split_folder_must_be_the_variant_dep(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "params.yaml").write_text(
        "split: {ffpp_official: data/raw/ff/splits}\npipeline: {ffpp_splits: data/raw/demo/ffpp/splits}\n")
    assert any("pipeline.ffpp_splits" in p for p in stagedeps.param_problems(tmp_path / "dvc.yaml"))
    (tmp_path / "params.yaml").write_text(
        "split: {ffpp_official: data/raw/ff/splits}\npipeline: {ffpp_splits: data/raw/ff/splits}\n")
    assert stagedeps.param_problems(tmp_path / "dvc.yaml") == []


def test_a_fully_imported_package_is_one_folder_dep(tmp_path, tmp_table):
    """A package whose every module is in the closure is one folder dep (a smaller dvc.lock, the same
    code); one module outside the closure keeps the package as files (a folder would widen the deps)."""
    _write(tmp_path, PACKAGE)
    dvc_yaml = tmp_path / "dvc.yaml"
    dvc_yaml.write_text(DVC_YAML)
    assert dvcfile.main(["--write", "--dvc-yaml", str(dvc_yaml)]) == 0
    deps = yaml.safe_load(dvc_yaml.read_text())["stages"]["work"]["do"]["deps"]
    assert "src/dfpipe/ingest" in deps and "src/dfpipe/models" in deps
    assert "src/dfpipe/ingest/helper.py" not in deps and "src/dfpipe/models/registry.py" not in deps
    (tmp_path / "src/dfpipe/ingest/unused.py").write_text("x = 1\n")  # not imported by the stage
    assert dvcfile.main(["--check", "--dvc-yaml", str(dvc_yaml)]) == 1
    assert dvcfile.main(["--write", "--dvc-yaml", str(dvc_yaml)]) == 0
    deps = yaml.safe_load(dvc_yaml.read_text())["stages"]["work"]["do"]["deps"]
    assert "src/dfpipe/ingest" not in deps and "src/dfpipe/ingest/helper.py" in deps


def test_no_tracked_metrics_of_retired_runs():
    """Git-tracked stage outputs under metrics/{eval,train,audit} all belong to a current
    evaluation / frank baseline, run or variant of params.yaml: a renamed or removed entry must not
    leave numbers behind that no stage rewrites (a reader would take them for current results)."""
    import subprocess

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    evaluations = resolved_evaluations(params)
    owners = {"test": set(evaluations) | set(params["frank"]), "train": set(params["runs"]),
              "audit": set(params["variants"]) | set(params.get("poison") or {})}  # audit_poisoned@
    tracked = subprocess.run(["git", "ls-files", "metrics"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    stale = set()
    for path in tracked:
        parts = path.split("/")
        if len(parts) > 2 and parts[1] in owners:
            # <name>.json, <name>.md and the audit's dataset card <name>.card.md
            if parts[2].removesuffix(".json").removesuffix(".md").removesuffix(".card") not in owners[parts[1]]:
                stale.add("/".join(parts[:3]))
    stale = sorted(stale)
    assert not stale, f"tracked outputs of no current stage (git rm them): {stale}"


CONFIG_PACKAGE = {
    "src/dfpipe/__init__.py": '"""doc."""\n',
    "src/dfpipe/core/__init__.py": '"""doc."""\n',
    "src/dfpipe/core/config.py": ("RepoPath = str\n"
                                  "def load_section(section, cls): ...\ndef load_entry(section, n, cls): ...\n"),
    "src/dfpipe/things.py": """
        from dfpipe.core.config import RepoPath
        class Base:
            cache_dir: RepoPath
        class Weights:
            file: RepoPath
        class ThingConfig(Base):
            in_dir: RepoPath
            out_dir: RepoPath
            models: dict[str, Weights]
            size: int
        class EntryConfig:
            path: RepoPath
        """,
    "src/dfpipe/reexport.py": "from dfpipe.things import ThingConfig as ThingConfig\n",
    "stages/thing.py": """
        from dfpipe.core.config import load_entry, load_section
        from dfpipe.reexport import ThingConfig
        from dfpipe.things import EntryConfig
        def main(name):
            cfg = load_section("thing", ThingConfig)
            entry = load_entry("entries", name, EntryConfig)
        """,
}

CONFIG_DVC_YAML = """\
stages:
  thing:
    foreach: ${entries}
    do:
      cmd: python stages/thing.py ${key}
      deps:
        - ${item.path}
        # reads the cache
        - ${thing.cache_dir}
        - stages/thing.py
        - src/dfpipe/core/config.py
        - src/dfpipe/things.py
        - src/dfpipe/reexport.py
        - data/stale
      outs:
        - ${thing.out_dir}/${key}
"""


def test_path_params_of_a_stages_config_must_be_deps_outputs_or_explained(tmp_path, monkeypatch):
    """Fields typed RepoPath of the classes a stage script loads (through re-exports, base classes
    and dict-of-config fields) are found; each must be a data dep, an output or explained."""
    _write(tmp_path, CONFIG_PACKAGE)
    dvc_yaml = tmp_path / "dvc.yaml"
    dvc_yaml.write_text(CONFIG_DVC_YAML)
    assert stagedeps.stage_path_params(Path("stages/thing.py"), tmp_path, "entries") == {
        "thing.cache_dir", "thing.in_dir", "thing.out_dir", "thing.models.*.file", "item.path"}
    table = {"thing": (DataDep("${item.path}"), DataDep("${thing.cache_dir}", "reads the cache"))}
    monkeypatch.setattr(stagedeps, "STAGE_NOT_DEPS", {})
    problems = stagedeps.path_param_problems(dvc_yaml, table)
    assert problems == ["thing: path params neither data deps nor outputs ['thing.in_dir', 'thing.models.*.file'] "
                        "(declare in stagedeps.DATA_DEPS, or say why not in STAGE_NOT_DEPS)"]
    monkeypatch.setattr(stagedeps, "STAGE_NOT_DEPS", {"thing": {"thing.models.*.file": "pinned by a hash param"}})
    table["thing"] += (DataDep("${thing.in_dir}/${key}"),)
    assert stagedeps.path_param_problems(dvc_yaml, table) == []


def test_write_makes_data_deps_the_declared_reads_in_place(tmp_path, monkeypatch):
    """--check names a missing and an undeclared data dep; --write replaces the data lines where
    they were (data before code stays so), writes notes as comments, leaves code lines alone, lists
    a ``when`` dep only while its param is set, and is idempotent."""
    _write(tmp_path, CONFIG_PACKAGE)
    dvc_yaml = tmp_path / "dvc.yaml"
    dvc_yaml.write_text(CONFIG_DVC_YAML)
    (tmp_path / "params.yaml").write_text("thing: {list: null}\n")
    table = {"thing": (DataDep("${item.path}"), DataDep("${thing.cache_dir}", "reads the cache"),
                       DataDep("${thing.in_dir}/${key}", "the entry's inputs"),
                       DataDep("${thing.list}", when="thing.list"))}
    monkeypatch.setattr(stagedeps, "DATA_DEPS", table)
    monkeypatch.setattr(stagedeps, "STAGE_NOT_DEPS", {"thing": {"thing.models.*.file": "pinned"}})
    assert stagedeps.data_differences(dvc_yaml) == [
        "thing: missing data deps ['${thing.in_dir}/${key}']", "thing: data deps not declared ['data/stale']"]
    code = stagedeps.derived_code_deps(dvc_yaml)
    text = stagedeps.rewrite(dvc_yaml.read_text(), code, stagedeps.expected_data_deps(dvc_yaml))
    assert text.split("      deps:\n")[1].split("      outs:")[0] == (
        "        - ${item.path}\n"
        "        # reads the cache\n"
        "        - ${thing.cache_dir}\n"
        "        # the entry's inputs\n"
        "        - ${thing.in_dir}/${key}\n"
        "        - stages/thing.py\n"
        "        - src/dfpipe/core\n"  # config.py is the package's only module: one folder dep
        "        - src/dfpipe/reexport.py\n"
        "        - src/dfpipe/things.py\n")
    dvc_yaml.write_text(text)
    assert stagedeps.data_differences(dvc_yaml) == [] and stagedeps.differences(dvc_yaml) == []
    assert stagedeps.rewrite(text, code, stagedeps.expected_data_deps(dvc_yaml)) == text
    (tmp_path / "params.yaml").write_text("thing: {list: lists/official.txt}\n")
    assert stagedeps.data_differences(dvc_yaml) == ["thing: missing data deps ['${thing.list}']"]
    assert dvcfile.main(["--write", "--dvc-yaml", str(dvc_yaml)]) == 0
    assert "        - ${thing.list}\n        - stages/thing.py\n" in dvc_yaml.read_text()


FINGERPRINTED = """\
stages:
  code:
    cmd: python -m dfpipe.core.stagedeps data/code
    deps:
      - src/dfpipe/core/stagedeps.py
    outs:
      - data/code
  work:
    cmd: python stages/work.py
    deps:
      - stages/work.py
    outs:
      - data/out
  plain:
    cmd: python stages/plain.py
    deps:
      - stages/plain.py
    outs:
      - data/plain
"""


def _fingerprinted(tmp_path: Path, monkeypatch) -> Path:
    """The generated package plus the repository's fingerprint module, under a dvc.yaml with a
    fingerprint stage, its derived parts written."""
    _write(tmp_path, PACKAGE)
    for rel in ("src/dfpipe/core/stagedeps.py", "src/dfpipe/core/config.py", "src/dfpipe/core/numerics.py"):
        (tmp_path / rel).write_text((ROOT / rel).read_text())
    (tmp_path / "src/dfpipe/__init__.py").write_text((ROOT / "src/dfpipe/__init__.py").read_text())
    monkeypatch.setattr(stagedeps, "DATA_DEPS", {"code": (), "work": (), "plain": ()})
    dvc_yaml = tmp_path / "dvc.yaml"
    dvc_yaml.write_text(FINGERPRINTED)
    assert dvcfile.main(["--write", "--dvc-yaml", str(dvc_yaml)]) == 0
    return dvc_yaml


def test_the_fingerprint_stage_holds_every_closure_and_each_stage_its_fingerprint(tmp_path, monkeypatch):
    dvc_yaml = _fingerprinted(tmp_path, monkeypatch)
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    assert stages["work"]["deps"] == ["data/code/stages.work.sha256"]
    assert stages["plain"]["deps"] == ["data/code/stages.plain.sha256"]
    union = set(stagedeps.import_closure(Path("stages/work.py"), tmp_path))
    union |= set(stagedeps.import_closure(Path("stages/plain.py"), tmp_path))
    assert all(stagedeps._covered(f, stages["code"]["deps"]) for f in union)
    assert "src/dfpipe/core/stagedeps.py" in stages["code"]["deps"]  # its own closure too
    assert stagedeps.differences(dvc_yaml) == []
    # a stage that lists the modules again (or another fingerprint) is a difference
    text = dvc_yaml.read_text().replace("- data/code/stages.plain.sha256", "- data/code/stages.work.sha256")
    dvc_yaml.write_text(text)
    assert any(d.startswith("plain: code deps must be") for d in stagedeps.differences(dvc_yaml))

    written = stagedeps.write_fingerprints(dvc_yaml, tmp_path / "data/code")
    assert sorted(p.name for p in written) == ["stages.plain.sha256", "stages.work.sha256"]
    lines = (tmp_path / "data/code/stages.plain.sha256").read_text().splitlines()
    assert lines == [
        f"{hashlib.sha256((tmp_path / f).read_bytes()).hexdigest()}  {f}"
        for f in sorted(stagedeps.import_closure(Path("stages/plain.py"), tmp_path))
    ]


def test_a_changed_module_changes_only_the_fingerprints_of_stages_importing_it(tmp_path, monkeypatch):
    dvc_yaml = _fingerprinted(tmp_path, monkeypatch)
    out = tmp_path / "data/code"
    stagedeps.write_fingerprints(dvc_yaml, out)
    before = {p.name: p.read_text() for p in out.iterdir()}
    (tmp_path / "src/dfpipe/ingest/helper.py").write_text("from ..core import io\nthing = 2\n")  # work only
    stagedeps.write_fingerprints(dvc_yaml, out)
    after = {p.name: p.read_text() for p in out.iterdir()}
    assert after["stages.plain.sha256"] == before["stages.plain.sha256"]
    assert after["stages.work.sha256"] != before["stages.work.sha256"]
    (tmp_path / "src/dfpipe/core/io.py").write_text("import json, os\n")  # both import it
    stagedeps.write_fingerprints(dvc_yaml, out)
    again = {p.name: p.read_text() for p in out.iterdir()}
    assert all(again[k] != after[k] for k in again)


@pytest.mark.slow
def test_real_dvc_reruns_exactly_the_stages_whose_closure_changed(tmp_path, monkeypatch):
    """Real DVC on the fingerprint stage: a module only ``work`` imports reruns ``code`` and
    ``work``; ``plain`` is skipped (its fingerprint's bytes are unchanged)."""
    dvc_yaml = _fingerprinted(tmp_path, monkeypatch)
    for name in ("work", "plain"):
        (tmp_path / f"stages/{name}.py").write_text(
            (tmp_path / f"stages/{name}.py").read_text()
            + f"import pathlib\npathlib.Path('data/{'out' if name == 'work' else 'plain'}').write_text('x')\n"
        )
    dvc_yaml.write_text(dvc_yaml.read_text())
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PYTHONPATH=str(tmp_path / "src"))

    def dvc(*args: str) -> str:
        proc = subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    (tmp_path / "data").mkdir(exist_ok=True)
    dvc("init", "--no-scm", "-q")
    dvc("repro")
    (tmp_path / "src/dfpipe/ingest/helper.py").write_text("from ..core import io\nthing = 2\n")
    out = dvc("repro")
    assert "Running stage 'code'" in out and "Running stage 'work'" in out, out
    assert "Running stage 'plain'" not in out and "'plain' didn't change" in out, out


def test_code_hash_reads_the_fingerprint_file_and_matches_the_closure(tmp_path):
    """A table's provenance "code": the same value from the fingerprint stage's file and from the
    import closure computed directly; it changes when an imported module does and not otherwise."""
    assert stagedeps.code_hash(Path("stages/work.py"), tmp_path) == "unknown"
    (tmp_path / "stages").mkdir()
    (tmp_path / "src/dfpipe").mkdir(parents=True)
    (tmp_path / "src/dfpipe/__init__.py").write_text("")
    (tmp_path / "src/dfpipe/lib.py").write_text("x = 1\n")
    (tmp_path / "src/dfpipe/other.py").write_text("y = 1\n")
    (tmp_path / "stages/work.py").write_text("from dfpipe import lib\n")
    entry = Path("stages/work.py")
    direct = stagedeps.code_hash(entry, tmp_path)
    assert len(direct) == 12
    out = tmp_path / stagedeps.fingerprint_path(entry)
    out.parent.mkdir(parents=True)
    out.write_text(stagedeps.fingerprint_text(stagedeps.import_closure(entry, tmp_path), tmp_path))
    assert stagedeps.code_hash(entry, tmp_path) == direct
    (tmp_path / "src/dfpipe/other.py").write_text("y = 2\n")  # not imported by the entry
    out.unlink()
    assert stagedeps.code_hash(entry, tmp_path) == direct
    (tmp_path / "src/dfpipe/lib.py").write_text("x = 2\n")
    assert stagedeps.code_hash(entry, tmp_path) != direct
