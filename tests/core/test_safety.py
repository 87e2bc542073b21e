"""Static checks on the code base: safe loading, no shell, no network at run time, no absolute paths.

These scan the library and stage sources; each rule guards a promise of the README.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "src").rglob("*.py")) + sorted((ROOT / "stages").glob("*.py"))


def _code(path: Path) -> str:
    """The source without comments and docstrings, so prose mentioning a pattern does not count."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body \
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)  # unparse drops comments


def test_code_strips_docstrings_and_comments(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text('"""Never shell=True."""\nimport os  # shell=True\n\ndef f():\n    """yaml.load( here"""\n    return 1\n')
    code = _code(sample)
    assert "shell=True" not in code and "yaml.load(" not in code and "return 1" in code


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_unsafe_patterns(path):
    code = _code(path)
    assert "shell=True" not in code, "subprocess with shell=True"
    assert not re.search(r"\byaml\.load\(", code), "use yaml.safe_load"
    assert not re.search(r"\bpickle\.loads?\(", code), "no pickle loading"
    for call in re.finditer(r"torch\.load\(", code):
        window = code[call.start(): call.start() + 300]
        assert "weights_only=True" in window, "torch.load without weights_only=True"
    assert "allow_pickle=True" not in code


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_network_only_in_asset_setup(path):
    code = _code(path)
    if path.name == "assets.py":
        return
    for pattern in ("urlopen(", "requests.get(", "hf_hub_download(", "load_state_dict_from_url(",
                    "pretrained=True", "download=True"):
        assert pattern not in code, f"network access ({pattern}) outside the asset set-up"


def test_stages_parse_no_arguments_at_module_level():
    for path in sorted((ROOT / "stages").glob("*.py")):
        code = _code(path)
        head = code.split("def main", 1)[0]
        assert "argparse" not in head or "ArgumentParser(" not in head, f"{path.name}: module-level parsing"
        assert re.search(r"if __name__ == ['\"]__main__['\"]:", code), f"{path.name}: no main guard"
