"""Derive each DVC stage's code and data deps (imports; declared reads): the library half of the dvc.yaml writer.

Also checks that params are narrow: no stage depends on ``runtime:`` (keys that change no result:
worker counts, executors, logging, device of training), and a stage whose config class reads a whole
section depends on every key of it (``STAGE_SECTIONS``).

A stage's code deps are its entry point (``stages/<stage>.py``, or the module of a
``python -m dfpipe...`` command) plus every module of ``src/dfpipe`` that the entry point imports,
directly or through other dfpipe modules (imports inside functions included: the models registry
imports architectures on first use). Rules:

- ``import dfpipe.a.b`` / ``from dfpipe.a import b`` / relative imports resolve to the module file
  (``b.py``) or the package's ``__init__.py``; imports under ``if TYPE_CHECKING:`` never run and
  are skipped;
- a package ``__init__.py`` is listed only when it holds more than a docstring and constants (the
  interpreter runs it on every import below it, so code there can change results);
- ``importlib.import_module(<not a constant>)`` in a module means "any module of this package":
  every module of that package is in the closure (conservative, e.g. dfpipe.models.registry);
- third-party imports are not deps (requirements.txt pins them).

A stage's data deps are the files and folders its code reads, declared once in ``DATA_DEPS`` as
dvc.yaml templates (``${item.<field>}`` where a foreach entry names the path, the enclosing folder
where DVC cannot interpolate the exact one). Every path-valued param of the config classes a stage
script loads (``load_section`` / ``load_entry`` of a class with ``RepoPath`` fields) must be one of
that stage's data deps or outputs, or be explained in ``NOT_DEPS`` / ``STAGE_NOT_DEPS``: a new path
param cannot be read silently.

Code deps go through one **fingerprint stage** (``code``): it depends on the union of every Python
stage's closure (listed once, in one dvc.lock entry) and writes, per entry point, one file under
``data/code/`` (``<entry>.sha256``: the sha256 of every file of that entry's closure, the format of
``sha256sum``). Every other Python stage depends on its entry's fingerprint file instead of the
files themselves, so a changed module reruns exactly the stages whose closure holds it (only their
fingerprint changes; DVC skips a stage whose dep bytes are unchanged) while each stage's dvc.lock
entry holds one code dep, not 20-40. That matters because DVC parses and rewrites the whole dvc.lock
after every stage it runs.

In dvc.yaml a code dep is any ``deps:`` entry under ``src/``, ``stages/`` or ``data/code/``, a data
dep any other entry. :func:`rewrite` replaces exactly those lines of each stage (each kind at the place of its
first line; code right after ``deps:``, data after the code when a kind had none), writes a declared
dep's note as the comment above it, and keeps every other line and comment as it is;
:func:`differences` / :func:`data_differences` list where dvc.yaml disagrees with the closure or
the declaration. The command is ``python -m dfpipe.pipeline.dvcfile --check|--write``.
"""

from __future__ import annotations

import ast
import fnmatch
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, cast

import yaml

from dfpipe.core.config import RUNTIME, load_yaml

PACKAGE = "dfpipe"
#: stage -> the params.yaml section its config class reads whole: the stage lists that section as
#: one param (or each of its keys), so a key added to the section is a param at once. Keys that change
#: no output byte (worker counts, executors, launch, device of training, logging, resume state) live
#: in ``runtime.<section>`` instead, which no stage lists (:data:`dfpipe.core.config.RUNTIME`).
STAGE_SECTIONS = {"make_demo": "demo", "preprocess": "preprocess", "train": "train", "evaluate": "evaluate"}
#: The fingerprint stage and the folder it writes (one ``<entry>.sha256`` per Python entry point).
FINGERPRINT_STAGE = "code"
FINGERPRINT_DIR = "data/code"
CODE_PREFIXES = ("src/", "stages/", f"{FINGERPRINT_DIR}/")


class DataDep(NamedTuple):
    """One data dep of a stage: a dvc.yaml dep template, why the stage reads it (written as the
    comment above the line when given) and, for a path that exists only while a params key is set,
    that key (``when``: the dep is listed only while the key is not null in params.yaml)."""

    path: str
    note: str = ""
    when: str = ""


