"""End to end: a reviewer pulls one variant's exact bytes from a DVC remote (docs/sharing.md).

In a temporary git + DVC repository: a stage writes small generated face shards + manifests, the
real ``stages/variant.py`` builds a tiny v4-like variant, ``dvc push`` fills a local remote; then a
fresh ``git clone`` pulls only ``variant@tiny`` and must get byte-identical files, without the
upstream faces, with DVC seeing them as up to date. The README's reviewer path, ``make pull
VARIANT=<v>`` (the real Makefile), pulls the same bytes in a second clone; it runs with the test's
DVC (``PULL_DVC``) because creating ``.venv-pull`` needs the package index, which
``DFPIPE_TEST_PULL_ENV=1`` enables (then the env must hold DVC and no torch).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DVC = str(BIN / "dvc")

MAKE_FACES = '''
"""Tiny generated face sources in the preprocess layout (data/faces/<source>/)."""
import hashlib
import numpy as np
import pandas as pd
from dfpipe.core.io import array_hash
from dfpipe.core.manifest import add_provenance, write_faces
from dfpipe.core.shards import ShardWriter

def image(key):
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)

def source(name, label, items):
    rows = []
    with ShardWriter(f"data/faces/{name}", "images", 16) as iw, ShardWriter(f"data/faces/{name}", "masks", 16) as mw:
        for item_id, video, keys in items:
            img = image(item_id)
            shard, off = iw.add(img)
            mask = mw.add(np.full((8, 8), 255, np.uint8))[0] if label == 2 else ""
            rows.append(dict(id=item_id, source=name, label=label, method=name, video_id=video, group_keys=keys,
                             path=item_id, frame_index=0, n_frames=1, box_x=0, box_y=0, box_w=8, box_h=8,
                             det_score=1.0, content_hash=array_hash(img), has_mask=label == 2, shard=shard,
                             offset=off, mask_shard=mask))
    write_faces(add_provenance(pd.DataFrame(rows)), f"data/faces/{name}/manifest.parquet")

source("ffhq", 0, [(f"ffhq/id{k // 2:03d}_{k % 2}.png", "", [f"ffhq:id{k // 2:03d}"]) for k in range(40)])
source("ff_f2f_k", 2, [(f"ff_f2f_k/{2 * v:03d}_{2 * v + 1:03d}.mp4#f{f}", f"{2 * v:03d}_{2 * v + 1:03d}",
                        [f"ffpp:{2 * v:03d}", f"ffpp:{2 * v + 1:03d}"]) for v in range(10) for f in range(3)])
'''

DVC_YAML = {
    "stages": {
        "faces": {"cmd": "python make_faces.py", "deps": ["make_faces.py"], "outs": ["data/faces"]},
        "variant": {
            "foreach": "${variants}",
            "do": {"cmd": "python stages/variant.py ${key}", "deps": ["stages/variant.py", "data/faces"],
                   "params": ["split", "variants.${key}"], "outs": ["data/variants/${key}"]},
        },
    }
}
PARAMS = {
    "split": {"salt": "share", "scale": 1.0, "val_fraction": 0.2, "on_shortfall": "cap", "ffpp_official": None, "bridging": "drop",
              "faces_dir": "data/faces", "out_dir": "data/variants", "shard_size": 8},
    "variants": {"tiny": {"description": "v4-like", "level": "group", "leak_free": True, "shortcut_free": False, "masks": True,
                          "eval_fraction": 0.3, "train": {"ffhq": 20, "ff_f2f_k": 15},
                          "eval": {"ffhq": 8, "ff_f2f_k": 6}}},
}


def _run(args, cwd, env):
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _env() -> dict:
    return dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", DVC_NO_ANALYTICS="1",
                GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.org", GIT_COMMITTER_NAME="t",
                GIT_COMMITTER_EMAIL="t@example.org")


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    """A pushed tiny repository (tag v0.1) and the bytes of its variant."""
    env = _env()
    tmp_path = tmp_path_factory.mktemp("sharing")
    repo, remote = tmp_path / "repo", tmp_path / "remote"
    (repo / "stages").mkdir(parents=True)
    shutil.copy(REPO / "stages/variant.py", repo / "stages/variant.py")
    for name in ("Makefile", "requirements.txt", "pyproject.toml"):   # `make pull` reads these
        shutil.copy(REPO / name, repo / name)
    (repo / "make_faces.py").write_text(MAKE_FACES)
    (repo / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    (repo / "params.yaml").write_text(yaml.safe_dump(PARAMS, sort_keys=False))
    _run(["git", "init", "-q"], repo, env)
    _run([DVC, "init", "-q"], repo, env)
    _run([DVC, "remote", "add", "-d", "store", str(remote)], repo, env)
    _run([DVC, "repro", "-q"], repo, env)
    _run([DVC, "push", "-q"], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-q", "-m", "tiny pipeline"], repo, env)
    _run(["git", "tag", "v0.1"], repo, env)
    original = _files(repo / "data/variants/tiny")
    assert "train/masks-00000.npy" in original and "summary.json" in original
    return repo, original


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="git is required")
def test_reviewer_pulls_one_variant_byte_identical(published, tmp_path):
    env = _env()
    repo, original = published
    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", "--branch", "v0.1", str(repo), str(clone)], tmp_path, env)
    _run([DVC, "pull", "-q", "variant@tiny"], clone, env)
    assert _files(clone / "data/variants/tiny") == original
    assert not (clone / "data/faces").exists()  # one variant alone, not its upstream
    out = _run([DVC, "status", "--cloud", "variant@tiny"], clone, env)
    assert "in sync" in out.lower(), out
    _run([DVC, "pull", "-q"], clone, env)
    out = _run([DVC, "status"], clone, env)
    assert "up to date" in out.lower(), out


def _make_pull(published, tmp_path, extra: list[str]) -> Path:
    env = _env()
    repo, original = published
    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", "--branch", "v0.1", str(repo), str(clone)], tmp_path, env)
    proc = subprocess.run(["make", "pull", "VARIANT=tiny", *extra], cwd=clone, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"make pull failed:\n{proc.stdout}\n{proc.stderr}"
    assert _files(clone / "data/variants/tiny") == original
    assert not (clone / "data/faces").exists()
    return clone


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None or shutil.which("git") is None, reason="make and git required")
def test_make_pull_fetches_one_variant(published, tmp_path):
    """The README's reviewer command, with the test's DVC standing in for .venv-pull."""
    _make_pull(published, tmp_path, [f"PULL_DVC={BIN / 'dvc'}"])


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("DFPIPE_TEST_PULL_ENV") != "1",
                    reason="creating .venv-pull needs the package index: set DFPIPE_TEST_PULL_ENV=1")
def test_make_pull_creates_a_dvc_only_env(published, tmp_path):
    clone = _make_pull(published, tmp_path, [])
    py = clone / ".venv-pull" / "bin" / "python"
    probe = subprocess.run([str(py), "-c", "import importlib.util as u; import dvc; "
                            "print(u.find_spec('torch') is None)"], capture_output=True, text=True)
    assert probe.stdout.strip() == "True", probe.stderr
