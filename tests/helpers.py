"""Test-only helpers shared by the test modules (imported by them and by conftest.py; never by src/)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
import hashlib
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import yaml

from dfpipe.core.config import ConfigError, build, deep_merge, load_section, load_yaml
from dfpipe.core.io import array_hash
from dfpipe.core.manifest import FACE_SCHEMA, VARIANT_SCHEMA, add_provenance, read_table, write_faces, write_variant
from dfpipe.core.shards import ShardReader, ShardWriter
from dfpipe.splits.audit import AuditConfig
from dfpipe.splits.variants import SplitConfig, VariantConfig, build_variant, scaled, select_variant

REPO = Path(__file__).resolve().parents[1]
#: params.yaml's ``run_defaults`` block: the project's shared run values (no defaults in code).
RUN_DEFAULTS: dict[str, Any] = load_yaml(REPO / "params.yaml")["run_defaults"]


def preprocess_params(**over: Any) -> dict[str, Any]:
    """A small ``preprocess:`` section for tests on tiny generated sources; ``over`` replaces keys."""
    base = dict(
        detector_model="models/mediapipe/face_detection_short_range.tflite",
        segmenter_model="models/mediapipe/selfie_segmentation.tflite",
        margin=1.3, size=32, min_score=0.5, min_face=40, every_n=6, frames_per_video=4,
        seg_threshold=0.5, seg_background="blank", min_person=0.05, max_pixels=300 * 300,
        shard_size=3, workers=1,
    )
    return {**base, **over}


def run_dict(**over: Any) -> dict[str, Any]:
    """A ``runs.<name>`` mapping as the loader sees it: ``over`` deep-merged over ``run_defaults``."""
    return deep_merge(RUN_DEFAULTS, over)


def loss_config(**over: Any):
    """A :class:`LossConfig` with ``run_defaults.loss`` values except ``over``."""
    from dfpipe.training.losses import LossConfig

    return LossConfig(**{**RUN_DEFAULTS["loss"], **over})


# ---- from test_data.py

def _image(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """Learnable toy classes: 0 smooth noise, 1 smooth noise + a fine checkerboard (an up-sampling
    artefact, the cue frequency detectors use), 2 smooth noise with a bright square (the "edit")."""
    coarse = rng.integers(60, 190, (size // 8, size // 8, 3)).astype(np.float32)
    img = np.kron(coarse, np.ones((8, 8, 1), np.float32))
    if label == 1:
        yy, xx = np.mgrid[:size, :size]
        img += np.where((yy + xx) % 2 == 0, 40.0, -40.0)[..., None]
    if label == 2:
        q = size // 4
        img[q:3 * q, q:3 * q] = 240.0
    return np.clip(img, 0, 255).astype(np.uint8)


def make_variant(root: Path, per_class: dict[str, int] | None = None, size: int = 32, seed: int = 0,
                 mask_every_edit: bool = False) -> Path:
    """Write a tiny variant ``root/{train,val,test}`` in the variant stage's format (shards + manifest).

    Edited items (label 2) carry a mask (the bright square) except every third one, unless
    ``mask_every_edit``. Returns ``root``.
    """
    per_class = per_class or {"train": 8, "val": 4, "test": 4}
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        out = root / split
        rows = []
        with ShardWriter(out, "images", shard_size=7) as images, ShardWriter(out, "masks", shard_size=7) as masks:
            for label in (0, 1, 2):
                for k in range(n):
                    img = _image(label, rng, size)
                    shard, offset = images.add(img)
                    has_mask = label == 2 and (mask_every_edit or k % 3 != 2)
                    # masks are written in lock-step with images (same offsets), as the contract says
                    mask = np.zeros((size, size), np.uint8)
                    if has_mask:
                        q = size // 4
                        mask[q:3 * q, q:3 * q] = 255
                    mshard, moffset = masks.add(mask)
                    assert moffset == offset
                    rows.append(dict(
                        id=f"toy/{split}/{label}/{k:03d}", source="toy", label=label,
                        method=["ffhq", "stylegan", "Face2Face"][label], video_id="",
                        group_keys=[f"toy:{split}{label}{k}"], path=f"{label}/{k}.png",
                        frame_index=-1, n_frames=-1, box_x=0, box_y=0, box_w=size, box_h=size,
                        det_score=float("nan"), content_hash="", has_mask=has_mask, shard=shard,
                        offset=offset, mask_shard=mshard if has_mask else "", split=split,
                        split_group=f"toy:{split}{label}{k}"))
        df = pd.DataFrame(rows).sort_values("id").reset_index(drop=True)
        df = df.astype({"label": "int8", "frame_index": "int32", "n_frames": "int32", "offset": "int32",
                        "box_x": "int32", "box_y": "int32", "box_w": "int32", "box_h": "int32",
                        "det_score": "float32"})
        write_variant(add_provenance(df), out / "manifest.parquet")
    return root


# ---- from test_variants.py

SIZE = 16


LABEL = {"ffhq": 0, "gan": 1, "ff": 2, "orig": 0}


def _seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def smooth_image(key: str, size: int = SIZE) -> np.ndarray:
    """Deterministic low-frequency RGB crop ``(size, size, 3)`` uint8 for ``key``."""
    small = np.random.default_rng(_seed(key)).uniform(0, 255, (6, 6, 3)).astype(np.float32)
    return np.clip(cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)


def frame_image(video: str, frame: int, size: int = SIZE) -> np.ndarray:
    """Frame ``frame`` of ``video``: the video's base image plus +-2 noise (a near duplicate)."""
    noise = np.random.default_rng(_seed(f"{video}#{frame}")).integers(-2, 3, (size, size, 3))
    return np.clip(smooth_image(video, size).astype(np.int16) + noise, 0, 255).astype(np.uint8)