#: stage -> the data its code reads, as dvc.yaml dep templates: ``--write`` makes each stage's
#: data deps exactly these, ``--check`` fails when they differ. ``None``: derived elsewhere (the
#: report's inputs, from params.yaml ``report:`` by dfpipe.evaluation.reports.report_deps, checked
#: by tests/evaluation/test_reports.py). A read that no template can name (a variant's source list, a run's
#: input kind) is covered by the enclosing folder.
DATA_DEPS: dict[str, tuple[DataDep, ...] | None] = {
    FINGERPRINT_STAGE: (),  # reads the code of every stage: its deps are code deps
    "assets": (),  # copies or downloads the pinned models: no tracked input
    "make_demo": (),  # generated from params alone
    "preprocess": (  # dfpipe.ingest: the source folder (FF++ masks, Celeb-DF / DFDC lists inside), the models
        DataDep("${item.path}"),
        DataDep("${preprocess.detector_model}"),
        DataDep("${preprocess.segmenter_model}"),
        DataDep("${preprocess.whole_model}", when="preprocess.whole_model"),
    ),
    "variant": (  # dfpipe.splits.variants.build_variant
        DataDep("${split.faces_dir}", "every source's crops (DVC cannot interpolate the variant's source list)"),
        DataDep("${pipeline.ffpp_splits}"),
        DataDep("${split.celebdf_test_list}", when="split.celebdf_test_list"),
    ),
    "audit": (  # stages/audit.py: the variant, and the Celeb-DF test list it reports against
        DataDep("${split.out_dir}/${key}"),
        DataDep("${split.celebdf_test_list}", when="split.celebdf_test_list"),
    ),
    "poison": (DataDep("${split.out_dir}/${item.base}"),),  # dfpipe.splits.poison: the base variant
    "audit_poisoned": (  # stages/audit.py on a poisoned variant, with its base's declared checks
        DataDep("${split.out_dir}/${key}"),
        DataDep("${split.celebdf_test_list}", when="split.celebdf_test_list"),
    ),
    "spectra": (DataDep("${spectra.variants_dir}/${item}"),),  # features.spectra.build_variant
    "features": (  # features.encoders.build_cache
        DataDep("${features.variants_dir}/${item.variant}"),
        DataDep(
            "${features.encoders.landmarks.model}",
            "the face landmark model of encoder landmarks (foreach cannot branch on the encoder)",
            when="features.encoders.landmarks.model",
        ),
    ),
    "train": (  # dfpipe.training.train.fit and the gate check it runs first
        DataDep(
            "${train.variants_dir}/${item.variant}",
            "train/val, and every file of the variant for the audit gate's fingerprint",
        ),
        DataDep("${audit.out_dir}/${item.variant}/gate.json"),
        DataDep("${train.spectra_dir}", "dct/dft-input runs' statistics (foreach cannot branch on the input kind)"),
        DataDep("${train.features_dir}", "clip/lgrad-input runs read features@ caches (same reason)"),
    ),
    "frank": (  # dfpipe.scoring.frank.load_split, every split
        DataDep("${spectra.out_dir}/${item.variant}", "the cached spectra of every split and their statistics"),
        DataDep("${spectra.variants_dir}/${item.variant}/train/manifest.parquet"),
        DataDep(
            "${spectra.variants_dir}/${item.variant}/val",
            "val and test manifests; every file of both for the provenance's data fingerprint",
        ),
        DataDep("${spectra.variants_dir}/${item.variant}/test"),
    ),
    "pretrained": (),  # downloads, or copies pretrained.weights.<name>.local (see STAGE_NOT_DEPS)
    "evaluate": (  # dfpipe.evaluation.evaluate.run_evaluation
        DataDep("${train.models_dir}/${item.run}"),
        DataDep("${train.metrics_dir}/${item.run}/curves"),
        DataDep("${train.features_dir}", "clip/lgrad-input runs read features@ caches"),
        DataDep("${train.variants_dir}/${item.variant}/test"),
        DataDep(
            "${train.variants_dir}/${item.train_variant}/val",
            "thresholds (binary runs, FF++ protocol) and the majority baseline are chosen on the "
            "training variant's val split",
        ),
        DataDep(
            "${audit.out_dir}/${item.variant}/test_items.parquet",
            "leak measure (a): the audit's per-item flags of the scored variant",
        ),
    ),
    "backdoor": (  # dfpipe.evaluation.backdoor.run_backdoor: both runs, their train splits, the triggered copy
        DataDep("${train.models_dir}/${item.clean}"),
        DataDep("${train.models_dir}/${item.poisoned}"),
        DataDep("${train.variants_dir}/${item.clean_variant}/train"),
        DataDep("${train.variants_dir}/${item.poisoned_variant}/train"),
        DataDep("${train.variants_dir}/${item.poisoned_variant}/triggered"),
    ),
    "report": None,
}
#: Path-valued params that are no stage's data dep or output, and why.
NOT_DEPS = {
    "train.scratch_dir": "resume state: restores a seed's exact state, never changes a result",
    "train.log_dir": "timings log, never read",
}
#: stage -> path-valued params its config classes hold that are neither its data deps nor its
#: outputs, and why (a read the stage makes only in some configurations, or a key it does not use).
STAGE_NOT_DEPS: dict[str, dict[str, str]] = {
    "variant": {"split.ffpp_official": "the dep is pipeline.ffpp_splits, checked to name the same folder"},
    "audit": {
        "split.faces_dir": "not read (the audit reads the materialised variant)",
        "split.ffpp_official": "not read by the audit",
    },
    "poison": {
        "split.faces_dir": "not read (built from the materialised base variant)",
        "split.ffpp_official": "not read",
        "split.celebdf_test_list": "not read (the base variant honoured it)",
    },
    "audit_poisoned": {
        "split.faces_dir": "not read (the audit reads the materialised variant)",
        "split.ffpp_official": "not read by the audit",
    },
    "features": {
        "features.encoders.*.weights": "null in the demo; a set file must match its sha256 pin, "
        "a param of the stage (features.encoders.<encoder>)"
    },
    "pretrained": {
        "pretrained.weights.*.local": "copied when present, refused unless it matches its sha256 pin "
        "(pretrained.weights.<name>, a param of the stage)"
    },
    "train": {
        "train.pretrained_dir": "read only by runs with init other than scratch (none in the demo): "
        "foreach cannot see the init a run takes from run_defaults, and the "
        "folder exists only once a pretrained@ stage has run"
    },
    "evaluate": {
        "train.spectra_dir": "not read: dct/dft statistics are part of the checkpoint",
        "train.pretrained_dir": "provenance label of runs with init other than scratch only",
    },
    "frank": {"spectra.metrics_dir": "spectra@'s output, not read", "spectra.plots_dir": "spectra@'s output, not read"},
}
_SCRIPT = re.compile(r"(?:^|\s)(stages/[\w/.-]+\.py)(?:\s|$)")
_MODULE = re.compile(r"(?:^|\s)-m\s+(dfpipe(?:\.\w+)*)(?:\s|$)")


