"""Evaluation figures (confusion matrix, ROC/PR, training curves, feature-map grid) as PNGs.

Every figure is written through :func:`dfpipe.core.figures.save_figure` (deterministic bytes).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dfpipe.core.figures import pyplot, save_figure

#: Columns of a training-curve file (written by ``train@<run>``) ``metrics/train/<run>/curves/seed<s>.tsv``.
CURVE_COLUMNS = ("epoch", "train_loss", "val_macro_f1", "val_acc", "updates", "images_seen")
#: The per-epoch quantities the training-curve figure plots.
CURVE_METRICS = ("train_loss", "val_macro_f1", "val_acc")


def plot_confusion(cm: np.ndarray, names: list[str], path: Path, title: str) -> None:
    """Confusion matrix ``(K, K)`` (rows actual, on y; classes in ``names`` order) as counts and
    percent of the row, with row-normalised colour."""
    plt = pyplot()
    cm = np.asarray(cm)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, float), where=rows > 0)
    fig, ax = plt.subplots(figsize=(4, 3.5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            cell = f"{cm[i, j]:g}\n{100 * norm[i, j]:.0f}%"
            ax.text(j, i, cell, ha="center", va="center", fontsize=8, color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(f"{title}\ncount and % of the actual class", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def plot_curves(roc: pd.DataFrame, pr: pd.DataFrame, auc, eer, ap, path: Path, title: str) -> None:
    """Real-vs-fake ROC and PR curves side by side (empty axes with a note when undefined)."""
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.5))
    if roc.empty:
        a.text(0.5, 0.5, "undefined: one class only", ha="center")
        b.text(0.5, 0.5, "undefined: one class only", ha="center")
    else:
        a.plot(roc["fpr"], roc["tpr"])
        a.plot([0, 1], [0, 1], "k:", lw=0.8)
        b.step(pr["recall"], pr["precision"], where="post")
    a.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC, AUC {_fmt(auc)}, EER {_fmt(eer)}")
    b.set(xlabel="recall", ylabel="precision", title=f"PR, AP {_fmt(ap)}")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def read_curves(curves_dir: Path) -> dict[int, pd.DataFrame]:
    """``{seed: curve}`` from ``<curves_dir>/seed<s>.tsv`` (columns :data:`CURVE_COLUMNS`)."""
    files = sorted(curves_dir.glob("seed*.tsv")) if curves_dir.is_dir() else []
    if not files:
        raise FileNotFoundError(f"{curves_dir}: no seed<s>.tsv training curves (did train@ run?)")
    out = {}
    for f in files:
        df = pd.read_csv(f, sep="\t")
        missing = [c for c in CURVE_COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"{f}: missing columns {missing} (expected {list(CURVE_COLUMNS)})")
        out[int(f.stem[len("seed") :])] = df
    return dict(sorted(out.items()))


def plot_training_curves(curves_dir: Path, path: Path, title: str) -> None:
    """Training loss, validation macro-F1 and accuracy per epoch, one line per seed."""
    curves = read_curves(curves_dir)
    plt = pyplot()
    metrics = CURVE_METRICS
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 2.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for seed, df in curves.items():
            ax.plot(df["epoch"], df[metric], marker=".", label=f"seed {seed}")
        ax.set(xlabel="epoch", title=metric)
        ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def plot_featuremap_grid(
    path: str | Path,
    images: np.ndarray,
    cams: np.ndarray,
    activations: np.ndarray,
    titles: Sequence[str],
    layer_name: str,
    title: str = "",
) -> None:
    """One PNG: a row per example with input, Grad-CAM overlay and mean activation.

    ``images`` ``(B, H, W, 3)`` uint8; ``cams``/``activations`` ``(B, H, W)`` in [0, 1]; ``title``
    (the model, and what the numbers in ``titles`` mean) above the grid.
    """
    b = len(images)
    if b == 0:
        raise ValueError(f"{path}: no examples to draw")
    plt = pyplot()
    fig, axes = plt.subplots(b, 3, figsize=(6.0, 2.0 * b), squeeze=False)
    for i in range(b):
        axes[i, 0].imshow(images[i])
        axes[i, 0].set_ylabel(titles[i], fontsize=6, rotation=0, ha="right", va="center")
        axes[i, 1].imshow(images[i])
        axes[i, 1].imshow(cams[i], cmap="jet", alpha=0.5, vmin=0, vmax=1)
        axes[i, 2].imshow(activations[i], cmap="viridis", vmin=0, vmax=1)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_title("input", fontsize=8)
    axes[0, 1].set_title(f"Grad-CAM\n{layer_name}", fontsize=7)
    axes[0, 2].set_title("mean |activation|", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
