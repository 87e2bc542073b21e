"""Fixtures of the sharing tests: a tiny git + DVC repository running the real variant stage.

``tiny_repo(root, shard_size)`` builds, in ``root/repo``: a stage writing small generated face
shards + manifests (``data/faces``), the real ``stages/variant.py`` building a v4-like variant
``tiny`` from them, the real Makefile (``make pull``), ``dvc repro`` run and everything committed.
It has no DVC remote: each test adds the one it exercises (local folder, SSH, S3).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
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


def params(shard_size: int = 8, salt: str = "share") -> dict:
    return {
        "split": {"salt": salt, "scale": 1.0, "val_fraction": 0.2, "on_shortfall": "cap", "ffpp_official": None,
                  "bridging": "drop", "faces_dir": "data/faces", "out_dir": "data/variants", "shard_size": shard_size},
        "variants": {"tiny": {"description": "v4-like", "level": "group", "leak_free": True, "shortcut_free": False,
                              "masks": True, "test_fraction": 0.3, "train": {"ffhq": 20, "ff_f2f_k": 15},
                              "test": {"ffhq": 8, "ff_f2f_k": 6}}},
    }


def env(**extra: str) -> dict:
    """The tests' environment: the test's Python first on PATH (stages call ``python``), no analytics."""
    return dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", DVC_NO_ANALYTICS="1",
                GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.org", GIT_COMMITTER_NAME="t",
                GIT_COMMITTER_EMAIL="t@example.org", **extra)


def run(args, cwd, env_: dict | None = None, timeout: int = 180) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env_ or env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def md5s(root: Path) -> dict[str, str]:
    """md5 of every file under ``root`` (relative posix path -> hex)."""
    return {k: hashlib.md5(v).hexdigest() for k, v in files(root).items()}


def build(root: Path, shard_size: int = 8) -> Path:
    """The committed tiny repository in ``root/repo`` (no remote yet); returns its path."""
    repo = root / "repo"
    (repo / "stages").mkdir(parents=True)
    shutil.copy(REPO / "stages/variant.py", repo / "stages/variant.py")
    # `make pull` reads these (pullcheck.py: the remote check it runs first)
    for name in ("Makefile", "requirements.txt", "pyproject.toml", "src/dfpipe/pipeline/pullcheck.py"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, repo / name)
    (repo / "make_faces.py").write_text(MAKE_FACES)
    (repo / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    (repo / "params.yaml").write_text(yaml.safe_dump(params(shard_size), sort_keys=False))
    run(["git", "init", "-q", "-b", "main"], repo)
    run([DVC, "init", "-q"], repo)
    run([DVC, "repro", "-q"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "tiny pipeline"], repo)
    return repo


@dataclass(frozen=True)
class Kit:
    """The helpers above, handed to test modules as a fixture (test modules never import each other)."""

    DVC: str = DVC
    BIN: Path = BIN
    build = staticmethod(build)
    params = staticmethod(params)
    env = staticmethod(env)
    run = staticmethod(run)
    files = staticmethod(files)
    md5s = staticmethod(md5s)


@pytest.fixture(scope="session")
def kit() -> Kit:
    return Kit()