class StageDepsError(RuntimeError):
    """dvc.yaml cannot be analysed (a stage's script is missing, or its deps block is malformed)."""


@dataclass
class _Module:
    name: str  # dotted module name, e.g. dfpipe.core.io
    path: Path  # file, relative to the repository root
    is_package: bool


def _find_module(name: str, src: Path, root: Path) -> _Module | None:
    parts = name.split(".")
    base = src.joinpath(*parts)
    if (base / "__init__.py").is_file():
        return _Module(name, (base / "__init__.py").relative_to(root), True)
    if base.with_suffix(".py").is_file():
        return _Module(name, base.with_suffix(".py").relative_to(root), False)
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (its else branch runs)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _is_trivial_init(tree: ast.Module) -> bool:
    """Docstring, ``from __future__`` and constant assignments only (e.g. ``__version__``)."""
    for stmt in tree.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
            continue
        if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant):
            continue
        return False
    return True


def _imported_names(tree: ast.AST, current: str, is_package: bool) -> tuple[set[str], bool]:
    """Dotted dfpipe names imported by a module, and whether it imports dynamically."""
    names: set[str] = set()
    dynamic = False
    package = current if is_package else current.rpartition(".")[0]
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            # `from pkg import mod` imports the submodule when one of that name exists
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and not isinstance(node.args[0], ast.Constant)
        ):
            dynamic = True
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(str(node.args[0].value))
    return {n for n in names if n == PACKAGE or n.startswith(PACKAGE + ".")}, dynamic


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_closure(entry: Path, root: Path) -> list[str]:
    """Repository-relative paths (stage script first, then sorted) of ``entry`` and every dfpipe
    module it (transitively) imports.

    ``entry`` is a file relative to ``root`` (a stage script or a module under src/).
    """
    src = root / "src"
    files: set[Path] = {entry}
    seen: set[str] = set()
    todo: list[tuple[Path, str, bool]] = []
    rel_entry = entry.as_posix()
    if rel_entry.startswith("src/"):
        dotted = rel_entry[len("src/") : -len(".py")].replace("/", ".")
        is_pkg = dotted.endswith(".__init__")
        dotted = dotted.removesuffix(".__init__")
        seen.add(dotted)
        todo.append((entry, dotted, is_pkg))
        for parent in _parents(dotted):
            todo_mod = _find_module(parent, src, root)
            if todo_mod and parent not in seen:
                seen.add(parent)
                todo.append((todo_mod.path, parent, True))
    else:
        todo.append((entry, "__main__", False))

    while todo:
        path, dotted, is_pkg = todo.pop()
        full = root / path
        if not full.is_file():
            raise StageDepsError(f"{path}: file not found")
        tree = ast.parse(full.read_text(encoding="utf-8"), filename=str(path))
        if not (is_pkg and _is_trivial_init(tree)):
            files.add(path)
        names, dynamic = _imported_names(tree, dotted, is_pkg)
        if dynamic:  # any module of this package may be imported
            pkg_dir = (root / path).parent
            names.update(
                f"{dotted if is_pkg else dotted.rpartition('.')[0]}.{p.stem}"
                for p in pkg_dir.glob("*.py")
                if p.name != "__init__.py"
            )
        for name in sorted(names):
            for candidate in [*_parents(name), name]:  # importing a.b.c runs a and a.b first
                if candidate in seen:
                    continue
                module = _find_module(candidate, src, root)
                if module is None:
                    continue  # an attribute (`from dfpipe.x import func`), not a module
                seen.add(candidate)
                todo.append((module.path, candidate, module.is_package))
    # the entry point first, then the library modules in path order
    return sorted((p.as_posix() for p in files), key=lambda p: (not p.startswith("stages/"), p))


