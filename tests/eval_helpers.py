"""Generated eval manifests and model scores shared by the evaluation and report tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dfpipe.evaluation import evaluate as E


def make_manifest(seed: int = 0, n_images: int = 40, frames: int = 5) -> pd.DataFrame:
    """A small eval manifest: FFHQ (real) and two GANs (fake) images, FF++ real and edited videos
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
    """``{seed: aligned frame}`` as evaluate@ builds them (loader order != manifest order)."""
    man = make_manifest() if man is None else man
    labels = man["label"].to_numpy(np.int64)
    out = {}
    for s in seeds:
        probs = fake_scores(labels, s + offset, skill)
        perm = np.random.default_rng(s).permutation(len(man))
        out[s] = E.align_predictions(man, man["id"].to_numpy()[perm], labels[perm], probs[perm], "test")
    return out
