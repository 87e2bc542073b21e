"""The backdoor experiment's stage: attack success on the triggered test copy and the poisoning audit.

``backdoor@<experiment>`` (``params.yaml`` ``backdoor.experiments.<name>``) takes two runs of one
detector with identical settings, ``clean`` (trained on ``clean_variant``) and ``poisoned`` (on
``poisoned_variant``, a ``poison.<name>`` built from ``clean_variant``), both trained by
``train@`` like every run, and for every seed of each:

- scores the poisoned variant's triggered test copy (``<variant>/triggered/test``: the test items
  of the attacked class with the trigger) -> ``<out_dir>/<name>/triggered.parquet`` (one row per
  run role, seed and item; the attack success rate -- triggered items scored as the target class
  -- is computed from it by the report's ``backdoor`` table, with the group-level intervals);
- extracts the penultimate features (the input of the last linear layer) of the run's training
  items and runs the two reference-free audits of :mod:`dfpipe.evaluation.poison_audit` per
  training label: spectral signatures with ``eps`` = the poisoning rate and activation clustering.
  On the poisoned run the flags are scored against the manifest's planted ``poisoned`` column
  (precision / recall, in the target class where the planted items carry their training label,
  and over all classes); on the clean run every flag is a false positive.

Outputs: ``<out_dir>/<name>.json`` (settings, per-seed audit figures), ``<out_dir>/<name>/flags.parquet``
(role, seed, id, training label, planted flag, spectral score, both audits' flags) and
``triggered.parquet``. Clean accuracy and AUC are not recomputed here: they are the runs' own
``evaluate@`` predictions on the untouched test split.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ConfigDict, Field, model_validator

from dfpipe.core.config import Config, ConfigError, PlainName, RepoPath, SafeName, to_dict
from dfpipe.core.io import write_json
from dfpipe.core.manifest import LABELS, read_table
from dfpipe.evaluation.poison_audit import activation_clustering_flags, precision_recall, spectral_signature_flags
from dfpipe.evaluation.predictions import write_frame
from dfpipe.splits.poison import TRIGGERED, PoisonConfig

#: Run settings that may differ between the clean and the poisoned run of one experiment.
MAY_DIFFER = ("variant",)


class BackdoorExperiment(Config):
    """One experiment: the same detector trained on a variant and on its poisoned copy."""

    clean: PlainName  # run on clean_variant
    poisoned: PlainName  # run on poisoned_variant, every other setting equal to clean's
    clean_variant: PlainName
    poisoned_variant: PlainName  # a poison.<name> entry whose base is clean_variant


class BackdoorPaths(Config):
    """The two keys of ``train:`` this stage reads (checkpoints and variants); the others are ignored."""

    model_config = ConfigDict(**{**Config.model_config, "extra": "ignore"})

    models_dir: RepoPath
    variants_dir: RepoPath


class BackdoorConfig(Config):
    """``backdoor:`` section of params.yaml."""

    out_dir: RepoPath  # <out_dir>/<experiment>.json and <out_dir>/<experiment>/
    batch_size: int = Field(ge=1)
    ss_factor: float = Field(gt=0)  # spectral signatures flag ss_factor x rate of each class (Tran et al.: 1.5)
    ac_dims: int = Field(ge=1)  # activation clustering: components kept (Chen et al.: 10)
    ac_max_share: float = Field(gt=0, lt=0.5)  # flag the smaller cluster at most this share of its class
    experiments: dict[SafeName, BackdoorExperiment]

    @model_validator(mode="after")
    def _distinct(self) -> BackdoorConfig:
        for name, e in self.experiments.items():
            if e.clean == e.poisoned:
                raise ValueError(f"experiments.{name}: clean and poisoned name the same run {e.clean!r}")
        return self


def check_experiment(name: str, exp: BackdoorExperiment, runs: Mapping[str, Any], poison: PoisonConfig) -> None:
    """ConfigError unless the runs (``{"clean": RunConfig, "poisoned": RunConfig}``, as their
    checkpoints store them) train on the experiment's variants, the poisoned variant is built from
    the clean one, and the two runs' settings differ in nothing but :data:`MAY_DIFFER`."""
    key = f"backdoor.experiments.{name}"
    for role, variant in (("clean", exp.clean_variant), ("poisoned", exp.poisoned_variant)):
        if runs[role].variant != variant:
            raise ConfigError(
                f"{key}.{role}_variant: run {getattr(exp, role)!r} trained on {runs[role].variant!r}, not {variant!r}"
            )
    if poison.base != exp.clean_variant:
        raise ConfigError(
            f"{key}.poisoned_variant: poison.{exp.poisoned_variant} is built from {poison.base!r}, "
            f"not from clean_variant {exp.clean_variant!r}"
        )
    a, b = to_dict(runs["clean"]), to_dict(runs["poisoned"])
    differ = sorted(k for k in set(a) | set(b) if k not in MAY_DIFFER and a.get(k) != b.get(k))
    if differ:
        raise ConfigError(
            f"{key}: runs {exp.clean!r} and {exp.poisoned!r} differ in {differ}; a backdoor experiment "
            "trains the same detector on both variants"
        )


