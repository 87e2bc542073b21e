"""Shortcut audit: how well cheap probes on nuisance features alone predict a variant's labels.

A detector should separate real, generated and edited faces by the manipulation, not by where the
files came from (file format, codec, face size before resizing). This module trains two cheap
probes on the *train* split using only nuisance features and scores them on the *test* split; a
high score means the labels can be predicted without looking at a face, so a detector's score on
that variant is suspect.

Features per item (:data:`FEATURES`):

* ``native_face``: side in source pixels of the square crop region before resizing (manifest
  provenance column; derived from ``box_w`` for manifests written before it existed), used as ``log``;
* ``scale``: stored side / ``native_face`` (provenance column; derived likewise), used as ``log``;
* ``codec_family``: the last lossy coding the pixels went through: the ``codec`` control applied to
  a still (``h264_crf23`` -> ``h264``) or else the ``file_format`` (``png``, ``jpeg``, ``h264``...;
  derived from the path suffix for older manifests). A family, not the exact setting, because the controlled
  sources are coded "as FF++ c23" on purpose and must look like the videos here;
* ``brightness``: mean BT.601 luma of the stored crop (0..255);
* ``hf_energy``: ``log1p`` of the mean squared Laplacian of the luma after a Gaussian blur with
  sigma 1 px: the blur removes per-pixel noise and the finest manipulation traces, so what is
  left measures how sharp the source was (resolution, resampling, compression smoothing).

Gate features (``audit.shortcut_gate_features``) are the probe inputs whose best AUC decides the
check; the probes also run on all features and that score is reported beside it. Why a subset can
gate: ``brightness`` and ``hf_energy`` are measured on the pixels the detector sees, so they mix the
nuisance with the manipulation itself (the demo's GANs are drawn at 32 px and up-sampled, so their
blurred-HF energy is low *because* they are generated); size and codec facts are metadata of where
a file came from and carry no manipulation. Both numbers are in the report.

Probes: ``logreg`` (standardised features, multinomial logistic regression) and ``gboost``
(50 depth-2 trees, :class:`sklearn.ensemble.GradientBoostingClassifier`; single-threaded and
seeded, so the numbers are reproducible). Scores on test: macro-F1 over the classes present in
test and macro one-vs-rest ROC AUC over the classes that have positives and negatives in test, each
with a percentile cluster-bootstrap CI that resamples split groups (frames of one video and images
of one identity are not independent draws). A ``shortcut_free`` variant fails when a probe's AUC
point estimate on the gate features exceeds ``audit.shortcut_max_auc``.
"""

from __future__ import annotations

import warnings
from typing import Literal, get_args

import cv2
import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dfpipe.core.manifest import LABELS

#: Numeric nuisance features (quantiles per class are reported for these).
NUMERIC = ("native_face", "scale", "brightness", "hf_energy")
#: Every probe feature, in design-matrix order; ``codec`` is one 0/1 column per codec family.
FeatureName = Literal["native_face", "scale", "codec", "brightness", "hf_energy"]
FEATURES: tuple[str, ...] = get_args(FeatureName)
#: Quantiles reported per feature and class.
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
#: Two-sided level of the bootstrap intervals.
CI_LEVEL = 0.95
#: Blur before the high-frequency measure (pixels).
HF_SIGMA = 1.0
#: Path suffix -> file format, only for manifests written before the provenance columns existed.
_SUFFIX_FORMAT = {
    "png": "png",
    "jpg": "jpeg",
    "jpeg": "jpeg",
    "webp": "webp",
    "bmp": "bmp",
    "tif": "tiff",
    "tiff": "tiff",
    "mp4": "video",
    "avi": "video",
    "mov": "video",
    "mkv": "video",
    "webm": "video",
}


