"""Evaluation orchestration: score every seed's checkpoint of a run on a variant's test split,
compute the metric groups and write the outputs of ``evaluate@<name>``.

``evaluate@<name>`` (a run scored on a variant, :mod:`dfpipe.evaluation.evaluations`) writes

- ``metrics/eval/<name>.json``: the only DVC metric: mean and sd over seeds, and the bootstrap
  interval, of ``macro_f1, weighted_f1, acc, auc_real_fake, eer``;
- ``metrics/eval/<name>/details.json``: everything else (per seed and per class, per source /
  method, video level keyed ``"<method>:<video_id>"``, leak measure (a), masks with trivial
  baselines, the scored run's settings, provenance);
- ``metrics/eval/<name>/predictions.parquet``: one row per (seed, test item);
- ``metrics/eval/<name>/{confusion,roc,pr}.csv`` and ``figures/*.png`` for ``dvc plots``.

The library half (:func:`align_predictions`, :func:`evaluate_seeds`, :func:`write_outputs`)
works on arrays and manifests only, so it is tested without a trained model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from dfpipe.core.config import Config, safe_name
from dfpipe.core.io import atomic_path, write_json
from dfpipe.core.manifest import VARIANT_SCHEMA, is_fake, read_table
from dfpipe.core.stagedeps import code_hash
from dfpipe.evaluation import figures, protocol
from dfpipe.evaluation.evaluations import Evaluation
from dfpipe.evaluation.predictions import prob_columns, stack_seeds, write_predictions
from dfpipe.scoring import metrics as M
from dfpipe.scoring import stats
from dfpipe.splits.gate import variant_fingerprint
from dfpipe.splits.groups import canonical_groups
from dfpipe.training.config import stopping_label

EVAL_DIR = Path("metrics/eval")


class EvaluateConfig(Config):
    """``evaluate:`` section of params.yaml (shared by every evaluation)."""

    batch_size: int = Field(ge=1)
    num_workers: int = Field(ge=0)
    device: Literal["auto", "cpu", "cuda"]
    amp: Literal["off", "bf16", "fp16"]
    bootstrap: int = Field(ge=1)  # resamples for the 95 % intervals (1000 is the usual minimum)
    ci_level: float = Field(ge=0.5, lt=1.0)
    seed: int  # bootstrap and feature-map example choice
    featuremap_layer: str  # dotted module name, or "auto" (middle Conv2d)
    featuremap_per_class: int = Field(ge=0, le=16)


# --------------------------------------------------------------------------------------------
# Library half: arrays and manifests in, metrics out


def align_predictions(
    manifest: pd.DataFrame, ids: np.ndarray, labels: np.ndarray, probs: np.ndarray, where: str, with_groups: bool = True
) -> pd.DataFrame:
    """Join one seed's predictions to the test manifest by id; one row per manifest row, sorted by id.

    Returns columns ``id, source, method, video_id, label, pred, p_<class>...`` and, when the
    manifest has ``group_keys`` and ``with_groups``, ``group``: the identity group of the item among
    the scored items (union-find over its identity keys, :func:`dfpipe.splits.groups.canonical_groups`). Raises
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
        raise ValueError(
            f"{where}: predictions and manifest differ: {len(missing)} manifest ids not "
            f"scored (first {missing[:3]}), {len(extra)} unknown ids (first {extra[:3]})"
        )
    order = pd.Series(np.arange(len(ids)), index=ids).loc[man_ids].to_numpy()
    probs, labels = probs[order], np.asarray(labels, dtype=np.int64)[order]
    k = probs.shape[1]
    man_labels = manifest["label"].to_numpy(np.int64)
    expected = man_labels if k > 2 else is_fake(man_labels).astype(np.int64)
    if not np.array_equal(labels, expected):
        bad = int(np.flatnonzero(labels != expected)[0])
        raise ValueError(
            f"{where}: label of {man_ids[bad]} is {labels[bad]} in the predictions, {expected[bad]} in the manifest"
        )
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
    if with_groups and "group_keys" in manifest.columns:  # the unit of independence the intervals resample
        frame["group"] = canonical_groups(man_ids.tolist(), manifest["group_keys"].tolist())
    for c, name in enumerate(M.class_names(k)):
        frame[f"p_{name}"] = probs[:, c]
    return frame.sort_values("id", kind="stable").reset_index(drop=True)


