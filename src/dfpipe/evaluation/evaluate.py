"""Evaluation stage: score a trained run on a variant's eval split and write metrics, predictions
and plot data.

``evaluate@<name>`` (``evaluations.<name> = {run, variant, train_variant}``) writes

- ``metrics/eval/<name>.json``: headline numbers (DVC metrics, shown by ``dvc exp show``),
- ``metrics/eval/<name>/predictions.parquet``: one row per eval item with its probabilities,
- ``metrics/eval/<name>/details.json``: per source / per method / video-level metrics and notes,
- ``metrics/eval/<name>/{confusion,roc,pr}.csv``: data for ``dvc plots``,
- ``metrics/eval/<name>/figures/*.png``: confusion matrix, ROC, PR, training curves, feature maps.

The library half (:func:`evaluate_predictions`, :func:`train_overlap`, :func:`write_outputs`) works
on arrays and manifests only, so it is tested without a trained model; :func:`run_evaluation`
adds the model (``dfpipe.training.train.load_model``) and the loader (``dfpipe.training.data``,
``dfpipe.training.engine.predict``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from dfpipe.evaluation import metrics as M
from dfpipe.core.config import Config, PlainName
from dfpipe.core.io import atomic_path, write_json
from dfpipe.core.manifest import VARIANT_SCHEMA, is_fake, read_table

EVAL_DIR = Path("metrics/eval")


class EvaluateConfig(Config):
    """``evaluate:`` section of params.yaml (shared by every evaluation)."""

    batch_size: int = Field(ge=1)
    num_workers: int = Field(ge=0)
    device: Literal["auto", "cpu", "cuda"]
    amp: Literal["off", "bf16", "fp16"]
    bootstrap: int = Field(ge=1)    # resamples for the 95 % intervals (1000 is the usual minimum)
    ci_level: float = Field(ge=0.5, lt=1.0)
    seed: int                       # bootstrap and feature-map example choice
    featuremap_layer: str           # dotted module name, or "auto" (middle Conv2d)
    featuremap_per_class: int = Field(ge=0, le=16)


class Evaluation(Config):
    """One ``evaluations.<name>`` entry: ``run`` scored on ``variant``'s eval split.

    ``train_variant`` is the variant the run was trained on. It is checked against the run's
    own config; it is spelled out so that dvc.yaml can declare that variant's train/val manifests
    as dependencies (the leak overlap is counted from them).
    """

    run: PlainName
    variant: PlainName
    train_variant: PlainName


# --------------------------------------------------------------------------------------------
# Library half: arrays and manifests in, metrics out


def align_predictions(manifest: pd.DataFrame, ids: np.ndarray, labels: np.ndarray,
                      probs: np.ndarray, where: str) -> pd.DataFrame:
    """Join predictions to the eval manifest by id; one row per manifest row, sorted by id.

    Returns columns ``id, source, method, video_id, label, pred, p_<class>...``. Raises
    ``ValueError`` naming ``where`` when ids are missing, duplicated or labels disagree (the
    model's labels may be binary: then they must equal ``manifest.label != 0``).
    """
    ids = np.asarray(ids).astype(str)
    probs = np.asarray(probs, dtype=np.float32)
    if len(set(ids)) != len(ids):
        raise ValueError(f"{where}: duplicate ids in the predictions")
    man_ids = manifest["id"].astype(str).to_numpy()
    missing = sorted(set(man_ids) - set(ids))
    extra = sorted(set(ids) - set(man_ids))
    if missing or extra:
        raise ValueError(f"{where}: predictions and manifest differ: {len(missing)} manifest ids not "
                         f"scored (first {missing[:3]}), {len(extra)} unknown ids (first {extra[:3]})")
    order = pd.Series(np.arange(len(ids)), index=ids).loc[man_ids].to_numpy()
    probs, labels = probs[order], np.asarray(labels, dtype=np.int64)[order]
    k = probs.shape[1]
    man_labels = manifest["label"].to_numpy(np.int64)
    expected = man_labels if k > 2 else is_fake(man_labels).astype(np.int64)
    if not np.array_equal(labels, expected):
        bad = int(np.flatnonzero(labels != expected)[0])
        raise ValueError(f"{where}: label of {man_ids[bad]} is {labels[bad]} in the predictions, "
                         f"{expected[bad]} in the manifest")
    frame = pd.DataFrame(
        {
            "id": man_ids,
            "source": manifest["source"].astype(str).to_numpy(),
            "method": manifest["method"].astype(str).to_numpy(),
            "video_id": manifest["video_id"].astype(str).to_numpy(),
            "label": labels,
            "pred": probs.argmax(1).astype(np.int64),
        }
    )
    for c, name in enumerate(M.class_names(k)):
        frame[f"p_{name}"] = probs[:, c]
    return frame.sort_values("id", kind="stable").reset_index(drop=True)


def prob_columns(frame: pd.DataFrame) -> np.ndarray:
    """``(N, K)`` float64 probabilities from the ``p_<class>`` columns of a predictions frame."""
    cols = [c for c in frame.columns if c.startswith("p_")]
    return frame[cols].to_numpy(np.float64)


def evaluate_predictions(frame: pd.DataFrame, n_boot: int, seed: int, level: float) -> tuple[dict, dict]:
    """Headline and detailed metrics of a predictions frame (from :func:`align_predictions`).

    Returns ``(headline, details)``:

    - ``headline``: flat-ish dict for ``dvc exp show``: ``n, acc, macro_f1, f1_<class>,
      auc_<class>, ap_<class>, auc_real_vs_fake, ap_real_vs_fake, eer``, ``ci`` (bootstrap
      ``{metric: {low, high}}``, cluster-resampled by video), and ``video`` (the same headline
      metrics on video-level scores, when the set has video items).
    - ``details``: full item-level metrics, ``per_source``, ``per_method``, ``video`` (with
      per-method video metrics) and ``notes`` (why a number is NaN/null).
    """
    labels = frame["label"].to_numpy(np.int64)
    probs = prob_columns(frame)
    notes: list[str] = []
    full = M.classification_metrics(labels, probs, notes)
    ci = M.bootstrap_ci(labels, probs, M.item_groups(frame), n_boot, seed, level, notes=notes)
    headline = _headline(full)
    headline["ci"] = {m: {"low": lo, "high": hi} for m, (lo, hi) in ci.items()}
    details = {
        "items": full,
        "ci": headline["ci"],
        "ci_level": level,
        "bootstrap": n_boot,
        "per_source": M.per_group_metrics(frame, labels, probs, "source", n_boot, seed, level),
        "per_method": M.per_group_metrics(frame, labels, probs, "method"),
    }
    videos, vprobs = M.video_level(frame, probs)
    if len(videos):
        vnotes: list[str] = []
        vfull = M.classification_metrics(videos["label"].to_numpy(), vprobs, vnotes)
        headline["video"] = _headline(vfull)
        details["video"] = {
            "note": "mean frame probability per (method, video_id); still images excluded",
            "metrics": vfull,
            "per_method": M.per_group_metrics(videos, videos["label"].to_numpy(), vprobs, "method"),
            "notes": vnotes,
        }
    details["notes"] = notes
    return M.nan_to_none(headline), M.nan_to_none(details)


def _headline(full: dict) -> dict:
    out = {key: full[key] for key in ("n", "acc", "macro_f1", "auc_real_vs_fake", "ap_real_vs_fake", "eer")}
    for group in ("f1", "auc", "ap"):
        for name, value in full[group].items():
            out[f"{group}_{name}"] = value
    return out


def train_overlap(train_manifests: dict[str, pd.DataFrame], eval_manifest: pd.DataFrame) -> dict:
    """Leak check across variants: eval items whose pixels the model saw in training.

    ``train_manifests``: ``{split: manifest}`` of the variant the model was trained on (train, val).
    Items are matched by ``content_hash`` (sha256 of the stored crop), so a frame re-cropped into
    both variants counts even under another id. Returns ``{"overlap_<split>": items of the eval
    split whose hash is in that split, "overlap_<split>_frames": those of them that are video
    frames, "overlap_<split>_videos": distinct (method, video_id) of eval video items sharing a
    video with that split, "n_eval": ...}``.
    """
    eval_hash = eval_manifest["content_hash"].astype(str).to_numpy()
    eval_vid = eval_manifest["video_id"].astype(str).to_numpy()
    eval_keys = {M.video_key(m, v) for m, v in zip(eval_manifest["method"].astype(str), eval_vid) if v}
    out: dict = {"n_eval": int(len(eval_manifest))}
    for split in sorted(train_manifests):
        man = train_manifests[split]
        hashes = set(man["content_hash"].astype(str))
        keys = {M.video_key(m, v) for m, v in zip(man["method"].astype(str), man["video_id"].astype(str)) if v}
        seen = np.isin(eval_hash, list(hashes))
        out[f"overlap_{split}"] = int(seen.sum())
        out[f"overlap_{split}_frames"] = int((seen & (eval_vid != "")).sum())
        out[f"overlap_{split}_videos"] = len(eval_keys & keys)
    return out


def mask_evaluation(manifest: pd.DataFrame, split_dir: Path, ids: np.ndarray,
                    mask_probs: np.ndarray, threshold: float = 0.5) -> dict:
    """Dice / IoU of a multi-task model's masks on the edited eval items that have a true mask.

    ``mask_probs``: ``(N, h, w)`` sigmoid masks in the order of ``ids``; each is resized
    (bilinear) to its item's stored mask size. Generated and real items are left out: their
    targets (all 1 / all 0) say nothing about localisation.
    """
    import torch
    import torch.nn.functional as F

    from dfpipe.core.shards import ShardReader

    sel = manifest[(manifest["label"] == 2) & manifest["has_mask"]]
    row_of = pd.Series(np.arange(len(ids)), index=np.asarray(ids).astype(str))
    missing = sorted(set(sel["id"]) - set(row_of.index))
    if missing:
        raise ValueError(f"{split_dir}: no predicted mask for {len(missing)} items (first {missing[:3]})")
    if sel.empty:
        return M.mask_scores(np.zeros((0, 1, 1)), np.zeros((0, 1, 1), bool), threshold)
    reader = ShardReader(split_dir)
    target = reader.gather(sel["mask_shard"].tolist(), sel["offset"].tolist()) > 127  # (M, S, S)
    pred = torch.from_numpy(np.asarray(mask_probs[row_of.loc[sel["id"]].to_numpy()], np.float32))
    pred = F.interpolate(pred[:, None], size=target.shape[1:], mode="bilinear", align_corners=False)[:, 0]
    return M.mask_scores(pred.numpy(), target, threshold)


def write_predictions(frame: pd.DataFrame, path: str | Path) -> None:
    """Predictions Parquet, deterministic (no pandas metadata, fixed compression)."""
    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def write_outputs(name: str, frame: pd.DataFrame, headline: dict, details: dict,
                  out_json: Path, out_dir: Path) -> None:
    """Write the metrics JSON, predictions, details and ``dvc plots`` data (CSV + PNG)."""
    k = len([c for c in frame.columns if c.startswith("p_")])
    names = M.class_names(k)
    write_json(out_json, headline)
    write_json(out_dir / "details.json", details)
    write_predictions(frame, out_dir / "predictions.parquet")
    # DVC's confusion template counts (actual, predicted) pairs: one row per item.
    conf = pd.DataFrame({"actual": [names[i] for i in frame["label"]],
                         "predicted": [names[i] for i in frame["pred"]]})
    _write_csv(conf, out_dir / "confusion.csv")
    y, score = M.real_vs_fake(frame["label"].to_numpy(), prob_columns(frame))
    roc, pr = M.curve_points(y, score)
    _write_csv(roc, out_dir / "roc.csv")
    _write_csv(pr, out_dir / "pr.csv")
    figs = out_dir / "figures"
    plot_confusion(np.asarray(details["items"]["confusion"]), names, figs / "confusion.png", name)
    plot_curves(roc, pr, headline, figs / "roc_pr.png", name)


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g", lineterminator="\n")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _savefig(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    _pyplot().close(fig)


def plot_confusion(cm: np.ndarray, names: list[str], path: Path, title: str) -> None:
    """Confusion matrix ``(K, K)`` (rows true) as counts with row-normalised colour."""
    plt = _pyplot()
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, float), where=rows > 0)
    fig, ax = plt.subplots(figsize=(4, 3.5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _savefig(fig, path)


def plot_curves(roc: pd.DataFrame, pr: pd.DataFrame, headline: dict, path: Path, title: str) -> None:
    """Real-vs-fake ROC and PR curves side by side (empty axes with a note when undefined)."""
    plt = _pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.5))
    if roc.empty:
        a.text(0.5, 0.5, "undefined: one class only", ha="center")
        b.text(0.5, 0.5, "undefined: one class only", ha="center")
    else:
        a.plot(roc["fpr"], roc["tpr"])
        a.plot([0, 1], [0, 1], "k:", lw=0.8)
        b.step(pr["recall"], pr["precision"], where="post")
    a.set(xlabel="false positive rate", ylabel="true positive rate",
          title=f"ROC, AUC {_fmt(headline.get('auc_real_vs_fake'))}, EER {_fmt(headline.get('eer'))}")
    b.set(xlabel="recall", ylabel="precision", title=f"PR, AP {_fmt(headline.get('ap_real_vs_fake'))}")
    fig.suptitle(f"{title}: real vs fake (score 1 - p(real))", fontsize=9)
    fig.tight_layout()
    _savefig(fig, path)


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def plot_training_curves(train_dir: Path, path: Path, title: str) -> None:
    """Every dvclive series under ``<train_dir>/plots/metrics/**.tsv`` (columns ``step``, value,
    ...) in one figure, one panel per metric name (train/val series of a metric share a panel)."""
    series_dir = train_dir / "plots" / "metrics"
    files = sorted(series_dir.rglob("*.tsv")) if series_dir.is_dir() else []
    if not files:
        raise FileNotFoundError(f"{series_dir}: no dvclive .tsv series (did train@ run with dvclive?)")
    panels: dict[str, list[tuple[str, pd.DataFrame]]] = {}
    for f in files:
        df = pd.read_csv(f, sep="\t")
        metric = f.stem
        if "step" not in df.columns or metric not in df.columns:
            raise ValueError(f"{f}: expected columns 'step' and '{metric}', got {list(df.columns)}")
        label = f.relative_to(series_dir).with_suffix("").as_posix()
        panels.setdefault(metric, []).append((label, df))
    plt = _pyplot()
    ncols = min(4, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.8 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_axis_off()
    for ax, (metric, curves) in zip(axes.flat, sorted(panels.items())):
        for label, df in curves:
            ax.plot(df["step"], df[metric], marker=".", label=label)
        ax.set(xlabel="step", title=metric)
        ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _savefig(fig, path)


# --------------------------------------------------------------------------------------------
# Stage half: model + data


def run_summary(ev: Evaluation, run_cfg) -> dict:
    """What the results tables show about the evaluated model, read from the checkpoint's own
    config (``dfpipe.training.train.RunConfig``), so a table row describes the weights actually scored."""
    return {
        "name": ev.run, "model": run_cfg.model.name, "input": run_cfg.model.input,
        "f3net_mode": run_cfg.model.f3net_mode if run_cfg.model.name == "f3net" else "",
        "seg_head": bool(run_cfg.model.seg_head),
        "train_variant": ev.train_variant, "eval_variant": ev.variant,
        "lr": run_cfg.lr, "batch_size": run_cfg.batch_size, "epochs": run_cfg.epochs,
        "w_cls": run_cfg.loss.w_cls, "w_bce": run_cfg.loss.w_bce, "w_dice": run_cfg.loss.w_dice,
    }


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("evaluate.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


def run_evaluation(name: str, ev: Evaluation, cfg: EvaluateConfig,
                   models_dir: Path = Path("models"), variants_dir: Path = Path("data/variants"),
                   train_metrics_dir: Path = Path("metrics/train"), out_root: Path = EVAL_DIR,
                   features_dir: Path = Path("data/features")) -> dict:
    """Score ``models/<run>/best.pt`` on ``data/variants/<variant>/eval`` and write every output.
    Returns the headline metrics."""
    import torch

    from dfpipe.core.config import to_dict
    from dfpipe.training.data import make_loader, open_split
    from dfpipe.training.engine import predict
    from dfpipe.evaluation.featuremaps import find_layer, gradcam, pick_examples, save_grid
    from dfpipe.training.train import load_model

    ckpt = models_dir / ev.run / "best.pt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt}: checkpoint not found (run train@{ev.run} first)")
    device = resolve_device(cfg.device)
    model, run_cfg = load_model(ckpt, device)
    if run_cfg.variant != ev.train_variant:
        raise ValueError(f"evaluations.{name}.train_variant is {ev.train_variant!r} but {ckpt} was "
                         f"trained on {run_cfg.variant!r}")
    num_classes = run_cfg.model.num_classes
    from dfpipe.features.encoders import cache_dir

    dataset = open_split(variants_dir / ev.variant, "eval", run_cfg.model,
                         cache_dir(features_dir, run_cfg.model.input, ev.variant))
    loader = make_loader(dataset, cfg.batch_size, train=False, num_workers=cfg.num_workers, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    pred = predict(model, loader, device, amp=cfg.amp)
    manifest = read_table(dataset.manifest_path, VARIANT_SCHEMA)
    frame = align_predictions(manifest, pred["ids"], pred["labels"], pred["probs"], str(dataset.manifest_path))
    headline, details = evaluate_predictions(frame, cfg.bootstrap, cfg.seed, cfg.ci_level)

    train_mans = {s: read_table(variants_dir / ev.train_variant / s / "manifest.parquet", VARIANT_SCHEMA)
                  for s in ("train", "val")}
    leak = train_overlap(train_mans, manifest)
    headline["run"] = run_summary(ev, run_cfg)
    headline["leak"] = leak
    if "mask_probs" in pred:
        headline["mask"] = M.nan_to_none(mask_evaluation(manifest, dataset.root, pred["ids"], pred["mask_probs"]))
    details["run_config"] = to_dict(run_cfg)
    if not dataset.is_image:  # provenance of cached encoder features (random = demo encoder)
        details["features"] = {k: dataset.cache.index[k] for k in ("encoder", "variant", "random", "config")}

    out_dir = out_root / name
    write_outputs(name, frame, headline, details, out_root / f"{name}.json", out_dir)
    plot_training_curves(train_metrics_dir / ev.run, out_dir / "figures" / "training_curves.png",
                         f"{ev.run} (trained on {ev.train_variant})")
    if cfg.featuremap_per_class > 0 and dataset.is_image:  # no Grad-CAM on cached features
        rows = pick_examples(dataset.labels, dataset.ids, cfg.featuremap_per_class, cfg.seed, num_classes)
        images = torch.stack([dataset[int(i)]["image"] for i in rows])  # (B, 3, S, S) uint8
        x = images.float().div(255).to(device)
        layer_name, layer = find_layer(model, cfg.featuremap_layer, x)
        maps = gradcam(model, x, layer, torch.as_tensor(dataset.labels[rows], device=device))
        p = torch.softmax(maps["logits"], 1).numpy()
        names = M.class_names(num_classes)
        titles = [f"{dataset.ids[i].split('/')[0]} {names[dataset.labels[i]]}\np={p[j, dataset.labels[i]]:.2f}"
                  for j, i in enumerate(rows)]
        save_grid(out_dir / "figures" / "featuremaps.png", images.permute(0, 2, 3, 1).numpy(),
                  maps["cam"].numpy(), maps["activation"].numpy(), titles, layer_name)
    return headline