def pixel_stats(image: np.ndarray) -> tuple[float, float]:
    """``(brightness, hf_energy)`` of an RGB ``(H, W, 3)`` or gray ``(H, W)`` uint8 crop (module docstring)."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    gray = gray.astype(np.float32)
    lap = cv2.Laplacian(cv2.GaussianBlur(gray, (0, 0), HF_SIGMA), cv2.CV_32F)
    return float(gray.mean()), float(np.log1p(np.mean(lap.astype(np.float64) ** 2)))


def codec_family(codec: str, file_format: str) -> str:
    """``h264_crf23`` -> ``h264``; no codec control -> the file format (``jpg`` spelled ``jpeg``)."""
    name = (codec or file_format or "unknown").lower().split("_")[0]
    return "jpeg" if name == "jpg" else name


def nuisance_table(
    rows: pd.DataFrame, side: np.ndarray, brightness: np.ndarray, hf: np.ndarray
) -> tuple[pd.DataFrame, str]:
    """Feature table aligned with ``rows``; second value says where the provenance facts came from.

    ``side``: ``(N,)`` stored crop side; ``brightness``/``hf``: ``(N,)`` from :func:`pixel_stats`.
    Where the provenance columns are absent (manifests written before them) or "not recorded" (NaN size,
    empty format: hand-built manifests), ``native_face = box_w`` (preprocess' square crop box),
    ``scale = side / box_w`` and the format comes from the path suffix.
    """
    n = len(rows)
    box = rows["box_w"].to_numpy(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        derived_scale = np.where(box > 0, np.asarray(side, np.float64) / np.where(box > 0, box, 1.0), np.nan)
    suffix = rows["path"].astype(str).str.rsplit(".", n=1).str[-1].str.lower().map(lambda s: _SUFFIX_FORMAT.get(s, s))
    native = rows["native_face"].to_numpy(np.float64) if "native_face" in rows else np.full(n, np.nan)
    scale = rows["scale"].to_numpy(np.float64) if "scale" in rows else np.full(n, np.nan)
    fmt = rows["file_format"].astype(str).to_numpy() if "file_format" in rows else np.full(n, "", dtype=object)
    codec = rows["codec"].astype(str).to_numpy() if "codec" in rows else np.full(n, "", dtype=object)
    missing = np.isnan(native) | np.isnan(scale) | (fmt == "")
    native = np.where(np.isnan(native), box, native)
    scale = np.where(np.isnan(scale), derived_scale, scale)
    fmt = np.where(fmt == "", suffix.to_numpy(), fmt)
    origin = (
        (
            f"derived from box_w and the path suffix for {int(missing.sum())} of {n} items (provenance columns "
            "absent or not recorded)"
        )
        if missing.any()
        else "manifest (provenance columns)"
    )
    table = pd.DataFrame(
        {
            "label": rows["label"].to_numpy(np.int64),
            "split": rows["split"].to_numpy(),
            "group": rows["group"].to_numpy(),
            "native_face": native,
            "scale": scale,
            "brightness": np.asarray(brightness, np.float64),
            "hf_energy": np.asarray(hf, np.float64),
            "codec_family": [codec_family(c, f) for c, f in zip(codec, fmt)],
        },
        index=rows.index,
    )
    return table, origin


def design(table: pd.DataFrame, features: tuple[str, ...], families: list[str]) -> np.ndarray:
    """Design matrix ``(N, F)``: the chosen :data:`FEATURES` in order (sizes as logs; ``codec``
    expands to one 0/1 column per family of ``families``)."""
    cols = []
    for feat in features:
        if feat == "codec":
            cols += [(table["codec_family"] == f).to_numpy(np.float64) for f in families]
        elif feat in ("native_face", "scale"):
            cols.append(np.log(np.clip(table[feat].to_numpy(np.float64), 1e-6, None)))
        else:
            cols.append(table[feat].to_numpy(np.float64))
    x = np.stack(cols, axis=1) if cols else np.zeros((len(table), 0))
    return np.where(np.isfinite(x), x, 0.0)  # a missing size (raw mode) is one more constant value


def binary_auc(pos: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count 1/2); NaN without both outcomes.

    Written out (not ``sklearn.metrics.roc_auc_score``) because the bootstrap calls it thousands
    of times per variant and must stay a few seconds; tests check it against sklearn.
    """
    n_pos = int(pos.sum())
    n_neg = len(pos) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def macro_auc(y: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> float:
    """Mean one-vs-rest ROC AUC over ``classes`` (columns of ``proba``) with both outcomes in ``y``."""
    aucs = [binary_auc(y == c, proba[:, k]) for k, c in enumerate(classes)]
    aucs = [a for a in aucs if np.isfinite(a)]
    return float(np.mean(aucs)) if aucs else float("nan")


def macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    """Macro-F1 over the classes present in ``y`` (a class only predicted still costs precision).

    Labels are small non-negative ints (:data:`dfpipe.core.manifest.LABELS`); equals
    ``sklearn.metrics.f1_score(y, pred, labels=unique(y), average="macro", zero_division=0)``.
    """
    k = int(max(y.max(initial=0), pred.max(initial=0))) + 1
    cm = np.bincount(y * k + pred, minlength=k * k).reshape(k, k).astype(np.float64)
    tp, support, predicted = np.diag(cm), cm.sum(1), cm.sum(0)
    present = support > 0
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1[present].mean()) if present.any() else float("nan")


def _probes() -> dict:
    return {
        "logreg": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        "gboost": GradientBoostingClassifier(n_estimators=50, max_depth=2, random_state=0),
    }


def _cluster_bootstrap(groups: np.ndarray, n_boot: int, seed: int):
    """Yield ``n_boot`` index arrays, each drawing the sorted unique ``groups`` with replacement."""
    keys, inverse = np.unique(groups.astype(str), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.searchsorted(inverse[order], np.arange(len(keys) + 1))
    members = [order[starts[g] : starts[g + 1]] for g in range(len(keys))]
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        yield np.concatenate([members[g] for g in rng.integers(0, len(keys), size=len(keys))])


def _ci(values: list[float]) -> list[float | None]:
    arr = np.asarray(values, np.float64)
    arr = arr[np.isfinite(arr)]
    if not arr.size:
        return [None, None]
    a = (1.0 - CI_LEVEL) / 2
    return [_r(np.quantile(arr, a)), _r(np.quantile(arr, 1 - a))]


def _r(x: float) -> float | None:
    """Round for the tracked JSON (4 decimals keep BLAS-order noise out of the bytes)."""
    return None if x is None or not np.isfinite(x) else round(float(x), 4)


def _probe_scores(
    train: pd.DataFrame, ev: pd.DataFrame, features: tuple[str, ...], families: list[str], n_boot: int, seed: int
) -> dict:
    """Both probes on ``features``: test macro AUC / macro-F1 with cluster-bootstrap CIs."""
    xtr, xev = design(train, features, families), design(ev, features, families)
    y, groups = ev["label"].to_numpy(), ev["group"].to_numpy()
    out = {}
    for pname, model in _probes().items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter on separable toy features
            model.fit(xtr, train["label"].to_numpy())
        proba = model.predict_proba(xev)
        classes = model.classes_
        pred = classes[proba.argmax(1)]
        boot_auc, boot_f1 = [], []
        for idx in _cluster_bootstrap(groups, n_boot, seed):
            boot_auc.append(macro_auc(y[idx], proba[idx], classes))
            boot_f1.append(macro_f1(y[idx], pred[idx]))
        out[pname] = {
            "auc": _r(macro_auc(y, proba, classes)),
            "auc_ci": _ci(boot_auc),
            "macro_f1": _r(macro_f1(y, pred)),
            "macro_f1_ci": _ci(boot_f1),
        }
    return out


def shortcut_audit(
    table: pd.DataFrame, shortcut_free: bool, max_auc: float, gate_features: tuple[str, ...], n_boot: int, seed: int
) -> dict:
    """Probe scores, per-class feature quantiles and the check; a compact JSON-able dict.

    ``table``: :func:`nuisance_table` output for all items of the variant (train, val, test).
    Probes run twice: on ``gate_features`` (their best AUC decides the check) and on all
    :data:`FEATURES` (reported beside; skipped when the two sets are equal).
    """
    unknown = sorted(set(gate_features) - set(FEATURES))
    if unknown or not gate_features:
        raise ValueError(f"gate features {list(gate_features)}: expected a non-empty subset of {list(FEATURES)}")
    gate_features = tuple(f for f in FEATURES if f in gate_features)
    train, ev = table[table["split"] == "train"], table[table["split"] == "test"]
    families = sorted(set(train["codec_family"]) | set(ev["codec_family"]))
    sets = {"gate": gate_features} if gate_features == FEATURES else {"gate": gate_features, "all": FEATURES}
    probes: dict[str, dict] = {}
    notes: list[str] = []
    if train["label"].nunique() < 2 or len(ev) == 0:
        notes.append("probes not trained: train holds fewer than two classes or test is empty")
    else:
        probes = {k: _probe_scores(train, ev, feats, families, n_boot, seed) for k, feats in sets.items()}
    best = {k: max((p["auc"] for p in v.values() if p["auc"] is not None), default=None) for k, v in probes.items()}
    top = best.get("gate")
    failed = top is not None and top > max_auc
    by_class: dict[str, dict] = {}
    for feat in NUMERIC:
        by_class[feat] = {
            LABELS[int(c)]: [_r(q) for q in sub[feat].quantile(list(QUANTILES)).to_numpy()]
            for c, sub in sorted(table.groupby("label"))
        }
    codecs = {
        LABELS[int(c)]: {str(k): int(v) for k, v in sorted(sub["codec_family"].value_counts().items())}
        for c, sub in sorted(table.groupby("label"))
    }
    return {
        "check": ("failed" if failed else "passed") if shortcut_free else "not required",
        "max_auc": top,
        "max_auc_all_features": best.get("all", top),
        "threshold": max_auc,
        "features": {k: list(v) for k, v in sets.items()},
        "codec_families": families,
        "probes": probes,
        "quantiles": list(QUANTILES),
        "by_class": by_class,
        "codec_by_class": codecs,
        "notes": notes,
    }


def shortcut_markdown(s: dict, origin: str) -> list[str]:
    """Markdown lines of the shortcut section of the audit report."""
    lines = [
        f"## Shortcut audit: **{s['check']}** (max gate-probe AUC {s['max_auc']}, threshold {s['threshold']}; "
        f"all features {s['max_auc_all_features']})",
        "",
        "Probes trained on train, scored on test, on nuisance features only. Gate features: "
        + ", ".join(f"`{n}`" for n in s["features"]["gate"])
        + "; all features: "
        + ", ".join(f"`{n}`" for n in s["features"].get("all", s["features"]["gate"]))
        + f" (codec families: {', '.join(s['codec_families'])}). Provenance: {origin}. "
        f"CIs: {CI_LEVEL:.0%} cluster bootstrap over split groups.",
        "",
    ]
    if s["probes"]:
        lines += [
            "| features | probe | macro AUC (one-vs-rest) | 95% CI | macro-F1 | 95% CI |",
            "|---|---|---|---|---|---|",
        ]
        for fset, probes in s["probes"].items():
            for name, p in probes.items():
                lines.append(f"| {fset} | {name} | {p['auc']} | {p['auc_ci']} | {p['macro_f1']} | {p['macro_f1_ci']} |")
        lines.append("")
    lines += [f"- {n}" for n in s["notes"]] + ([""] if s["notes"] else [])
    classes = list(next(iter(s["by_class"].values())))
    qs = "/".join(f"q{int(q * 100):02d}" for q in s["quantiles"])
    lines += [
        f"Feature quantiles per class ({qs}, all splits):",
        "",
        "| feature | " + " | ".join(classes) + " |",
        "|---|" + "---|" * len(classes),
    ]
    for feat, per in s["by_class"].items():
        lines.append(
            f"| {feat} | "
            + " | ".join(" / ".join("-" if v is None else f"{v:g}" for v in qv) for qv in per.values())
            + " |"
        )
    lines += [
        "",
        "Codec family per class: "
        + "; ".join(f"{c}: " + ", ".join(f"{k} {v}" for k, v in d.items()) for c, d in s["codec_by_class"].items()),
        "",
    ]
    return lines