def stage_entry(cmd: str, root: Path) -> Path | None:
    """The stage's Python entry point file from its ``cmd`` (None for non-Python commands)."""
    m = _SCRIPT.search(cmd)
    if m:
        return Path(m.group(1))
    m = _MODULE.search(cmd)
    if m:
        module = _find_module(m.group(1), root / "src", root)
        if module is None:
            raise StageDepsError(f"cmd {cmd!r}: module {m.group(1)} not found under src/")
        return module.path
    return None


def expected_code_deps(dvc_yaml: Path) -> dict[str, list[str]]:
    """Stage name (as in dvc.yaml, before foreach expansion) -> sorted code deps from imports: the
    stage's own import closure (what its fingerprint file covers)."""
    root = dvc_yaml.resolve().parent
    spec = _load_spec(dvc_yaml)
    return {name: import_closure(entry, root) for name, (_, entry) in _python_stages(spec, root).items()}


def fingerprint_path(entry: Path) -> str:
    """The fingerprint file of an entry point: ``stages/train.py`` -> ``data/code/stages.train.sha256``,
    ``src/dfpipe/core/assets.py`` -> ``data/code/dfpipe.core.assets.sha256``."""
    stem = entry.with_suffix("").as_posix()
    stem = stem[len("src/") :] if stem.startswith("src/") else stem
    return f"{FINGERPRINT_DIR}/{stem.replace('/', '.')}.sha256"


def _union(closures: dict[str, list[str]]) -> list[str]:
    files = {f for closure in closures.values() for f in closure}
    return sorted(files, key=lambda p: (not p.startswith("stages/"), p))


def fingerprint_text(closure: list[str], root: Path) -> str:
    """One ``<sha256>  <path>`` line per file of ``closure`` (``sha256sum -c`` reads it back)."""
    return "".join(f"{hashlib.sha256((root / f).read_bytes()).hexdigest()}  {f}\n" for f in sorted(closure))


def code_hash(entry: Path, root: Path) -> str:
    """The first 12 hex digits of the sha256 of ``entry``'s fingerprint text: a table's provenance
    "code". It changes exactly when a module the entry imports does, and stays the same on a rerun
    of the same code (unlike a commit hash, which would dirty the tree after every commit).

    Reads the fingerprint stage's file (``data/code/<entry>.sha256``, which every Python stage
    depends on, so under DVC it is always current); outside DVC, without that file, it computes
    the same text from the import closure. ``"unknown"`` when ``entry`` is not under ``root``.
    """
    path = root / fingerprint_path(entry)
    if path.is_file():
        text = path.read_bytes()
    elif (root / entry).is_file():
        text = fingerprint_text(import_closure(entry, root), root).encode()
    else:
        return "unknown"
    return hashlib.sha256(text).hexdigest()[:12]


def write_fingerprints(dvc_yaml: Path, out_dir: Path) -> list[Path]:
    """Write the fingerprint file of every Python stage's entry point (the fingerprint stage's own
    entry excluded) into ``out_dir``; a file whose text is unchanged is left untouched."""
    root = dvc_yaml.resolve().parent
    spec = _load_spec(dvc_yaml)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (_, entry) in sorted(_python_stages(spec, root).items()):
        if name == FINGERPRINT_STAGE:
            continue
        path = out_dir / Path(fingerprint_path(entry)).name
        text = fingerprint_text(import_closure(entry, root), root)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def declared_code_deps(dvc_yaml: Path) -> dict[str, list[str]]:
    """Stage name -> the code deps dvc.yaml lists now (entries under src/ or stages/)."""
    spec = _load_spec(dvc_yaml)
    out = {}
    for name, stage in (spec.get("stages") or {}).items():
        body = stage.get("do", stage)
        deps = [d if isinstance(d, str) else next(iter(d)) for d in body.get("deps") or []]
        out[name] = [d for d in deps if d.startswith(CODE_PREFIXES)]
    return out


