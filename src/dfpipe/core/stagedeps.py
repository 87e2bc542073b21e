"""Derive each DVC stage's code deps from its script's import closure, and check or write dvc.yaml.

Also checks that params are narrow: no stage depends on a key that changes no result
(``NON_RESULT_KEYS``: progress bars, worker counts, logging, device), and a stage whose config class
reads a whole section lists each of its result keys (``STAGE_SECTIONS``).

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

In dvc.yaml a code dep is any ``deps:`` entry under ``src/`` or ``stages/``. ``--write`` replaces
exactly those lines of each stage (at the place of the first one, or right after ``deps:``) and
keeps every other line, comment and data dep as it is. ``--check`` exits 1 and lists the
differences when dvc.yaml disagrees with the closure (tests/test_stagedeps.py runs it).

Usage: ``python -m dfpipe.core.stagedeps --check|--write [--dvc-yaml dvc.yaml]``.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

PACKAGE = "dfpipe"
#: params.yaml keys that change no output byte (progress, logging, worker counts, device choice):
#: never params of a stage, so changing them leaves `dvc status` clean.
NON_RESULT_KEYS = frozenset({
    "demo.workers", "preprocess.workers",
    "train.device", "train.num_workers", "train.log_every", "train.progress",
    "train.log_dir", "train.scratch_dir",   # timings log, resume state: never outputs (C1)
    "evaluate.num_workers",   # evaluate.device stays a param (eval's choice: CPU vs GPU floats)
})
#: stage -> the params.yaml section its config class reads whole: the stage lists every key of it
#: one by one except NON_RESULT_KEYS (a key added to the section must be added to dvc.yaml too).
STAGE_SECTIONS = {"make_demo": "demo", "preprocess": "preprocess", "train": "train", "evaluate": "evaluate"}
CODE_PREFIXES = ("src/", "stages/")
_SCRIPT = re.compile(r"(?:^|\s)(stages/[\w/.-]+\.py)(?:\s|$)")
_MODULE = re.compile(r"(?:^|\s)-m\s+(dfpipe(?:\.\w+)*)(?:\s|$)")


class StageDepsError(RuntimeError):
    """dvc.yaml cannot be analysed (a stage's script is missing, or its deps block is malformed)."""


@dataclass
class _Module:
    name: str       # dotted module name, e.g. dfpipe.core.io
    path: Path      # file, relative to the repository root
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
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


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
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and not isinstance(node.args[0], ast.Constant)):
            dynamic = True
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant)):
            names.add(str(node.args[0].value))
    return {n for n in names if n == PACKAGE or n.startswith(PACKAGE + ".")}, dynamic


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_closure(entry: Path, root: Path) -> list[str]:
    """Repository-relative paths (stage script first, then sorted) of ``entry`` and every dfpipe module it (transitively) imports.

    ``entry`` is a file relative to ``root`` (a stage script or a module under src/).
    """
    src = root / "src"
    files: set[Path] = {entry}
    seen: set[str] = set()
    todo: list[tuple[Path, str, bool]] = []
    rel_entry = entry.as_posix()
    if rel_entry.startswith("src/"):
        dotted = rel_entry[len("src/"):-len(".py")].replace("/", ".")
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
            names.update(f"{dotted if is_pkg else dotted.rpartition('.')[0]}.{p.stem}"
                         for p in pkg_dir.glob("*.py") if p.name != "__init__.py")
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
    """Stage name (as in dvc.yaml, before foreach expansion) -> sorted code deps from imports."""
    root = dvc_yaml.resolve().parent
    spec = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}
    out: dict[str, list[str]] = {}
    for name, stage in (spec.get("stages") or {}).items():
        body = stage.get("do", stage)
        cmd = body.get("cmd", "")
        cmd = " ".join(cmd) if isinstance(cmd, list) else str(cmd)
        entry = stage_entry(cmd, root)
        if entry is not None:
            out[name] = import_closure(entry, root)
    return out


def declared_code_deps(dvc_yaml: Path) -> dict[str, list[str]]:
    """Stage name -> the code deps dvc.yaml lists now (entries under src/ or stages/)."""
    spec = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}
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


def with_declared_folders(dvc_yaml: Path) -> dict[str, list[str]]:
    """Derived code deps per stage, keeping the folder deps dvc.yaml declares that cover closure
    files (e.g. a stage owner's ``src/dfpipe/core``); closure files they do not cover are added."""
    root = dvc_yaml.resolve().parent
    declared = declared_code_deps(dvc_yaml)
    out = {}
    for name, want in expected_code_deps(dvc_yaml).items():
        folders = [d for d in declared.get(name, []) if (root / d).is_dir() and any(_covered(f, [d]) for f in want)]
        out[name] = folders + [f for f in want if not _covered(f, folders)]
    return out


