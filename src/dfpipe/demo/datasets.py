"""Demo Celeb-DF v2 and DFDC trees: the datasets' exact names and label files, a few short videos.

With ``n = cross_videos`` (identities per dataset), under ``<out_dir>``:

``celebdf/`` (Celeb-DF v2 layout)
    ``Celeb-real/id<k>_0000.mp4`` for k < n, ``YouTube-real/0000<j>.mp4`` for j < 2,
    ``Celeb-synthesis/id<k>_id<(k+1) % n>_0000.mp4`` (identity k's video with the face of k + 1),
    ``List_of_testing_videos.txt`` (``1`` = real, ``0`` = synthesized, as the real file): every
    video except those of identity 0, which stay "train" only.
``dfdc/train/dfdc_train_part_0/`` (DFDC training layout)
    2 REAL videos and a FAKE of each, ``metadata.json`` with ``label``, ``split``, ``original``.
``dfdc/test/`` (DFDC public test set layout)
    n real and n fake videos, ``labels.csv`` (``filename,label``, 1 = fake). Each shows a second,
    smaller, static person at the frame's right edge (DFDC's multi-person videos), so the face
    choice rule of preprocessing (largest face) is exercised; the fakes swap the main face only.

DFDC names are 10 random lower-case letters, as in the release. Fakes are the demo's swaps
(:func:`dfpipe.demo.video.manipulate`): Celeb-DF's with colour matching and a wide feather (its
"improved synthesis"), DFDC's the plain swap. Every video is one task for the demo's pool; its
bytes depend only on the config and the task.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from dfpipe.core.io import write_bytes
from dfpipe.demo.config import DemoConfig

from .faces import Pose, sample_identity
from .video import encode_video, manipulate, render_original, swap_renders

_STREAM = 8  # after build.py's streams 1..7
_CELEBDF, _DFDC_TRAIN, _DFDC_TEST = 0, 1, 2
_METHOD = {"celebdf": "DeepFakeDetection", "dfdc": "FaceSwap"}
_LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz"))


def _rng(cfg: DemoConfig, *keys: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, _STREAM, *keys])


def _dfdc_names(cfg: DemoConfig, part: int, n: int) -> list[str]:
    rng = _rng(cfg, part, 9999)
    names: list[str] = []
    while len(names) < n:
        name = "".join(rng.choice(_LETTERS, 10))
        if name not in names:
            names.append(name)
    return names


def plan(cfg: DemoConfig) -> list[dict]:
    """Every demo video of both datasets: ``{"path", "dataset", "part", "target", "source", "label"}``
    (``source`` is None for real videos; identities are indices inside ``part``)."""
    n = cfg.cross_videos
    out: list[dict] = []
    for k in range(n):
        out.append(dict(path=f"celebdf/Celeb-real/id{k}_0000.mp4", part=_CELEBDF, target=k, source=None))
    for j in range(2):
        out.append(dict(path=f"celebdf/YouTube-real/{j:05d}.mp4", part=_CELEBDF, target=n + j, source=None))
    for k in range(n):
        s = (k + 1) % n
        out.append(dict(path=f"celebdf/Celeb-synthesis/id{k}_id{s}_0000.mp4", part=_CELEBDF, target=k, source=s))
    train = _dfdc_names(cfg, _DFDC_TRAIN, 4)
    for k in range(2):
        out.append(dict(path=f"dfdc/train/dfdc_train_part_0/{train[k]}.mp4", part=_DFDC_TRAIN, target=k, source=None))
        out.append(
            dict(
                path=f"dfdc/train/dfdc_train_part_0/{train[2 + k]}.mp4",
                part=_DFDC_TRAIN,
                target=k,
                source=1 - k,
                original=f"{train[k]}.mp4",
            )
        )
    test = _dfdc_names(cfg, _DFDC_TEST, 2 * n)
    for k in range(n):
        out.append(dict(path=f"dfdc/test/{test[k]}.mp4", part=_DFDC_TEST, target=k, source=None))
        out.append(dict(path=f"dfdc/test/{test[n + k]}.mp4", part=_DFDC_TEST, target=n + k, source=k))
    for e in out:
        e["dataset"] = e["path"].split("/")[0]
        e["label"] = "FAKE" if e["source"] is not None else "REAL"
    return out


def _clip(cfg: DemoConfig, part: int, ident: int):
    bystander = None
    if part == _DFDC_TEST:
        # right edge, half the main face's size (head_motion: scale 0.24-0.30, cx 0.42-0.58 +- 0.04)
        bystander = (sample_identity(_rng(cfg, part, ident, 3)), Pose(cx=0.9, cy=0.4, scale=0.13, yaw=-0.3))
    return render_original(
        sample_identity(_rng(cfg, part, ident, 0)),
        _rng(cfg, part, ident, 1),
        cfg.cross_frames,
        cfg.ffpp_fps,
        cfg.ffpp_height,
        cfg.ffpp_width,
        cfg.noise_sigma,
        bystander=bystander,
    )


def make_video(cfg: DemoConfig, root: Path, entry: dict) -> str:
    """Write one planned video under ``root``; return its dataset name (for the counts)."""
    target = _clip(cfg, entry["part"], entry["target"])
    if entry["source"] is None:
        frames = target.frames
    else:
        source = _clip(cfg, entry["part"], entry["source"])
        method = _METHOD[entry["dataset"]]
        rng = _rng(cfg, entry["part"], entry["target"], entry["source"], 2)
        frames, _ = manipulate(method, target, source, rng, cfg.noise_sigma, swapped=swap_renders(target, source))
    encode_video(root / entry["path"], frames, cfg.ffpp_fps, cfg.ffpp_crf)
    return entry["dataset"]


def write_label_files(cfg: DemoConfig, root: Path) -> None:
    """Celeb-DF's test list, DFDC's metadata.json and labels.csv, from :func:`plan`."""
    entries = plan(cfg)
    lines = []
    for e in entries:
        if e["dataset"] != "celebdf":
            continue
        rel = e["path"].split("/", 1)[1]
        if rel.startswith(("Celeb-real/id0_", "Celeb-synthesis/id0_")):
            continue  # identity 0: not in the official test list
        lines.append(f"{1 if e['label'] == 'REAL' else 0} {rel}")
    write_bytes(root / "celebdf/List_of_testing_videos.txt", ("\n".join(sorted(lines)) + "\n").encode())
    meta = {}
    for e in entries:
        if e["part"] == _DFDC_TRAIN:
            name = Path(e["path"]).name
            meta[name] = {"label": e["label"], "split": "train", "original": e.get("original")}
    write_bytes(
        root / "dfdc/train/dfdc_train_part_0/metadata.json", json.dumps(meta, sort_keys=True, indent=1).encode()
    )
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["filename", "label"])
    for e in sorted((e for e in entries if e["part"] == _DFDC_TEST), key=lambda e: e["path"]):
        writer.writerow([Path(e["path"]).name, 1 if e["label"] == "FAKE" else 0])
    write_bytes(root / "dfdc/test/labels.csv", buf.getvalue().encode())