def _scalars(full: dict) -> dict[str, float]:
    """Scalar metrics of one seed for the seed summary, per-class ones as ``f1_<class>`` etc."""
    out = {k: full[k] for k in ("acc", "macro_f1", "weighted_f1", "auc_real_vs_fake", "ap_real_vs_fake", "eer")}
    for group in ("f1", "auc", "ap"):
        out.update({f"{group}_{name}": v for name, v in full[group].items()})
    return out


def summarise(per_seed: Sequence[dict]) -> dict[str, dict]:
    """``{metric: {"mean", "sd"}}`` over the seeds' scalar metrics."""
    return {k: stats.seed_summary([s[k] for s in per_seed]) for k in per_seed[0]}


def evaluate_seeds(frames: dict[int, pd.DataFrame], n_boot: int, seed: int, level: float) -> tuple[dict, dict]:
    """Headline (``metrics/eval/<name>.json``) and detailed metrics of one evaluation from ``{seed: aligned frame}``.

    ``headline``: ``{metric: {"mean", "sd", "low", "high"}}`` for the metrics of
    :data:`dfpipe.scoring.stats.HEADLINE` (interval: bootstrap over seeds x video resamples).
    ``details``: ``seeds``, ``n``, ``summary`` (mean/sd of every scalar incl. per-class F1),
    ``per_seed`` (full metrics, per source / method), ``video`` (per-video mean frame probability,
    keyed ``method:video_id``; summary over seeds) and ``notes``.
    """
    items, probs = stack_seeds(frames)
    labels = items["label"].to_numpy(np.int64)
    groups = M.item_groups(items)
    notes: list[str] = []
    per_seed, scalars, vscalars, vper_seed, vnotes = {}, [], [], {}, []
    for s, p in zip(sorted(frames), probs):
        seed_notes: list[str] = []
        full = M.classification_metrics(labels, p, seed_notes)
        per_seed[str(s)] = {
            "items": full,
            "per_source": M.per_group_metrics(items, labels, p, "source"),
            "per_method": M.per_group_metrics(items, labels, p, "method"),
        }
        notes += [n for n in seed_notes if n not in notes]
        scalars.append(_scalars(full))
        videos, vprobs = M.video_level(items, p)
        if len(videos):
            seed_vnotes: list[str] = []
            vfull = M.classification_metrics(videos["label"].to_numpy(), vprobs, seed_vnotes)
            vnotes += [n for n in seed_vnotes if n not in vnotes]
            vper_seed[str(s)] = {
                "metrics": vfull,
                "per_method": M.per_group_metrics(videos, videos["label"].to_numpy(), vprobs, "method"),
            }
            vscalars.append(_scalars(vfull))
    ci = stats.bootstrap_ci(labels, probs, groups, n_boot, seed, level, notes=notes)
    summary = summarise(scalars)
    headline = {}
    for name in stats.HEADLINE:
        key = "auc_real_vs_fake" if name == "auc_real_fake" else name
        headline[name] = {**summary[key], "low": ci[name][0], "high": ci[name][1]}
    details = {
        "seeds": sorted(frames),
        "n": int(len(items)),
        "summary": summary,
        "ci": ci,
        "ci_level": level,
        "bootstrap": n_boot,
        "per_seed": per_seed,
        "notes": notes,
        "resampling": {"unit": M.group_unit(items), "n_units": int(len(np.unique(groups.astype(str))))},
    }
    if vscalars:
        vids, _ = M.video_level(items, probs[0])
        details["video"] = {
            "note": "mean frame probability per (method, video_id); still images excluded",
            "n_videos": int(len(vids)),
            "keys": vids["key"].tolist(),
            "summary": summarise(vscalars),
            "per_seed": vper_seed,
            "notes": vnotes,
        }
    return M.nan_to_none(headline), M.nan_to_none(details)


def split_fingerprints(variants_dir: Path, variant: str, train_variant: str) -> dict[str, str]:
    """Short sha256 digests (12 hex digits) of the split folders an evaluation reads: the scored
    ``<variant>/test`` and the ``<train_variant>/val`` its thresholds come from. Each digest covers
    every file's path, size and sha256 (:func:`dfpipe.splits.gate.variant_fingerprint`), so a table
    row names the exact bytes it was scored on."""
    return {
        "test": variant_fingerprint(variants_dir / variant / "test")["digest"][:12],
        "val": variant_fingerprint(variants_dir / train_variant / "val")["digest"][:12],
    }


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g", lineterminator="\n")