def differences(dvc_yaml: Path) -> list[str]:
    """Human-readable differences between declared and derived code deps (empty: in agreement)."""
    expected = expected_code_deps(dvc_yaml)
    declared = declared_code_deps(dvc_yaml)
    lines = []
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


def _param_keys(body: dict) -> list[str]:
    keys: list[str] = []
    for p in body.get("params") or []:
        if isinstance(p, str):
            keys.append(p)
        else:  # {file: [keys]}
            for listed in p.values():
                keys.extend(listed or [])
    return keys


def param_problems(dvc_yaml: Path, params_yaml: Path | None = None) -> list[str]:
    """Narrow params: no stage lists a non-result key (or its whole section); every result key of
    a STAGE_SECTIONS section is listed by its stage."""
    params_yaml = params_yaml or dvc_yaml.parent / "params.yaml"
    params = (yaml.safe_load(params_yaml.read_text(encoding="utf-8")) if params_yaml.is_file() else None) or {}
    spec = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}
    problems = []
    for name, stage in (spec.get("stages") or {}).items():
        listed = _param_keys(stage.get("do", stage))
        for key in listed:
            hit = sorted(k for k in NON_RESULT_KEYS if k == key or k.startswith(key + "."))
            if hit:
                problems.append(f"{name}: param {key!r} covers non-result keys {hit}")
        section = STAGE_SECTIONS.get(name)
        if section and section in params:
            want = {f"{section}.{k}" for k in params[section]} - NON_RESULT_KEYS
            missing = sorted(want - set(listed))
            if missing:
                problems.append(f"{name}: result params not listed {missing}")
            unknown = sorted(k for k in listed if k.startswith(section + ".") and k not in want)
            if unknown:
                problems.append(f"{name}: params not in params.yaml {unknown}")
    official = (params.get("split") or {}).get("ffpp_official")
    dep = (params.get("pipeline") or {}).get("ffpp_splits")
    if official is not None and Path(str(official)) != Path(str(dep)):
        problems.append(f"split.ffpp_official is {official!r} but variant@ depends on "
                        f"pipeline.ffpp_splits {dep!r}: set both to the same folder")
    return problems


_KEY = re.compile(r"^( *)([^\s#:'\"-][^:#]*):\s*(#.*)?$")
_ITEM = re.compile(r"^( *)-\s+(['\"]?)([^'\"#\s:]+)\2\s*(#.*)?$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def rewrite(text: str, expected: dict[str, list[str]]) -> str:
    """``text`` of dvc.yaml with each listed stage's code-dep lines replaced by ``expected``.

    Line-based so comments and layout survive: inside a stage's ``deps:`` block only the plain
    ``- src/...`` / ``- stages/...`` items are removed; the derived list goes where the first of
    them was (or first in the block).
    """
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
        elif in_stages and name == "deps" and stage in expected:
            block: list[str] = []
            while i < len(lines) and lines[i].strip() and (
                    _indent(lines[i]) > indent
                    or (_indent(lines[i]) == indent and lines[i].lstrip().startswith(("-", "#")))):
                block.append(lines[i])
                i += 1
            out.extend(_replace_code_items(block, expected[stage], indent))
    return "".join(out)


def _replace_code_items(block: list[str], deps: list[str], key_indent: int) -> list[str]:
    items = [m for m in map(_ITEM.match, block) if m]
    item_indent = len(items[0].group(1)) if items else key_indent + 2
    kept: list[str] = []
    first = None
    for line in block:
        m = _ITEM.match(line)
        if m and len(m.group(1)) == item_indent and m.group(3).startswith(CODE_PREFIXES):
            first = len(kept) if first is None else first
            continue
        kept.append(line)
    at = first if first is not None else 0
    return kept[:at] + [f"{' ' * item_indent}- {d}\n" for d in deps] + kept[at:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 when dvc.yaml disagrees with the imports")
    mode.add_argument("--write", action="store_true", help="rewrite the code-dep lines of dvc.yaml")
    parser.add_argument("--dvc-yaml", type=Path, default=Path("dvc.yaml"))
    args = parser.parse_args(argv)
    try:
        if args.write:
            text = args.dvc_yaml.read_text(encoding="utf-8")
            new = rewrite(text, with_declared_folders(args.dvc_yaml))
            if new != text:
                args.dvc_yaml.write_text(new, encoding="utf-8")
                print(f"[stagedeps] {args.dvc_yaml}: code deps rewritten")
        diffs = differences(args.dvc_yaml) + param_problems(args.dvc_yaml)
    except (StageDepsError, OSError, SyntaxError, yaml.YAMLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in diffs:
        print(line)
    if diffs:
        print(f"{args.dvc_yaml}: code deps disagree with the imports (fix: "
              "`python -m dfpipe.core.stagedeps --write`) or params are not narrow (edit dvc.yaml)",
              file=sys.stderr)
        return 1
    print(f"[stagedeps] {args.dvc_yaml}: code deps match the import closure of every stage; params narrow")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