def face_rows(source: str, n_images: int = 0, per_identity: int = 1, videos=(), frames: int = 0,
              provenance: dict | None = None) -> pd.DataFrame:
    """FACE_SCHEMA rows (no pixels yet) for ``n_images`` stills or ``frames`` frames of each video.

    Stills: identity ``id{k // per_identity}`` for FFHQ-like sources (``ffhq*``), own id otherwise.
    ``videos``: FF++ ``(target, source)`` pairs; keys ``ffpp:<target>``, ``ffpp:<source>``. For
    originals (``ff_youtube*``, real, no masks) each pair gives the two videos ``target``, ``source``.
    ``provenance``: values of the manifest's provenance columns (all rows); unnamed ones are "not recorded".
    """
    kind = "ff" if source.startswith("ff_") else ("ffhq" if source.startswith("ffhq") else "gan")
    if source.startswith("ff_youtube"):
        kind = "orig"
        videos = [(v,) for pair in videos for v in pair]
    rows = []
    for k in range(n_images):
        path = f"img{k:05d}.png"
        item = f"{source}/{path}"
        keys = [f"{source}:id{k // per_identity:04d}"] if kind == "ffhq" else [item]
        rows.append(dict(id=item, video_id="", group_keys=keys, path=path, frame_index=-1, n_frames=-1))
    for pair in videos:
        vid = "_".join(pair)
        for f in range(frames):
            path = f"{vid}.mp4"
            rows.append(dict(id=f"{source}/{path}#f{f:04d}", video_id=vid,
                             group_keys=[f"ffpp:{v}" for v in pair], path=path, frame_index=f, n_frames=frames))
    df = pd.DataFrame(rows, columns=["id", "video_id", "group_keys", "path", "frame_index", "n_frames"])
    df["source"], df["label"], df["method"] = source, LABEL[kind], source
    for c in ("box_x", "box_y", "box_w", "box_h"):
        df[c] = 0
    df["det_score"] = np.float32("nan")
    df["content_hash"], df["has_mask"], df["shard"], df["offset"], df["mask_shard"] = "", kind == "ff", "", 0, ""
    return add_provenance(df.sort_values("id").reset_index(drop=True), **(provenance or {}))[FACE_SCHEMA.names]


def item_image(row) -> np.ndarray:
    return frame_image(f"{row.source}/{row.video_id}", row.frame_index) if row.video_id else smooth_image(row.id)


def write_source(faces_dir: Path, rows: pd.DataFrame, shard_size: int = 7, image=item_image) -> pd.DataFrame:
    """Write ``rows`` (one source) as ``<faces_dir>/<source>/`` shards + manifest, like preprocess.

    ``image(row) -> (SIZE, SIZE, 3) uint8`` gives each item's pixels.
    """
    source = rows["source"].iloc[0]
    out = faces_dir / source
    rows = rows.copy()
    with ShardWriter(out, "images", shard_size) as iw, ShardWriter(out, "masks", shard_size) as mw:
        for k, row in enumerate(rows.itertuples(index=False)):
            img = image(row)
            name, off = iw.add(img)
            rows.loc[k, ["shard", "offset", "content_hash"]] = [name, off, array_hash(img)]
            if row.has_mask:
                mask = np.zeros((SIZE, SIZE), np.uint8)
                mask[4:12, 2 + k % 5: 10 + k % 5] = 255
                rows.loc[k, "mask_shard"] = mw.add(mask)[0]
    write_faces(rows, out / "manifest.parquet")
    return rows


def split_cfg(tmp: Path | None = None, **kw) -> SplitConfig:
    base = dict(salt="test-salt", scale=1.0, val_fraction=0.2, on_shortfall="error", ffpp_official=None, bridging="drop",
                faces_dir="faces", out_dir="variants", shard_size=5)
    base.update(kw)
    cfg = build(SplitConfig, base)
    if tmp is not None:  # absolute paths are a config error; tests place them under tmp afterwards
        cfg = cfg.model_copy(update=dict(faces_dir=tmp / cfg.faces_dir, out_dir=tmp / cfg.out_dir))
    return cfg


def variant_cfg(**kw) -> VariantConfig:
    base = dict(description="t", level="group", leak_free=True, shortcut_free=False, masks=False, test_fraction=0.3,
                train={}, test={})
    base.update(kw)
    return build(VariantConfig, base)


# ---- from test_evaluate.py