def _covered(path: str, declared: list[str]) -> bool:
    """A closure file is covered by itself or by a declared folder above it (a folder dep is a
    superset: DVC hashes every file in it)."""
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in declared)


def compacted(closure: list[str], root: Path) -> list[str]:
    """``closure`` with every package folder whose modules it holds entirely written as the folder.

    A folder dep is one dvc.lock entry instead of one per file (the lock is rewritten after every
    stage, so its size is paid 106 times per ``dvc repro``) and depends on exactly the same code: a
    folder is used only when every ``.py`` file in it is in the closure (a package ``__init__.py``
    that holds only a docstring counts as covered), so it widens nothing.
    """
    files = set(closure)
    folders = []
    for folder in sorted({str(Path(f).parent.as_posix()) for f in closure if f.startswith("src/")}):
        modules = sorted(p for p in (root / folder).glob("*.py"))
        # a folder dep covers its subfolders too: only a package without subpackages is compacted
        nested = any(sub.is_dir() and any(sub.rglob("*.py")) for sub in (root / folder).iterdir())
        if (
            modules
            and not nested
            and all(
                (m.relative_to(root).as_posix() in files)
                or (m.name == "__init__.py" and _is_trivial_init(ast.parse(m.read_text(encoding="utf-8"))))
                for m in modules
            )
        ):
            folders.append(folder)
    kept = [f for f in closure if not _covered(f, folders)] + folders
    return sorted(kept, key=lambda p: (not p.startswith("stages/"), p))


def derived_code_deps(dvc_yaml: Path) -> dict[str, list[str]]:
    """Derived code deps per stage. With a fingerprint stage in dvc.yaml: that stage depends on the
    union of every Python stage's closure (each fully imported package folder as one folder dep,
    :func:`compacted`) and every other Python stage on its entry's fingerprint file. Without one
    (a small pipeline): each stage on its own compacted closure."""
    root = dvc_yaml.resolve().parent
    spec = _load_spec(dvc_yaml)
    stages = _python_stages(spec, root)
    closures = {name: import_closure(entry, root) for name, (_, entry) in stages.items()}
    if FINGERPRINT_STAGE not in stages:
        return {name: compacted(want, root) for name, want in closures.items()}
    return {
        name: compacted(_union(closures), root) if name == FINGERPRINT_STAGE else [fingerprint_path(entry)]
        for name, (_, entry) in stages.items()
    }


def differences(dvc_yaml: Path) -> list[str]:
    """Human-readable differences between declared and derived code deps (empty: in agreement)."""
    root = dvc_yaml.resolve().parent
    spec = _load_spec(dvc_yaml)
    stages = _python_stages(spec, root)
    expected = expected_code_deps(dvc_yaml)
    declared = declared_code_deps(dvc_yaml)
    lines = []
    if FINGERPRINT_STAGE in stages:
        body = stages[FINGERPRINT_STAGE][0].get("do", stages[FINGERPRINT_STAGE][0])
        outs = [o if isinstance(o, str) else next(iter(o)) for o in body.get("outs") or []]
        if outs != [FINGERPRINT_DIR]:
            lines.append(f"{FINGERPRINT_STAGE}: outs must be [{FINGERPRINT_DIR}], not {outs}")
        for name, (_, entry) in stages.items():
            if name != FINGERPRINT_STAGE and declared.get(name) != [fingerprint_path(entry)]:
                lines.append(f"{name}: code deps must be [{fingerprint_path(entry)}], not {declared.get(name)}")
        expected = {FINGERPRINT_STAGE: _union(expected)}
    for name, want in expected.items():
        have = declared.get(name, [])
        missing = [f for f in want if not _covered(f, have)]
        extra = [d for d in have if d not in want and not any(_covered(f, [d]) for f in want)]
        if missing:
            lines.append(f"{name}: missing code deps {missing}")
        if extra:
            lines.append(f"{name}: code deps not imported {extra}")
        if len(have) != len(set(have)):
            lines.append(f"{name}: duplicate code deps")
    return lines


def _python_stages(spec: dict, root: Path) -> dict[str, tuple[dict, Path]]:
    """Stage name -> (its dvc.yaml body, its entry-point file) for every Python stage."""
    out = {}
    for name, stage in (spec.get("stages") or {}).items():
        body = stage.get("do", stage)
        cmd = body.get("cmd", "")
        entry = stage_entry(" ".join(cmd) if isinstance(cmd, list) else str(cmd), root)
        if entry is not None:
            out[name] = (stage, entry)
    return out


