"""The audit gate is bound to the bytes it approved: training refuses a missing gate or a changed variant."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dfpipe.core.config import build
from dfpipe.splits.gate import GateRefused, fingerprint_changes, require_gate, variant_fingerprint
from dfpipe.splits.variants import build_variant
from dfpipe.training.train import RunConfig, RunPaths, TrainConfig, fit
from helpers import (ALL, REPO, RUN_DEFAULTS, approve_variant, face_rows, make_variant, run_dict, split_cfg,
                     variant_cfg, write_source, write_stage_params)

RUN = run_dict(model={"name": "resnet18", "num_classes": 3, "image_size": 32}, variant="toy", lr=0.001,
               batch_size=8, epochs=1, optimizer="adam", schedule="none", warmup_epochs=0.0, seeds=[5],
               max_steps_per_epoch=1, bn_recalibration_images=0)
TRAIN = {"device": "cpu", "num_workers": 0, "amp": "off", "progress": False, "threads": 1, "log_every": 0}


def _flip_byte(path: Path, offset: int = -1) -> bytes:
    """Invert one byte of ``path`` (default: the last, inside the pixel data); return the original bytes."""
    data = path.read_bytes()
    changed = bytearray(data)
    changed[offset] ^= 0xFF
    path.write_bytes(bytes(changed))
    return data


def test_fingerprint_changes_with_one_byte_an_added_or_a_missing_file(tmp_path):
    vdir = make_variant(tmp_path / "toy", per_class={"train": 3, "val": 2, "test": 2})
    before = variant_fingerprint(vdir)
    assert {"train/manifest.parquet", "val/images-00000.npy", "test/masks-00000.npy"} <= set(before["files"])
    assert variant_fingerprint(vdir) == before  # a pure function of the bytes
    (vdir / "train/.manifest.parquet.x1.tmp").write_bytes(b"half written")  # an unfinished write is not the variant
    assert variant_fingerprint(vdir) == before
    original = _flip_byte(vdir / "val/images-00000.npy")
    after = variant_fingerprint(vdir)
    assert after["digest"] != before["digest"]
    assert fingerprint_changes(before, after) == ["changed val/images-00000.npy"]
    (vdir / "val/images-00000.npy").write_bytes(original)
    (vdir / "test/extra.npy").write_bytes(b"x")
    (vdir / "train/masks-00000.npy").unlink()
    assert fingerprint_changes(before, variant_fingerprint(vdir)) == ["added test/extra.npy",
                                                                      "missing train/masks-00000.npy"]


def _paths(root: Path) -> tuple[RunConfig, TrainConfig, RunPaths]:
    run_cfg = build(RunConfig, RUN, where="runs.test")
    train_cfg = build(TrainConfig, {**TRAIN, "models_dir": "models", "metrics_dir": "metrics/train",
                                    "scratch_dir": ".scratch/train", "log_dir": ".scratch/logs"})
    paths = RunPaths.for_run("test", run_cfg, train_cfg, Path("metrics/audit"))
    assert paths.gate == Path("metrics/audit/toy/gate.json")
    rel = lambda p: root / p  # noqa: E731 - params paths are relative to the repository root
    return run_cfg, train_cfg, dataclasses.replace(
        paths, variant_dir=rel(paths.variant_dir), out_dir=rel(paths.out_dir), metrics_dir=rel(paths.metrics_dir),
        scratch_dir=rel(paths.scratch_dir), log_file=rel(paths.log_file), gate=rel(paths.gate))


@pytest.mark.usefixtures("torch_one_thread")
def test_fit_refuses_a_missing_or_stale_gate_and_trains_the_approved_variant(tmp_path):
    vdir = make_variant(tmp_path / "data/variants/toy")
    run_cfg, train_cfg, paths = _paths(tmp_path)

    with pytest.raises(GateRefused, match=r"no audit gate .*metrics/audit/toy/gate\.json for variant 'toy'"):
        fit("test", run_cfg, train_cfg, paths)
    with pytest.raises(GateRefused, match="no audit gate given"):
        fit("test", run_cfg, train_cfg, dataclasses.replace(paths, gate=None))

    approve_variant(vdir, paths.gate)
    shard, manifest = vdir / "train/images-00000.npy", vdir / "val/manifest.parquet"
    original = _flip_byte(shard)  # one pixel byte after the audit
    with pytest.raises(GateRefused, match=r"its audit gate .* approved: changed train/images-00000\.npy"):
        fit("test", run_cfg, train_cfg, paths)
    shard.write_bytes(original)
    original = _flip_byte(manifest, offset=len(manifest.read_bytes()) // 2)
    with pytest.raises(GateRefused, match=r"approved: changed val/manifest\.parquet; run `dvc repro audit@toy`"):
        fit("test", run_cfg, train_cfg, paths)
    manifest.write_bytes(original)
    assert not paths.out_dir.exists() and not paths.metrics_dir.exists()  # refused before writing anything

    record = json.loads(paths.gate.read_text())
    other = dataclasses.replace(paths, gate=tmp_path / "other_gate.json")
    other.gate.write_text(json.dumps({**record, "variant": "v9"}))
    with pytest.raises(GateRefused, match="approves variant 'v9', not 'toy'"):
        fit("test", run_cfg, train_cfg, other)
    other.gate.write_text(json.dumps({k: v for k, v in record.items() if k != "fingerprint"}))  # an older gate
    with pytest.raises(GateRefused, match="records no fingerprint"):
        fit("test", run_cfg, train_cfg, other)

    assert require_gate(paths.gate, vdir, "toy") == record  # the bytes the gate approved: training runs
    out = fit("test", run_cfg, train_cfg, paths)[5]
    assert out["finished"] and (paths.out_dir / "seed5.pt").is_file()


def _stage_repo(root: Path) -> Path:
    """A repository folder with faces, the split/variant/audit params of ``write_stage_params`` plus
    a one-step training run ``r`` on variant ``v`` (16-pixel crops; the model resizes to 32)."""
    faces = root / "faces"
    write_source(faces, face_rows("ffhq", n_images=24, per_identity=3))
    write_source(faces, face_rows("gan_a", n_images=24))
    write_source(faces, face_rows("ff_f2f_k", videos=[(f"{i:03d}", f"{i + 1:03d}") for i in range(0, 20, 2)],
                                  frames=3))
    write_stage_params(root, "v", leak_free=True)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["run_defaults"] = RUN_DEFAULTS
    params["runs"] = {"r": {**RUN, "variant": "v"}}
    params["train"] = {**TRAIN, "variants_dir": "variants", "models_dir": "models", "metrics_dir": "metrics/train",
                       "scratch_dir": ".scratch/train", "log_dir": ".scratch/logs"}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def _run_train_stage(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "stages/train.py"), "r"], cwd=root, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_train_stage_run_directly_refuses_with_one_line(tmp_path):
    """``python stages/train.py <run>`` with no gate, then with a gate older than the variant: exit 1,
    one line saying which, no traceback, nothing written."""
    root = _stage_repo(tmp_path)
    build_variant("v", variant_cfg(train=ALL, test=ALL), split_cfg(root, on_shortfall="cap"))
    proc = _run_train_stage(root)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == [  # stderr holds this one line only
        "train@r refused: no audit gate metrics/audit/v/gate.json for variant 'v' (the audit never passed it, or "
        "failed its declared checks); run `dvc repro audit@v`"]
    approve_variant(root / "variants/v", root / "metrics/audit/v/gate.json")
    build_variant("v", variant_cfg(train=ALL, test=ALL, test_fraction=0.5), split_cfg(root, on_shortfall="cap"))
    proc = _run_train_stage(root)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("train@r refused: variant 'v' on disk (variants/v) differs from what its audit gate "
                           "metrics/audit/v/gate.json approved: changed ") and last.endswith("`dvc repro audit@v`")
    assert not (root / "models").exists()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="git is required")
def test_dvc_train_refuses_a_variant_rebuilt_after_its_audit(tmp_path):
    """The reported sequence: the variant is rebuilt alone (``dvc repro -s variant``) after its audit
    passed; ``dvc repro -s train`` then reruns training on the new bytes under the old gate. It must
    refuse; after ``audit`` approves the new bytes, training runs."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               DVC_NO_ANALYTICS="1")
    dvc = str(Path(sys.executable).parent / "dvc")
    root = _stage_repo(tmp_path)
    (root / "stages").mkdir()
    for script in ("variant", "audit", "train"):
        shutil.copy(REPO / f"stages/{script}.py", root / f"stages/{script}.py")
    stages = {"stages": {
        "variant": {"cmd": "python stages/variant.py v", "deps": ["stages/variant.py", "faces"],
                    "params": ["split", "variants.v"], "outs": ["variants/v"]},
        "audit": {"cmd": "python stages/audit.py v", "deps": ["stages/audit.py", "variants/v"],
                  "params": ["audit", "variants.v.leak_free", "variants.v.shortcut_free"],
                  "outs": [{"metrics/audit/v/gate.json": {"cache": False}}]},
        "train": {"cmd": "python stages/train.py r", "params": ["runs.r", "audit.out_dir"],
                  "deps": ["stages/train.py", "variants/v/train", "variants/v/val", "metrics/audit/v/gate.json"],
                  "outs": ["models/r"]},
    }}
    (root / "dvc.yaml").write_text(yaml.safe_dump(stages, sort_keys=False))
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q"]):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True, timeout=120)

    def repro(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([dvc, "repro", *args], cwd=root, env=env, capture_output=True, text=True, timeout=600)

    proc = repro()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (root / "models/r/seed5.pt").is_file()
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["variants"]["v"]["test_fraction"] = 0.5  # new bytes for the variant
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert repro("-s", "variant").returncode == 0
    proc = repro("-s", "train")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "train@r refused: variant 'v' on disk" in out and "Traceback" not in out, out
    assert not (root / "models/r").exists()  # DVC removed the old output; nothing trained on unaudited bytes
    proc = repro()  # the audit approves the new bytes (a new gate); training runs
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (root / "models/r/seed5.pt").is_file()