def write_outputs(
    name: str, frames: dict[int, pd.DataFrame], headline: dict, details: dict, out_json: Path, out_dir: Path
) -> None:
    """Write the headline JSON, details, predictions and ``dvc plots`` data (CSV + PNG).

    The confusion CSV pools the seeds (one row per seed and item); ROC/PR use the seed-mean score.
    """
    items, probs = stack_seeds(frames)
    names = M.class_names(probs.shape[2])
    write_json(out_json, headline)
    write_json(out_dir / "details.json", details)
    write_predictions(frames, out_dir / "predictions.parquet")
    pooled = pd.concat([frames[s] for s in sorted(frames)], ignore_index=True)
    # DVC's confusion template counts (actual, predicted) pairs: one row per item.
    _write_csv(
        pd.DataFrame({"actual": [names[i] for i in pooled["label"]], "predicted": [names[i] for i in pooled["pred"]]}),
        out_dir / "confusion.csv",
    )
    y, score = M.real_vs_fake(items["label"].to_numpy(), probs.mean(0))
    roc, pr = M.curve_points(y, score)
    _write_csv(roc, out_dir / "roc.csv")
    _write_csv(pr, out_dir / "pr.csv")
    figs = out_dir / "figures"
    cm = sum(np.asarray(details["per_seed"][str(s)]["items"]["confusion"]) for s in sorted(frames))
    assert isinstance(cm, np.ndarray)  # frames is non-empty (stack_seeds raises otherwise)
    figures.plot_confusion(cm, names, figs / "confusion.png", f"{name} (seeds pooled)")
    full = M.classification_metrics(items["label"].to_numpy(), probs.mean(0), [])
    figures.plot_curves(
        roc,
        pr,
        full["auc_real_vs_fake"],
        full["eer"],
        full["ap_real_vs_fake"],
        figs / "roc_pr.png",
        f"{name}: real vs fake, seed-mean score 1 - p(real)",
    )


# --------------------------------------------------------------------------------------------
# Stage half: checkpoints + data


def init_label(init: str | None, pretrained_dir: Path) -> str:
    """``"scratch"``, or the pretrained key with the short sha256 of ``<pretrained_dir>/<key>.pt``
    (the file ``pretrained@<key>`` writes)
    (the key alone if the file is absent here)."""
    if not init or init == "scratch":
        return "scratch"
    path = Path(init) if Path(init).suffix else pretrained_dir / f"{init}.pt"
    if not path.is_file():
        return str(init)
    return f"{path.stem}:" + hashlib.sha256(path.read_bytes()).hexdigest()[:8]


def majority_baseline(labels: np.ndarray, val_labels: np.ndarray, num_classes: int) -> dict:
    """The majority-class rule (the most frequent class of the val split, ties to the lower class)
    scored on the test ``labels`` (both as the model's classes: binary for 2-class detectors): what a
    results row must beat. A constant score has real/fake AUC
    0.5 by definition."""
    majority = int(np.argmax(np.bincount(val_labels, minlength=num_classes)))
    probs = np.zeros((len(labels), num_classes))
    probs[:, majority] = 1.0
    m = M.classification_metrics(labels, probs, [])
    return M.nan_to_none(
        {
            "class": M.class_names(num_classes)[majority],
            "chosen_on": "val",
            "macro_f1": m["macro_f1"],
            "weighted_f1": m["weighted_f1"],
            "acc": m["acc"],
            "auc_real_vs_fake": 0.5,
        }
    )


