"""Published-setting records: what each detector's paper ran, and the one check of a run against it.

A model file declares its paper's settings as a :class:`PaperRecord` and passes it to
:func:`~dfpipe.models.registry.register_model` (``paper=``), so the registry stays the only list
of models and a detector's record sits beside its network. :func:`run_settings` reads the
paper-comparable settings of a run from its plain run config (a checkpoint's ``config``, or
``details.json`` ``run_config``) plus, for cached-feature inputs, the encoder config the features
came from; :func:`paper_differences` compares them with the record. The results tables' "Differs
from paper" column, docs/full_scale.md's table and the test that the full-scale profile runs each
detector as its paper did all call this one check.

Setting values are written in this project's terms (the ``pretrained@`` key of an ImageNet start,
``blur_jpeg`` for "Blur+JPEG (0.5)"); a paper value ``None`` means the paper and its code do not fix
it, and it is not compared.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .registry import SETTING_KEYS, PaperRecord, model_capabilities, paper_record

#: The results tables' column and its note (every results table carries both).
PAPER_COLUMN = "Differs from paper"
PAPER_NOTE = (
    "Differs from paper: the row's run (the checkpoint's own config, and the encoder config of cached "
    "features) checked against its detector's paper record (dfpipe.models.papers: init, network, input "
    "geometry, encoder, augmentation, optimizer, lr, batch, epochs, schedule, head); each entry is "
    "'setting this run (paper value)'; none: as the paper ran it; no paper: the group's own detector; no settings "
    "record: a detector that follows the cited paper, whose training settings no record states (not checked)."
)


def schedule_label(cfg: Mapping[str, Any]) -> str:
    """A run's learning-rate schedule in words: ``none``, ``cosine``, ``step x0.9 every 10``,
    ``x0.1 after 5 epochs w/o val gain, until 1e-06``."""
    kind = cfg.get("schedule", "none")
    if kind == "step":
        return f"step x{cfg.get('gamma')} every {cfg.get('step_size')}"
    if kind == "plateau":
        return f"x{cfg.get('gamma')} after {cfg.get('step_size')} epochs w/o val gain, until {cfg.get('min_lr', 0.0):g}"
    return str(kind)


def head_label(num_classes: int, head: str = "softmax") -> str:
    """The classification head and its loss (a binary model's ``head``, :mod:`.class_head`):
    ``1 logit, BCE`` or ``K logits, softmax CE``."""
    return "1 logit, BCE" if head == "sigmoid" else f"{num_classes} logits, softmax CE"


def input_label(geometry: str, size: int, resize: int | None = None) -> str:
    """Input geometry in words: ``resize 224``, ``random crop 224``, ``resize 256, centre crop 224``."""
    pre = f"resize {resize}, " if resize else ""
    return {
        "resize": f"resize {size}",
        "random_crop": f"{pre}random crop {size}",
        "center_crop": f"{pre}centre crop {size}",
        "full": f"{pre}full image",
    }[geometry]


def _encoder_settings(model: Mapping[str, Any], features: Mapping[str, Any] | None) -> dict[str, Any]:
    """Encoder settings of a cached-feature input (``clip`` / ``lgrad``) from the encoder config."""
    kind = model.get("input", "raw")
    if kind not in ("clip", "lgrad"):
        return {}
    if not features:
        return {"encoder": "n/a", "encoder_size": "n/a"}
    enc = features
    size = enc.get("image_size")
    views = int(enc.get("train_views", 0))
    crop = enc.get("center_crop", False)
    test = f"centre crop {size}" if crop else f"resize {size}"
    out: dict[str, Any] = {
        "encoder_size": size,
        # augmented views crop at random (from a larger stored crop) and blur / JPEG / flip
        "train_input": (f"random crop {size}" if crop else f"resize {size}") if views else test,
        "test_input": test,
        "augment": "blur_jpeg + flip" if views else "none (clean features cached)",
    }
    if kind == "clip":
        if enc.get("weights") is None:
            out["encoder"] = "random ViT (demo)"
        else:
            out["encoder"] = f"{enc.get('arch')} {'OpenAI CLIP' if enc.get('openai', False) else 'open_clip file'}"
        out["activation"] = "QuickGELU" if enc.get("openai", False) and enc.get("weights") else "GELU"
    else:
        out["encoder"] = {
            "random_cnn": "random CNN (demo)",
            "resnet50": "ImageNet ResNet-50",
            "torchscript": "TorchScript model",
            "stylegan_discriminator": "StyleGAN discriminator",
        }.get(str(enc.get("arch")), str(enc.get("arch")))
        out["gradients"] = "per image" if enc.get("per_image", False) else "per batch"
    return out


def run_settings(cfg: Mapping[str, Any], features: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The paper-comparable settings (:data:`SETTING_KEYS`) of one run, from its plain run config
    ``cfg`` (``runs.<run>`` merged, as a checkpoint stores it) and, for ``clip`` / ``lgrad`` inputs,
    the config of the encoder that made its features (``features.encoders.<input>``)."""
    model = cfg["model"]
    width = float(model.get("width", 1.0))
    network = "reduced" if model.get("reduced", False) else "full"
    if width != 1.0:
        network += f" x{width:g}"
    size = int(model.get("image_size", 0))
    train_geo = model.get("train_input", "resize")
    test_geo = model.get("test_input", "resize")
    resize = model.get("resize_to") or None
    augment = str(cfg.get("augment", "none"))
    if cfg.get("flip", False) and model.get("input", "raw") not in ("clip", "lgrad"):
        augment = "flip" if augment == "none" else f"{augment} + flip"
    out: dict[str, Any] = {
        "init": cfg.get("init", "n/a"),
        "network": network,
        "image_size": size,
        "train_input": input_label(train_geo, size, resize),
        "test_input": input_label(test_geo, size, resize),
        "augment": augment,
        "optimizer": cfg.get("optimizer", "n/a"),
        "lr": cfg.get("lr"),
        "batch_size": cfg.get("batch_size"),
        "epochs": cfg.get("epochs"),
        "schedule": schedule_label(cfg),
        "head": head_label(int(model.get("num_classes", 2)), str(model.get("head", "softmax"))),
    }
    out.update(_encoder_settings(model, features))
    return out


def _same(paper: Any, ours: Any) -> bool:
    if isinstance(paper, float) or isinstance(ours, float):
        try:
            return abs(float(paper) - float(ours)) <= 1e-12 * max(1.0, abs(float(paper)))
        except (TypeError, ValueError):
            return False
    return paper == ours


def paper_differences(
    record: PaperRecord, cfg: Mapping[str, Any], features: Mapping[str, Any] | None = None
) -> list[tuple[str, Any, Any]]:
    """``[(setting, paper value, run value)]`` where the run ``cfg`` differs from ``record`` (its
    model's :func:`~dfpipe.models.registry.paper_record`); settings the paper leaves open are skipped."""
    ours = run_settings(cfg, features)
    return [
        (k, record.settings[k], ours.get(k, "n/a"))
        for k in SETTING_KEYS
        if k in record.settings and record.settings[k] is not None and not _same(record.settings[k], ours.get(k, "n/a"))
    ]


def fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def differs_text(diffs: list[tuple[str, Any, Any]]) -> str:
    """``none`` or ``lr 0.02 (paper 0.0002); init scratch (paper resnet50_imagenet)``."""
    return "; ".join(f"{k} {fmt_value(o)} (paper {fmt_value(p)})" for k, p, o in diffs) or "none"


def paper_cell(cfg: Mapping[str, Any] | None, features: Mapping[str, Any] | None = None) -> str:
    """A results table's "Differs from paper" cell for a plain run config (``details.json``
    ``run_config``) and its encoder config (``details.json`` ``features.config``): what
    :func:`differs_text` says, ``no paper (the group's own)``, ``no settings record (<paper>: ...)``
    for a model that follows a paper no settings record states, or ``–`` without a run config (not a
    trained detector of the registry, e.g. Frank et al.'s linear baseline)."""
    if not cfg or "model" not in cfg:
        return "–"
    record = paper_record(cfg["model"]["name"])
    if record is None:
        cites = model_capabilities(cfg["model"]["name"]).cites
        return f"no settings record ({cites}: settings not checked)" if cites else "no paper (the group's own)"
    return differs_text(paper_differences(record, cfg, features))


#: One run per detector with a paper record, as docs/full_scale.md tabulates them: each paper's own
#: task (NPR's binary real/fake run ``ug_npr``; the three-class ``npr`` run is the group's task).
DOC_RUNS = ("ug_npr", "ug_cnndetection", "ug_ufd", "ug_lgrad", "f3net_mix_full", "f3net_baseline")


def run_and_features(params: Mapping[str, Any], run: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``runs.<run>`` of a loaded params mapping as its checkpoint would store it (merged over
    ``run_defaults``, validated, dumped) and the encoder config of its cached features, if any."""
    from dfpipe.core.config import build, merged_entry, to_dict

    from .registry import model_settings

    entry = merged_entry(params, "runs", run)
    entry["model"] = to_dict(build(model_settings(), entry["model"], where=f"runs.{run}.model"))
    kind = entry["model"].get("input", "raw")
    encoders = (params.get("features") or {}).get("encoders") or {}
    return entry, (dict(encoders[kind]) if kind in encoders else None)


def paper_table(demo: Mapping[str, Any], full: Mapping[str, Any], runs: tuple[str, ...] = DOC_RUNS) -> str:
    """Markdown: detector (run) x setting -> paper value, full-profile value, demo value, and
    whether the full profile differs (``≠``)."""
    lines = [
        "| Detector (run) | Setting | Paper | Full profile | Demo | Full ≠ paper |",
        "|:---|:---|:---|:---|:---|:---:|",
    ]
    for run in runs:
        cfg_full, feat_full = run_and_features(full, run)
        cfg_demo, feat_demo = run_and_features(demo, run)
        record = paper_record(cfg_full["model"]["name"])
        if record is None:
            continue
        ours_full, ours_demo = run_settings(cfg_full, feat_full), run_settings(cfg_demo, feat_demo)
        off = {k for k, _, _ in paper_differences(record, cfg_full, feat_full)}
        label = f"{cfg_full['model']['name']} ({run})"
        for k in SETTING_KEYS:
            if k not in record.settings:
                continue
            paper = "not fixed" if record.settings[k] is None else fmt_value(record.settings[k])
            row = [label, k, paper, fmt_value(ours_full.get(k, "n/a")), fmt_value(ours_demo.get(k, "n/a"))]
            lines.append("| " + " | ".join(row + ["≠" if k in off else ""]) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    """Print :func:`paper_table` for params.yaml (demo) and params.yaml with params.full.yaml merged
    over it (the profile's deep merge, ``dfpipe.core.profile``; not imported here, so a profile
    change does not touch the import closure of the stages that read the records)."""
    from dfpipe.core.config import deep_merge, load_yaml

    demo = load_yaml("params.yaml")
    print(paper_table(demo, deep_merge(demo, load_yaml("params.full.yaml"))), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