def _lookup(params: dict, dotted: str):
    node = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _load_params(dvc_yaml: Path, params_yaml: Path | None) -> dict:
    """params.yaml (beside dvc.yaml unless given) read as the stages read it; ``{}`` when absent."""
    params_yaml = params_yaml or dvc_yaml.parent / "params.yaml"
    return load_yaml(params_yaml) if params_yaml.is_file() else {}


def _load_spec(dvc_yaml: Path) -> dict:
    """dvc.yaml as a mapping (``{}`` when empty)."""
    return yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}


def expected_data_deps(
    dvc_yaml: Path, table: dict | None = None, params_yaml: Path | None = None
) -> dict[str, list[DataDep]]:
    """Stage name -> its declared data deps (``DATA_DEPS``; a ``when`` dep only while its params key
    is set), for the stages of dvc.yaml whose data deps are declared here."""
    table = DATA_DEPS if table is None else table
    params = _load_params(dvc_yaml, params_yaml)
    spec = _load_spec(dvc_yaml)
    return {
        name: [d for d in deps if not d.when or _lookup(params, d.when) is not None]
        for name in (spec.get("stages") or {})
        if (deps := table.get(name)) is not None
    }


def declared_data_deps(dvc_yaml: Path) -> dict[str, list[str]]:
    """Stage name -> the data deps dvc.yaml lists now (deps not under src/ or stages/)."""
    spec = _load_spec(dvc_yaml)
    out = {}
    for name, stage in (spec.get("stages") or {}).items():
        deps = [d if isinstance(d, str) else next(iter(d)) for d in stage.get("do", stage).get("deps") or []]
        out[name] = [d for d in deps if not d.startswith(CODE_PREFIXES)]
    return out


def data_differences(dvc_yaml: Path, table: dict | None = None, params_yaml: Path | None = None) -> list[str]:
    """Differences between the data deps dvc.yaml lists and the declared ones, Python stages without
    a declaration, and path params no declaration accounts for (:func:`path_param_problems`)."""
    table = DATA_DEPS if table is None else table
    root = dvc_yaml.resolve().parent
    spec = _load_spec(dvc_yaml)
    lines = [
        f"{name}: no data-dep declaration (stagedeps.DATA_DEPS)"
        for name in _python_stages(spec, root)
        if name not in table
    ]
    have = declared_data_deps(dvc_yaml)
    for name, want in expected_data_deps(dvc_yaml, table, params_yaml).items():
        paths = [d.path for d in want]
        missing = [p for p in paths if p not in have[name]]
        extra = [p for p in have[name] if p not in paths]
        if missing:
            lines.append(f"{name}: missing data deps {missing}")
        if extra:
            lines.append(f"{name}: data deps not declared {extra}")
        if len(have[name]) != len(set(have[name])):
            lines.append(f"{name}: duplicate data deps")
    return lines + path_param_problems(dvc_yaml, table)


_LOADERS = {"load_section": 1, "load_entry": 2}  # config loader -> position of its class argument