def make_manifest(seed: int = 0, n_images: int = 40, frames: int = 5) -> pd.DataFrame:
    """A small test manifest: FFHQ (real) and two GANs (fake) images, FF++ real and edited videos
    whose names collide across methods (000_003 in Face2Face and FaceSwap)."""
    rows = []
    for i in range(n_images):
        src, label = [("ffhq", 0), ("gan_stylegan", 1), ("gan_wgan_gp", 1)][i % 3]
        rows.append((f"{src}/img{i:03d}.png", src, label, src, "", f"h-img{i}"))
    for method, label, vids in [("youtube", 0, ["000", "003", "010"]),
                                ("Face2Face", 2, ["000_003", "010_011"]),
                                ("FaceSwap", 2, ["000_003", "011_010"])]:
        for v in vids:
            for f in range(frames):
                rows.append((f"ffpp/{method}/{v}#f{f * 20}", "ffpp", label, method, v, f"h-{method}-{v}-{f}"))
    df = pd.DataFrame(rows, columns=["id", "source", "label", "method", "video_id", "content_hash"])
    return df.sort_values("id").reset_index(drop=True)


def fake_scores(labels: np.ndarray, seed: int = 0, skill: float = 2.0) -> np.ndarray:
    """Informative but imperfect (N, 3) probabilities, as a trained model would give."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(len(labels), 3))
    logits[np.arange(len(labels)), labels] += skill
    p = np.exp(logits)
    return (p / p.sum(1, keepdims=True)).astype(np.float32)


def scored_frames(man: pd.DataFrame | None = None, seeds=(0, 1), skill: float = 2.0, offset: int = 0) -> dict:
    """``{seed: aligned predictions frame}`` as evaluate@ builds them (loader order != manifest order)."""
    from dfpipe.evaluation.evaluate import align_predictions

    man = make_manifest() if man is None else man
    labels = man["label"].to_numpy(np.int64)
    out = {}
    for s in seeds:
        probs = fake_scores(labels, s + offset, skill)
        perm = np.random.default_rng(s).permutation(len(man))
        out[s] = align_predictions(man, man["id"].to_numpy()[perm], labels[perm], probs[perm], "test")
    return out


# ---- audit stage (test_audit.py, test_shortcut.py)

AUDIT_PARAMS = {"hamming_threshold": 8, "max_examples": 5, "shortcut_max_auc": 0.75,
                "shortcut_gate_features": ["native_face", "scale", "codec"], "shortcut_bootstrap": 50,
                "shortcut_seed": 0, "out_dir": "metrics/audit"}
AUDIT = build(AuditConfig, AUDIT_PARAMS)
#: Counts above what the audit fixtures hold: with on_shortfall "cap" every item is selected.
ALL = {"ffhq": 100, "gan_a": 100, "ff_f2f_k": 100}


def write_stage_params(tmp_path: Path, name: str, leak_free: bool, shortcut_free: bool = False, counts=ALL) -> None:
    """params.yaml for running stages/audit.py on the variant ``<tmp_path>/variants/<name>``."""
    params = {
        "split": {"salt": "test-salt", "scale": 1.0, "val_fraction": 0.2, "on_shortfall": "cap", "ffpp_official": None,
                  "bridging": "drop", "faces_dir": "faces", "out_dir": "variants", "shard_size": 5},
        "variants": {name: {"description": "t", "level": "group", "leak_free": leak_free, "shortcut_free": shortcut_free,
                            "masks": False, "test_fraction": 0.3, "train": counts, "test": counts}},
        "audit": AUDIT_PARAMS,
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))


def approve_variant(variant_dir: Path, gate_file: Path) -> dict:
    """Write the gate ``gate_file`` that ``audit@`` writes for a variant declaring no check (status
    ``not_required``), bound to the bytes of ``variant_dir`` now; training refuses without it."""
    from dfpipe.core.io import write_json
    from dfpipe.splits.gate import gate_record, variant_fingerprint

    record = gate_record({"variant": Path(variant_dir).name, "leak_free": False, "status": "not_required"},
                         variant_fingerprint(variant_dir))
    write_json(gate_file, record)
    return record


def run_audit_stage(tmp_path: Path, name: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "stages/audit.py"), name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def tree_digest(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root``: two folders hold the same bytes
    exactly when their digests are equal."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def feature_caches_in_two_folders(tmp_path_factory, prefix: str, features: dict[str, Any]) -> list[Path]:
    """A toy variant and every cache of ``features`` (a ``features:`` section) built by the real
    features stage code in two fresh folders; returns the two repository roots."""
    from dfpipe.features import encoders as E

    roots = []
    for name in ("a", "b"):
        root = tmp_path_factory.mktemp(f"{prefix}_{name}")
        make_variant(root / "data" / "variants" / "toy", per_class={"train": 6, "val": 3, "test": 3})
        cfg = build(E.FeaturesConfig, features, root=root)
        cfg = cfg.model_copy(update={"out_dir": root / "data/features", "variants_dir": root / "data/variants"})
        for cache in cfg.caches:
            E.build_cache(cache, cfg)
        roots.append(root)
    return roots