def penultimate(model, loader, device) -> tuple[np.ndarray, np.ndarray]:
    """``(ids (N,), features (N, D) float64)``: the input of the model's last ``nn.Linear`` (its
    classifier) for every item of ``loader``, in loader order."""
    import torch
    from torch import nn

    from dfpipe.training.engine import to_device

    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__}: no nn.Linear classifier to read penultimate features from")
    captured: list[torch.Tensor] = []
    handle = linears[-1].register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0].detach().float()))
    index = []
    model.eval()
    try:
        with torch.no_grad():
            for batch in loader:
                batch = to_device(batch, device, False)
                model(batch["image"])
                index.append(batch["index"])
    finally:
        handle.remove()
    idx = torch.cat(index).cpu().numpy()
    feats = torch.cat(captured).flatten(1).cpu().numpy().astype(np.float64)
    return np.asarray(loader.dataset.ids)[idx], feats


def audit_features(
    feats: np.ndarray, labels: np.ndarray, truth: np.ndarray, target: int, rate: float, cfg: BackdoorConfig
) -> tuple[dict, dict[str, np.ndarray]]:
    """Both audits on one seed's training features: ``(figures, per-item arrays)``."""
    ss_flags, ss_scores = spectral_signature_flags(feats, labels, rate, cfg.ss_factor)
    ac_flags, shares = activation_clustering_flags(feats, labels, cfg.ac_dims, cfg.ac_max_share)
    in_target = labels == target
    figures = {
        name: {
            "target_class": precision_recall(flags[in_target], truth[in_target]),
            "all_classes": precision_recall(flags, truth),
        }
        for name, flags in (("spectral_signatures", ss_flags), ("activation_clustering", ac_flags))
    }
    figures["activation_clustering"]["smaller_cluster_share"] = {LABELS[k]: v for k, v in shares.items()}
    return figures, {"ss_score": ss_scores, "ss_flag": ss_flags, "ac_flag": ac_flags}


def run_backdoor(
    name: str,
    exp: BackdoorExperiment,
    cfg: BackdoorConfig,
    poison: PoisonConfig,
    models_dir: Path,
    variants_dir: Path,
    device: str = "auto",
) -> dict:
    """Score, audit and write every output of ``backdoor@<name>``; return the JSON record."""
    import torch

    from dfpipe.evaluation.evaluate import align_predictions, checkpoints
    from dfpipe.training.checkpoint import load_model
    from dfpipe.training.data import make_loader, open_split
    from dfpipe.training.device import select_device
    from dfpipe.training.engine import predict

    dev = select_device(device)
    out = cfg.out_dir / name
    ckpts = {role: checkpoints(models_dir / getattr(exp, role)) for role in ("clean", "poisoned")}
    check_experiment(
        name, exp, {role: load_model(next(iter(c.values())), "cpu")[1] for role, c in ckpts.items()}, poison
    )
    trig_dir = variants_dir / exp.poisoned_variant / TRIGGERED
    trig_manifest = read_table(trig_dir / "test" / "manifest.parquet")
    record: dict[str, Any] = {
        "experiment": name,
        "clean_run": exp.clean,
        "poisoned_run": exp.poisoned,
        "clean_variant": exp.clean_variant,
        "poisoned_variant": exp.poisoned_variant,
        "poison": to_dict(poison),
        "audit": {"ss_factor": cfg.ss_factor, "ac_dims": cfg.ac_dims, "ac_max_share": cfg.ac_max_share},
        "triggered_items": int(len(trig_manifest)),
        "roles": {},
    }
    trig_frames, flag_frames = [], []
    for role, run, variant in (
        ("clean", exp.clean, exp.clean_variant),
        ("poisoned", exp.poisoned, exp.poisoned_variant),
    ):
        train_manifest = read_table(variants_dir / variant / "train" / "manifest.parquet").set_index("id")
        truth_col = train_manifest["poisoned"] if "poisoned" in train_manifest.columns else None
        frames, seeds_audit = {}, {}
        for seed, ckpt in ckpts[role].items():
            model, run_cfg = load_model(ckpt, dev)
            torch.manual_seed(0)
            ds = open_split(trig_dir, "test", run_cfg.model)
            pred = predict(
                model, make_loader(ds, cfg.batch_size, train=False, num_workers=0, seed=0), dev, progress=False
            )
            frames[seed] = align_predictions(trig_manifest, pred["ids"], pred["labels"], pred["probs"], str(trig_dir))
            train_ds = open_split(variants_dir / variant, "train", run_cfg.model)
            loader = make_loader(train_ds, cfg.batch_size, train=False, num_workers=0, seed=0)
            ids, feats = penultimate(model, loader, dev)
            labels = train_manifest.loc[ids, "label"].to_numpy(np.int64)  # the labels it was trained on
            truth = truth_col.loc[ids].to_numpy(bool) if truth_col is not None else np.zeros(len(ids), dtype=bool)
            figures, arrays = audit_features(feats, labels, truth, poison.target_label, poison.rate, cfg)
            seeds_audit[str(seed)] = figures
            flag_frames.append(
                pd.DataFrame(
                    {"role": role, "seed": np.int64(seed), "id": ids, "label": labels, "poisoned": truth, **arrays}
                )
            )
        trig_frames.append(pd.concat([f.assign(seed=np.int64(s)) for s, f in sorted(frames.items())]).assign(role=role))
        record["roles"][role] = {"run": run, "variant": variant, "seeds": sorted(frames), "audit": seeds_audit}
    trig = pd.concat(trig_frames, ignore_index=True)
    trig = trig[["role", "seed"] + [c for c in trig.columns if c not in ("role", "seed")]]
    write_frame(trig, out / "triggered.parquet")
    flags = pd.concat(flag_frames, ignore_index=True).sort_values(["role", "seed", "id"], kind="stable")
    write_frame(flags.reset_index(drop=True), out / "flags.parquet")
    write_json(cfg.out_dir / f"{name}.json", record)
    return record