def _import_base(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = (module if is_package else module.rpartition(".")[0]).split(".")
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def _resolve_class(module: str, name: str, root: Path, depth: int = 0):
    """``(ClassDef, module, is_package)`` of ``name`` as seen from dfpipe ``module``, following
    ``from x import name`` re-exports; None when it is not a dfpipe class."""
    found = _find_module(module, root / "src", root)
    if found is None or depth > 8:
        return None
    tree = ast.parse((root / found.path).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node, module, found.is_package
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return _resolve_class(_import_base(node, module, found.is_package), alias.name, root, depth + 1)
    return None


def _path_fields(cls, root: Path, prefix: str, seen: frozenset = frozenset()) -> set[str]:
    """Dotted keys (``prefix`` + field) of the ``RepoPath`` fields of a config class, its base
    classes' and nested config classes' included (a ``dict[..., Cls]`` field's entries as ``*``)."""
    node, module, _ = cls
    if (module, node.name) in seen:
        return set()
    seen = seen | {(module, node.name)}
    keys = set()
    for base in node.bases:
        inner = _resolve_class(module, base.id, root) if isinstance(base, ast.Name) else None
        if inner is not None:
            keys |= _path_fields(inner, root, prefix, seen)
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        field = stmt.target.id
        if "RepoPath" in ast.unparse(stmt.annotation):
            keys.add(prefix + field)
            continue
        nested = ".*." if ast.unparse(stmt.annotation).startswith(("dict[", "Dict[", "Mapping[")) else "."
        for sub in ast.walk(stmt.annotation):
            if isinstance(sub, ast.Name) and sub.id[:1].isupper():
                inner = _resolve_class(module, sub.id, root)
                if inner is not None:
                    keys |= _path_fields(inner, root, prefix + field + nested, seen)
    return keys


def stage_path_params(entry: Path, root: Path, foreach_section: str | None = None) -> set[str]:
    """Path-valued params keys the stage script's config classes hold: ``<section>.<field>`` for
    ``load_section``, ``item.<field>`` for ``load_entry`` of the stage's own foreach section (else
    ``<section>.*.<field>``)."""
    tree = ast.parse((root / entry).read_text(encoding="utf-8"))
    imported: dict[str, tuple[str, str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module is not None and node.module.startswith(PACKAGE):
            imported.update({alias.asname or alias.name: (node.module, alias.name) for alias in node.names})
    keys = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
            continue
        loader = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
        at = _LOADERS.get(loader)
        if at is None or len(node.args) <= at or not isinstance(node.args[at], ast.Name):
            continue
        section, cls_name = str(node.args[0].value), cast(ast.Name, node.args[at]).id  # checked just above
        if cls_name not in imported:
            continue
        cls = _resolve_class(*imported[cls_name], root)
        if cls is None:
            continue
        if loader == "load_section":
            prefix = f"{section}."
        else:
            prefix = "item." if section == foreach_section else f"{section}.*."
        keys |= _path_fields(cls, root, prefix)
    return keys


def _entry_paths(body: dict, key: str) -> list[str]:
    return [e if isinstance(e, str) else next(iter(e)) for e in body.get(key) or []]


def path_param_problems(dvc_yaml: Path, table: dict | None = None) -> list[str]:
    """Path-valued params of a stage's config classes that are neither in a declared data dep nor
    in an output of the stage (outs, metrics, plots), nor explained in NOT_DEPS / STAGE_NOT_DEPS."""
    table = DATA_DEPS if table is None else table
    root = dvc_yaml.resolve().parent
    spec = _load_spec(dvc_yaml)
    problems = []
    for name, (stage, entry) in _python_stages(spec, root).items():
        deps = table.get(name)
        if deps is None:
            continue
        body = stage.get("do", stage)
        foreach = re.fullmatch(r"\$\{([\w.]+)\}", str(stage.get("foreach", "")).strip())
        used = [d.path for d in deps] + [p for k in ("outs", "metrics", "plots") for p in _entry_paths(body, k)]
        explained = NOT_DEPS | STAGE_NOT_DEPS.get(name, {})
        unknown = sorted(
            k
            for k in stage_path_params(entry, root, foreach.group(1) if foreach else None)
            if not any(fnmatch.fnmatchcase(k, pattern) for pattern in explained)
            and not any("${" + k + "}" in u for u in used)
        )
        if unknown:
            problems.append(
                f"{name}: path params neither data deps nor outputs {unknown} "
                "(declare in stagedeps.DATA_DEPS, or say why not in STAGE_NOT_DEPS)"
            )
    return problems


def _param_keys(body: dict) -> list[str]:
    keys: list[str] = []
    for p in body.get("params") or []:
        if isinstance(p, str):
            keys.append(p)
        else:  # {file: [keys]}
            for listed in p.values():
                keys.extend(listed or [])
    return keys


def runtime_keys(params: Mapping[str, Any]) -> list[str]:
    """Every ``runtime.<section>.<key>`` of params (the keys no stage may list)."""
    runtime = params.get(RUNTIME) or {}
    return sorted(f"{RUNTIME}.{sec}.{key}" for sec, body in runtime.items() for key in (body or {}))


def param_problems(dvc_yaml: Path, params_yaml: Path | None = None) -> list[str]:
    """Narrow and complete params: no stage lists ``runtime`` (or a key under it); a STAGE_SECTIONS
    stage lists its whole section or every key of it, and no key the section does not have."""
    params = _load_params(dvc_yaml, params_yaml)
    spec = _load_spec(dvc_yaml)
    problems = []
    for name, stage in (spec.get("stages") or {}).items():
        listed = _param_keys(stage.get("do", stage))
        for key in listed:
            if key == RUNTIME or key.startswith(RUNTIME + "."):
                problems.append(f"{name}: param {key!r} is a runtime key (it changes no result; never a param)")
        section = STAGE_SECTIONS.get(name)
        if section and section in params and section not in listed:
            want = {f"{section}.{k}" for k in params[section]}
            missing = sorted(want - set(listed))
            if missing:
                problems.append(f"{name}: result params not listed {missing} (list the section {section!r})")
            unknown = sorted(k for k in listed if k.startswith(section + ".") and k not in want)
            if unknown:
                problems.append(f"{name}: params not in params.yaml {unknown}")
    official = (params.get("split") or {}).get("ffpp_official")
    dep = (params.get("pipeline") or {}).get("ffpp_splits")
    if official is not None and Path(str(official)) != Path(str(dep)):
        problems.append(
            f"split.ffpp_official is {official!r} but variant@ depends on "
            f"pipeline.ffpp_splits {dep!r}: set both to the same folder"
        )
    return problems


_KEY = re.compile(r"^( *)([^\s#:'\"-][^:#]*):\s*(#.*)?$")
_ITEM = re.compile(r"^( *)-\s+(['\"]?)([^'\"#\s:]+)\2\s*(#.*)?$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def rewrite(text: str, expected: dict[str, list[str]], data: dict[str, list[DataDep]] | None = None) -> str:
    """``text`` of dvc.yaml with each listed stage's code-dep lines replaced by ``expected`` and,
    for the stages in ``data``, its data-dep lines by those deps.

    Line-based so comments and layout survive: inside a stage's ``deps:`` block only the plain
    items of a replaced kind are removed (with the comment lines right above a data item: they are
    its note); each derived list goes where the first item of its kind was (code: else first in the
    block; data: else after the code).
    """
    data = data or {}
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    in_stages = False
    stage_indent: int | None = None
    stage: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        key = _KEY.match(line)
        if not key:
            continue
        indent, name = len(key.group(1)), key.group(2).strip()
        if indent == 0:
            in_stages, stage_indent, stage = name == "stages", None, None
        elif in_stages and (stage_indent is None or indent <= stage_indent):
            stage_indent, stage = indent, name
        elif in_stages and name == "deps" and (stage in expected or stage in data):
            block: list[str] = []
            while (
                i < len(lines)
                and lines[i].strip()
                and (
                    _indent(lines[i]) > indent
                    or (_indent(lines[i]) == indent and lines[i].lstrip().startswith(("-", "#")))
                )
            ):
                block.append(lines[i])
                i += 1
            out.extend(_replace_items(block, expected.get(stage), data.get(stage), indent))
    return "".join(out)


def _replace_items(block: list[str], code: list[str] | None, data: list[DataDep] | None, key_indent: int) -> list[str]:
    """The deps block with its code items replaced by ``code`` and its data items (and their
    comments) by ``data``; ``None`` leaves that kind as it is."""
    items = [m for m in map(_ITEM.match, block) if m]
    item_indent = len(items[0].group(1)) if items else key_indent + 2
    pad = " " * item_indent
    kept: list[str] = []
    code_at = data_at = None
    data_first = False  # the block's first replaced item was a data item (kept in that order)
    notes: list[int] = []  # comment lines since the last item: a data item's note
    for line in block:
        m = _ITEM.match(line)
        if m and len(m.group(1)) == item_indent:
            is_code = m.group(3).startswith(CODE_PREFIXES)
            if is_code and code is not None:
                code_at = len(kept) if code_at is None else code_at
            elif not is_code and data is not None:
                if notes:
                    del kept[notes[0] :]
                if data_at is None:
                    data_at, data_first = len(kept), code_at is None
            else:
                kept.append(line)
            notes = []
            continue
        if line.strip().startswith("#") and _indent(line) == item_indent:
            notes.append(len(kept))
        else:
            notes = []
        kept.append(line)
    if code is not None and code_at is None:
        code_at = 0
    if data is not None and data_at is None:
        data_at = code_at if code_at is not None else len(kept)
    code_lines = [f"{pad}- {d}\n" for d in code or []]
    data_lines = [
        text for d in data or [] for text in ([f"{pad}# {d.note}\n"] if d.note else []) + [f"{pad}- {d.path}\n"]
    ]
    out: list[str] = []
    for at in range(len(kept) + 1):
        first, second = (data_lines, code_lines) if data_first else (code_lines, data_lines)
        out.extend(first if at == (data_at if data_first else code_at) else [])
        out.extend(second if at == (code_at if data_first else data_at) else [])
        if at < len(kept):
            out.append(kept[at])
    return out


def main(argv: list[str] | None = None) -> int:
    """The fingerprint stage: ``python -m dfpipe.core.stagedeps <out dir>`` writes every entry
    point's fingerprint file (:func:`write_fingerprints`) for the dvc.yaml of the working directory."""
    import argparse

    parser = argparse.ArgumentParser(description="write each DVC stage entry point's code fingerprint")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--dvc-yaml", type=Path, default=Path("dvc.yaml"))
    args = parser.parse_args(argv)
    for path in write_fingerprints(args.dvc_yaml, args.out_dir):
        print(f"[code] {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
