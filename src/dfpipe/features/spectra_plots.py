"""Plots of a variant's train spectra: mean spectrum per class / method, difference to real,
radial profiles (the periodic up-sampling peaks of Frank et al. 2020, Fig. 2)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from dfpipe.core.figures import pyplot, save_figure
from dfpipe.core.io import atomic_path
from dfpipe.core.manifest import LABELS
from dfpipe.features.spectra import Kind, SpectraConfig


def radial_profile(spec: np.ndarray, kind: Kind) -> tuple[np.ndarray, np.ndarray]:
    """Mean of a ``(H, W)`` spectrum over rings of equal spatial frequency.

    Returns ``(frequency, value)``: frequency in cycles per pixel (0 to 0.5) so DCT and DFT
    profiles share an axis. DCT coefficient ``(u, v)`` has frequency ``sqrt(u^2 + v^2) / (2n)``
    (origin at ``[0, 0]``); fft-shifted DFT bin ``(u, v)`` has ``|(u, v) - centre| / n``. Rings are
    one coefficient wide; only complete rings (inside the inscribed quarter/full circle) are kept.
    """
    h, w = spec.shape
    n = min(h, w)
    u, v = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    if kind == "dct":
        r, nbins, scale = np.hypot(u, v), n, 2.0 * n
    else:
        r, nbins, scale = np.hypot(u - h // 2, v - w // 2), n // 2 + 1, float(n)
    ring = np.rint(r).astype(np.int64).ravel()
    keep = ring < nbins
    sums = np.bincount(ring[keep], weights=spec.ravel()[keep], minlength=nbins)
    counts = np.bincount(ring[keep], minlength=nbins)
    return np.arange(nbins) / scale, sums / np.maximum(counts, 1)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "unnamed"


def plot_mean_spectra(means: dict[str, np.ndarray], real: np.ndarray, kind: Kind, title: str, path: Path) -> None:
    """Grid: top row each group's mean log-spectrum (channel mean), bottom row minus real's.

    The difference row uses one symmetric colour range across panels, so up-sampling peaks (the
    periodic bright points/lines of Frank et al. Fig. 2) compare between generators.
    """
    plt = pyplot()
    keys = list(means)
    imgs = {k: means[k].mean(axis=0) for k in keys}
    diffs = {k: imgs[k] - real.mean(axis=0) for k in keys}
    lo = min(float(np.percentile(i, 1)) for i in imgs.values())
    hi = max(float(np.percentile(i, 99.9)) for i in imgs.values())
    dmax = max(float(np.percentile(np.abs(d), 99.5)) for d in diffs.values()) or 1.0
    fig, axes = plt.subplots(2, len(keys), figsize=(2.6 * len(keys) + 1.0, 5.6), squeeze=False)
    for j, k in enumerate(keys):
        a = axes[0, j].imshow(imgs[k], cmap="viridis", vmin=lo, vmax=hi)
        axes[0, j].set_title(k, fontsize=9)
        b = axes[1, j].imshow(diffs[k], cmap="RdBu_r", vmin=-dmax, vmax=dmax)
        axes[1, j].set_title(f"{k} - real", fontsize=9)
        for ax in axes[:, j]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.colorbar(a, ax=axes[0, :].tolist(), shrink=0.8, label=f"mean log|{kind.upper()}|")
    fig.colorbar(b, ax=axes[1, :].tolist(), shrink=0.8, label="difference to real")
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def plot_profiles(
    groups: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], real: np.ndarray, kind: Kind, title: str, path: Path
) -> None:
    """Radial profiles (left) and their difference to real (right): one row per grouping (``groups``:
    ``{"class": {name: (freq, value)}, "method": ...}``), every group of it overlaid, one line each.

    Each column shares its y-axis across rows, so classes and methods compare on one scale.
    """
    plt = pyplot()
    fig, axes = plt.subplots(len(groups), 2, figsize=(11, 3.6 * len(groups)), sharex=True, sharey="col", squeeze=False)
    for (grouping, profiles), (ax0, ax1) in zip(groups.items(), axes):
        for k, (freq, val) in profiles.items():
            ax0.plot(freq, val, label=k, lw=1.2)
            ax1.plot(freq, val - real, label=k, lw=1.2)
        for ax, ylab in ((ax0, f"mean log|{kind.upper()}|"), (ax1, "difference to real")):
            ax.set_ylabel(ylab)
            ax.grid(alpha=0.3)
        ax0.set_title(f"per {grouping}", fontsize=9, loc="left")
        ax1.axhline(0.0, color="k", lw=0.6)
        ax1.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    for ax in axes[-1]:
        ax.set_xlabel("spatial frequency (cycles / pixel)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def write_plots(name: str, cfg: SpectraConfig, means: dict[str, dict[str, np.ndarray]]) -> list[Path]:
    """Plots of variant ``name``'s train split under ``<plots_dir>/<name>/``, from the means of
    :func:`build_variant` (no second pass over the data).

    Writes ``class_mean.png`` (per class), ``method_mean.png`` (per source method: generator /
    manipulation / real source), ``profiles.png`` and ``profiles/<class|method>-<name>.csv``
    (``frequency, log_magnitude, diff_to_real``; real = mean over all label-0 rows).
    """
    out = cfg.plots_dir / name
    if "real" not in means["class"]:
        raise ValueError(f"{cfg.variants_dir / name / 'train'}: no real (label 0) training images to compare against")
    order = list(LABELS.values())
    by_class = {c: means["class"][c] for c in order if c in means["class"]}
    by_method = dict(sorted(means["method"].items(), key=lambda kv: (order.index(kv[0].split(":")[0]), kv[0])))
    real = by_class["real"]
    written = []
    what = f"{cfg.kind.upper()} {cfg.color}, variant {name}, train split"
    for fname, group_means in (("class_mean.png", by_class), ("method_mean.png", by_method)):
        plot_mean_spectra(
            group_means, real, cfg.kind, f"Mean log-spectrum per {fname.split('_')[0]} ({what})", out / fname
        )
        written.append(out / fname)
    _, real_profile = radial_profile(real.mean(axis=0), cfg.kind)
    profiles: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {"class": {}, "method": {}}
    files: dict[str, str] = {}
    for old in sorted((out / "profiles").glob("*.csv")):  # groups that no longer exist
        old.unlink()
    for prefix, group_means in (("class", by_class), ("method", by_method)):
        for key, m in group_means.items():
            freq, val = radial_profile(m.mean(axis=0), cfg.kind)
            profiles[prefix][key] = (freq, val)
            fname = f"{prefix}-{_safe_name(key.replace(':', '-'))}.csv"
            if fname in files:
                raise ValueError(f"groups {files[fname]!r} and {key!r} map to the same file name {fname}")
            files[fname] = key
            table = pd.DataFrame({"frequency": freq, "log_magnitude": val, "diff_to_real": val - real_profile})
            with atomic_path(out / "profiles" / fname) as tmp:
                table.to_csv(tmp, index=False, float_format="%.6f", lineterminator="\n")
            written.append(out / "profiles" / fname)
    plot_profiles(
        profiles,
        real_profile,
        cfg.kind,
        f"Radial log-spectrum profile per class and per method ({what})",
        out / "profiles.png",
    )
    written.append(out / "profiles.png")
    return written
