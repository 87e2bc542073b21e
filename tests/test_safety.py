"""Static checks on the code base: safe loading, no shell, no network at run time, no absolute paths.

These scan the library and stage sources; each rule guards a promise of the README.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "src").rglob("*.py")) + sorted((ROOT / "stages").glob("*.py"))


def _code(path: Path) -> str:
    # strip comments and docstring-ish lines so prose mentioning a pattern does not count
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.split("#", 1)[0]
        lines.append(stripped)
    return "\n".join(lines)


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
        assert 'if __name__ == "__main__":' in code, f"{path.name}: no main guard"