def training_budget(curves: Mapping[int, pd.DataFrame] | None) -> dict:
    """Optimizer updates, images seen and steps per epoch of the trained seeds, from their
    training curves (``updates`` / ``images_seen`` at the last epoch). A value that differs between
    seeds is written per seed (``"12/16"``); ``"n/a"`` without curves."""
    if not curves:
        return {"updates": "n/a", "images_seen": "n/a", "steps_per_epoch": "n/a"}

    def per_seed(values):
        values = list(dict.fromkeys(int(v) for v in values))
        return values[0] if len(values) == 1 else "/".join(map(str, values))

    last = [df.iloc[-1] for df in curves.values()]
    return {
        "updates": per_seed(r["updates"] for r in last),
        "images_seen": per_seed(r["images_seen"] for r in last),
        "steps_per_epoch": per_seed(r["updates"] // r["epoch"] for r in last),
    }


def run_summary(
    ev: Evaluation,
    cfg: dict,
    seeds: Sequence[int],
    pretrained_dir: Path = Path("models/pretrained"),
    curves: Mapping[int, pd.DataFrame] | None = None,
) -> dict:
    """The settings a results row shows and a comparison checks, read from the checkpoint's own
    config (as a plain dict), so a row describes the weights actually scored, plus the training
    budget actually spent (:func:`training_budget` of the run's training ``curves``)."""
    model, loss = cfg["model"], cfg.get("loss", {})
    reducible = "reduced" in model  # the model's config class has the knob (its dump holds every field)
    return {
        "name": ev.run,
        "model": model["name"],
        "input": model.get("input", "raw"),
        "f3net_mode": model.get("f3net_mode", "") if model["name"] == "f3net" else "",
        "backbone": ("reduced" if model.get("reduced") else "full") if reducible else "-",
        "seg_head": bool(model.get("seg_head", False)),
        "image_size": model.get("image_size"),
        "width": model.get("width", 1.0),
        "init": init_label(cfg.get("init"), pretrained_dir),
        "train_variant": ev.train_variant,
        "eval_variant": ev.variant,
        "optimizer": cfg.get("optimizer", "n/a"),
        "lr": cfg["lr"],
        "weight_decay": cfg.get("weight_decay", "n/a"),
        "schedule": cfg.get("schedule", "n/a"),
        "batch_size": cfg["batch_size"],
        "epochs": cfg["epochs"],
        "stopping": stopping_label(cfg.get("patience")),
        **training_budget(curves),
        "augment": cfg.get("augment", "n/a"),
        "balance": cfg.get("balance", "n/a"),
        "seeds": ",".join(str(s) for s in seeds),
        "w_cls": loss.get("w_cls"),
        "w_bce": loss.get("w_bce"),
        "w_dice": loss.get("w_dice"),
    }


def checkpoints(run_dir: Path) -> dict[int, Path]:
    """``{seed: models/<run>/seed<s>.pt}`` (one checkpoint per trained seed), sorted by seed."""
    found = {int(p.stem[4:]): p for p in run_dir.glob("seed*.pt") if p.stem[4:].isdigit()}
    if not found:
        raise FileNotFoundError(f"{run_dir}: no seed<s>.pt checkpoint (run train@{run_dir.name} first)")
    return dict(sorted(found.items()))


def run_evaluation(
    name: str,
    ev: Evaluation,
    cfg: EvaluateConfig,
    scale: float,
    models_dir: Path = Path("models"),
    variants_dir: Path = Path("data/variants"),
    train_metrics_dir: Path = Path("metrics/train"),
    audit_dir: Path = Path("metrics/audit"),
    out_root: Path = EVAL_DIR,
    code_root: Path = Path("."),
    pretrained_dir: Path = Path("models/pretrained"),
    features_dir: Path = Path("data/features"),
) -> dict:
    """Score every ``models/<run>/seed<s>.pt`` on ``data/variants/<variant>/test`` and write every
    output. ``scale``: the data profile's ``split.scale`` (provenance). Returns the headline."""
    safe_name(f"evaluations.{name}", name)  # it names the output files and folder
    import torch

    from dfpipe.core.config import to_dict
    from dfpipe.evaluation.featuremaps import render_featuremaps
    from dfpipe.evaluation.leakage import leak_gap, read_flags
    from dfpipe.evaluation.masks import mask_evaluation
    from dfpipe.features.encoders import cache_dir
    from dfpipe.training.checkpoint import load_model
    from dfpipe.training.data import cache_kind, make_loader, open_split
    from dfpipe.training.device import select_device
    from dfpipe.training.engine import predict

    device = select_device(cfg.device)

    def predict_split(model, model_cfg, variant: str, split: str):
        kind = cache_kind(model_cfg) or model_cfg.input  # clip / lgrad inputs, landmarks beside the crops
        dataset = open_split(variants_dir / variant, split, model_cfg, cache_dir(features_dir, kind, variant))
        loader = make_loader(dataset, cfg.batch_size, train=False, num_workers=cfg.num_workers, seed=cfg.seed)
        return dataset, predict(model, loader, device, amp=cfg.amp, progress=False)

    video_thresholds: list[float | None] = []
    frames, masks, configs, thresholds, model = {}, {}, {}, {}, None
    manifests: dict[Path, pd.DataFrame] = {}  # test and val manifests, read once for every seed

    def manifest_of(path: Path) -> pd.DataFrame:
        if path not in manifests:
            manifests[path] = read_table(path, VARIANT_SCHEMA)
        return manifests[path]

    for s, ckpt in checkpoints(models_dir / ev.run).items():
        model, run_cfg = load_model(ckpt, device)
        if run_cfg.variant != ev.train_variant:
            raise ValueError(
                f"evaluations.{name}.train_variant is {ev.train_variant!r} but {ckpt} was "
                f"trained on {run_cfg.variant!r}"
            )
        configs[s] = to_dict(run_cfg)
        torch.manual_seed(cfg.seed)
        dataset, pred = predict_split(model, run_cfg.model, ev.variant, "test")
        manifest = manifest_of(dataset.manifest_path)
        frames[s] = align_predictions(manifest, pred["ids"], pred["labels"], pred["probs"], str(dataset.manifest_path))
        if "mask_probs" in pred:
            masks[s] = mask_evaluation(manifest, dataset.root, pred["ids"], pred["mask_probs"])
        # thresholds are chosen on the training variant's val split, never on the test items
        val_ds, val_pred = predict_split(model, run_cfg.model, ev.train_variant, "val")
        if run_cfg.model.num_classes == 2:  # binary detectors: a real-vs-fake threshold
            thresholds[str(s)] = M.val_threshold(*M.real_vs_fake(val_pred["labels"], val_pred["probs"]))
        val_frame = align_predictions(
            manifest_of(val_ds.manifest_path),
            val_pred["ids"],
            val_pred["labels"],
            val_pred["probs"],
            str(val_ds.manifest_path),
            with_groups=False,  # a threshold needs no resampling unit
        )
        video_thresholds.append(protocol.video_threshold(val_frame, prob_columns(val_frame)))
        val_labels = val_frame["label"].to_numpy(np.int64)
    headline, details = evaluate_seeds(frames, cfg.bootstrap, cfg.seed, cfg.ci_level)
    seeds = sorted(frames)
    curves_dir = train_metrics_dir / ev.run / "curves"
    curves = figures.read_curves(curves_dir)
    details["run"] = run_summary(ev, configs[seeds[0]], seeds, pretrained_dir, curves)
    details["run_config"] = configs[seeds[0]]
    if not dataset.is_image:  # provenance of cached encoder features (random = demo encoder)
        details["features"] = {k: dataset.cache.index[k] for k in ("encoder", "variant", "random", "config")}
    details["provenance"] = {
        "code": code_hash(Path("stages/evaluate.py"), code_root),
        "scale": scale,
        "variant": ev.variant,
        "train_variant": ev.train_variant,
        "seeds": seeds,
        "data": split_fingerprints(variants_dir, ev.variant, ev.train_variant),
    }
    items, probs = stack_seeds(frames)
    ffpp = protocol.protocol_metrics(
        items, probs, M.item_groups(items), video_thresholds, cfg.bootstrap, cfg.seed, cfg.ci_level
    )
    if ffpp is not None:  # the FF++ protocol: real vs manipulated on the video items alone
        details["ffpp"] = M.nan_to_none(ffpp)
    details["baselines"] = {
        "majority": majority_baseline(items["label"].to_numpy(np.int64), val_labels, probs.shape[2])
    }
    if thresholds:  # used by the unseen-generator table's accuracy (dfpipe.evaluation.unseen)
        details["val_threshold"] = thresholds
    if masks:
        details["mask"] = M.nan_to_none(
            {
                k: {m: stats.seed_summary([masks[s][k][m] for s in seeds]) for m in ("dice", "iou", "pbca")}
                | {"n": masks[seeds[0]][k]["n"]}
                for k in ("model", "all_zeros", "all_ones")
            }
        )
    if ev.variant == ev.train_variant:
        flags = read_flags(audit_dir / ev.variant / "test_items.parquet")
        details["leak"] = M.nan_to_none(
            leak_gap(
                items["id"].to_numpy(), items["label"].to_numpy(), probs, flags, cfg.bootstrap, cfg.seed, cfg.ci_level
            )
        )
    out_dir = out_root / name
    write_outputs(name, frames, headline, details, out_root / f"{name}.json", out_dir)
    figures.plot_training_curves(
        curves_dir, out_dir / "figures" / "training_curves.png", f"{ev.run} (trained on {ev.train_variant})"
    )
    if cfg.featuremap_per_class > 0 and dataset.is_image:  # no Grad-CAM on cached features
        assert model is not None  # set by the seed loop (checkpoints() is never empty)
        render_featuremaps(
            model,
            dataset,
            device,
            cfg.featuremap_layer,
            cfg.featuremap_per_class,
            cfg.seed,
            M.class_names(run_cfg.model.num_classes),
            out_dir / "figures" / "featuremaps.png",
            # model: the seed loop's last checkpoint (seed s)
            f"Grad-CAM of {ev.run} ({run_cfg.model.name}, input {run_cfg.model.input}, seed {s}) on {ev.variant} test",
        )
    return headline
