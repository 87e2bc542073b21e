"""params.yaml and params.full.yaml are laid out the way DVC writes them back, so that
`dvc exp run -S key=value` changes exactly the one line of that key (a reviewable diff).

`dvc exp run -S` calls ``dvc.utils.hydra.apply_overrides(path, overrides)`` (from
``BaseStashQueue._update_params`` when Hydra is off, as here): it loads the file with ruamel's
round-trip loader (``dvc.utils.serialize._yaml.modify_yaml``), replaces every list and scalar by a
plain Python value (``merge_dicts``) and dumps with ruamel defaults (``_get_yaml``: block style,
width 80, sequences not indented, ``null`` as an empty value, quotes only where YAML 1.2 needs
them). Mappings are merged in place, so their comments stay; a comment that follows a list is
attached to the list and dropped with it. The layout that survives is therefore: block mappings
and block lists, no comment after a list's last item, empty for null, values under 80 columns.
"""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path

import pytest

from dfpipe.core.config import load_yaml

REPO = Path(__file__).resolve().parents[2]


def set_param(path: Path, override: str) -> list[str]:
    """Apply ``override`` to ``path`` with DVC's own ``-S`` rewrite; return the changed lines
    (``-old`` / ``+new``, unified diff without headers or context)."""
    from dvc.utils.hydra import apply_overrides

    before = path.read_text(encoding="utf-8").splitlines()
    apply_overrides(path, [override])
    after = path.read_text(encoding="utf-8").splitlines()
    diff = difflib.unified_diff(before, after, lineterm="", n=0)
    return [line for line in diff if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def lookup(data: dict, dotted: str):
    for part in dotted.split("."):
        data = data[part]
    return data


@pytest.mark.parametrize("name, key, value", [
    ("params.yaml", "demo.seed", "7"),
    ("params.yaml", "runs.resnet_5.lr", "0.001"),  # a key inside a nested run entry
    ("params.full.yaml", "split.scale", "0.5"),
])
def test_set_param_changes_exactly_one_line(tmp_path, name, key, value):
    path = tmp_path / name
    shutil.copy(REPO / name, path)
    old = lookup(load_yaml(path), key)
    assert str(old) != value
    changed = set_param(path, f"{key}={value}")
    leaf = key.rsplit(".", 1)[1]
    assert len(changed) == 2, "\n".join(changed)
    assert changed[0].lstrip("-").split("#")[0].split() == [f"{leaf}:", str(old)], changed
    assert changed[1].lstrip("+").split("#")[0].split() == [f"{leaf}:", value], changed
    assert str(lookup(load_yaml(path), key)) == value


@pytest.mark.parametrize("name", ["params.yaml", "params.full.yaml"])
def test_dvc_rewrite_keeps_every_byte(tmp_path, name):
    """Setting a key to its own value rewrites nothing: no line DVC would reflow, no comment it
    would drop or move, anywhere in the file (the property that makes every `-S` one line)."""
    path = tmp_path / name
    shutil.copy(REPO / name, path)
    key = "demo.seed" if name == "params.yaml" else "split.scale"
    assert set_param(path, f"{key}={lookup(load_yaml(path), key)}") == []


FLOW_LAYOUT = """\
runs:
  resnet_5: {variant: v3, model: {name: resnet18, width: 0.5}, lr: 0.0002, batch_size: 128, epochs: 3,
             max_steps_per_epoch: 4, seeds: [0, 1]}
  npr: {variant: v4_nomask, lr: 0.0002}
demo:
  ffpp_methods:
  - Face2Face
  - FaceSwap
  # a comment after a list: DVC drops it with the list
  seed: 20240725
  gan_generators: [transposed, nearest]
  out_dir: null
"""


def test_control_a_flow_layout_is_reflowed(tmp_path):
    """The check fires: on the former layout (flow mappings wider than 80 columns, flow lists,
    ``null``) the same one-key rewrite changes many lines and drops a comment."""
    path = tmp_path / "params.yaml"
    path.write_text(FLOW_LAYOUT, encoding="utf-8")
    changed = set_param(path, "runs.resnet_5.lr=0.001")
    assert len(changed) > 2, changed
    assert "# a comment after a list" not in path.read_text(encoding="utf-8")
    path.write_text(FLOW_LAYOUT, encoding="utf-8")
    assert len(set_param(path, "demo.seed=20240725")) > 0  # even a no-op rewrite reflows it


def test_after_the_full_profile_one_set_param_is_still_one_line(tmp_path):
    """`python -m dfpipe.core.profile full` writes params.yaml with DVC's own writer: after it a no-op
    `-S` rewrites nothing and a real one changes one line (ruamel's defaults with a wide line and
    spelled-out nulls made the next `-S` change 36 lines)."""
    from dfpipe.core.profile import apply_profile

    for name in ("params.yaml", "params.full.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    path = tmp_path / "params.yaml"
    apply_profile("full", path)
    assert lookup(load_yaml(path), "split.scale") == 1.0
    assert set_param(path, "split.scale=1.0") == []
    lr = lookup(load_yaml(path), "runs.resnet_5.lr")
    changed = set_param(path, "runs.resnet_5.lr=0.123")
    assert len(changed) == 2 and changed[0].strip("- ") == f"lr: {lr}" and changed[1].strip("+ ") == "lr: 0.123"
