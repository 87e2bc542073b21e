"""Feature-map views of a trained classifier: Grad-CAM and mean activation of a middle layer.

Answers the notes' open question (seed 002, Part 4): "visualise the middle feature map to see why
the CNN classifies perfectly". For a few test images per class the grid shows the input, the
Grad-CAM of the true class (Selvaraju et al., "Grad-CAM", ICCV 2017: ReLU of the activation maps
weighted by their spatially averaged gradients) and the channel-mean activation magnitude.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dfpipe.models.class_head import class_logits, class_probs


def find_layer(model: nn.Module, name: str, example: torch.Tensor | None = None) -> tuple[str, nn.Module]:
    """The module to hook: ``name`` is a dotted module path (``"backbone.layer3"``) or ``"auto"``.

    ``"auto"`` runs ``example`` (``(B, 3, H, W)``, needed then) through the model and picks the
    last ``nn.Conv2d`` to run whose output stride is the largest one <= 16, leaving out 1x1
    strided projections (ResNet ``downsample``, Xception ``skip``). Stride 16 is ResNet's
    ``layer3`` / Xception's middle flow: the "middle feature map" of the notes, semantic yet
    still spatial (a 14x14 map at 224 px). Unknown names raise ``ValueError`` listing candidates.
    """
    modules = dict(model.named_modules())
    convs = {n: m for n, m in modules.items() if isinstance(m, nn.Conv2d)}
    if name != "auto":
        if name not in modules:
            raise ValueError(f"layer '{name}' not in the model; conv layers: {list(convs)[:40]}")
        return name, modules[name]
    if example is None:
        raise ValueError("layer 'auto' needs an example input to measure feature-map strides")
    order: list[tuple[str, int]] = []

    def record(layer_name):
        def hook(_m, _inp, out):
            order.append((layer_name, example.shape[-1] // max(1, out.shape[-1])))

        return hook

    handles = [
        m.register_forward_hook(record(n))
        for n, m in convs.items()
        if not (m.kernel_size == (1, 1) and m.stride != (1, 1))
    ]
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    usable = [(n, st) for n, st in order if st <= 16]
    if not usable:
        raise ValueError("layer 'auto': no Conv2d with output stride <= 16 ran in the forward pass")
    best = max(st for _, st in usable)
    chosen = [n for n, st in usable if st == best][-1]
    return chosen, modules[chosen]


def _logits(output) -> torch.Tensor:
    return output["logits"] if isinstance(output, dict) else output


def gradcam(model: nn.Module, images: torch.Tensor, layer: nn.Module, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Grad-CAM and mean activation of ``layer`` for ``target`` classes.

    Args:
        model: classifier returning logits ``(B, K)`` or ``{"logits": (B, K), ...}``.
        images: float ``(B, 3, H, W)`` in [0, 1] (the model's input contract).
        layer: a module of ``model`` whose output is a 4-D map ``(B, C, h, w)``.
        target: ``(B,)`` int64 class whose logit is explained (a single-logit head's class logits
            are ``[-z / 2, z / 2]``, :func:`~dfpipe.models.class_head.class_logits`).

    Returns ``{"cam": (B, H, W), "activation": (B, H, W), "logits": (B, K)}`` float32 on CPU;
    ``cam`` and ``activation`` are upsampled (bilinear) to the input size and scaled to [0, 1] per
    image (an all-zero map stays zero). The model is put in eval mode; its parameters' ``.grad`` stay untouched.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    store: dict[str, torch.Tensor] = {}

    def hook(_m, _inp, out):
        if not isinstance(out, torch.Tensor) or out.ndim != 4:
            raise ValueError(
                f"hooked layer must output a (B, C, h, w) tensor, got {type(out).__name__} {getattr(out, 'shape', '')}"
            )
        store["act"] = out

    model.eval()
    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            x = images.detach().clone().requires_grad_(True)  # grads flow even into frozen layers
            logits = _logits(model(x))
            if "act" not in store:
                raise ValueError("the hooked layer did not run in the forward pass")
            chosen = class_logits(logits).gather(1, target.view(-1, 1).to(logits.device)).sum()
            # gradient w.r.t. the activation only: no .grad is written into the model's weights
            (grad,) = torch.autograd.grad(chosen, store["act"])
    finally:
        handle.remove()
    act = store["act"].detach()
    weights = grad.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1): Grad-CAM's alpha_k^c
    cam = F.relu((weights * act).sum(1, keepdim=True))
    mean_act = act.abs().mean(1, keepdim=True)
    size = images.shape[-2:]
    return {
        "cam": _normalise(F.interpolate(cam, size=size, mode="bilinear", align_corners=False)),
        "activation": _normalise(F.interpolate(mean_act, size=size, mode="bilinear", align_corners=False)),
        "logits": logits.detach().float().cpu(),
    }


def _normalise(maps: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` -> ``(B, H, W)`` scaled to [0, 1] per image."""
    maps = maps[:, 0].float().cpu()
    lo = maps.flatten(1).min(1).values.view(-1, 1, 1)
    hi = maps.flatten(1).max(1).values.view(-1, 1, 1)
    span = hi - lo
    return torch.where(span > 0, (maps - lo) / torch.where(span > 0, span, 1.0), torch.zeros_like(maps))


def pick_examples(labels: np.ndarray, ids: Sequence[str], per_class: int, seed: int, num_classes: int) -> np.ndarray:
    """Row indices of up to ``per_class`` items of each class, ordered by class then id.

    Drawn with a seeded generator from the id-sorted rows of each class, so the choice depends
    only on the data and the seed.
    """
    labels = np.asarray(labels)
    id_arr = np.asarray(ids).astype(str)
    rng = np.random.default_rng(seed)
    chosen = []
    for c in range(num_classes):
        rows = np.flatnonzero(labels == c)
        rows = rows[np.argsort(id_arr[rows], kind="stable")]
        if len(rows) > per_class:
            rows = np.sort(rng.choice(rows, size=per_class, replace=False))
            rows = rows[np.argsort(id_arr[rows], kind="stable")]
        chosen.extend(rows.tolist())
    return np.asarray(chosen, dtype=np.int64)


def render_featuremaps(
    model: nn.Module,
    dataset,
    device: torch.device,
    layer: str,
    per_class: int,
    seed: int,
    class_names: Sequence[str],
    path: Path,
    model_title: str,
) -> None:
    """Grad-CAM grid of ``per_class`` test items per class of ``dataset`` (a
    :class:`dfpipe.training.data.VariantDataset`: ``labels``, ``ids``, items ``{"image": (3, S, S)
    uint8}``), written by :func:`dfpipe.evaluation.figures.plot_featuremap_grid`, titled with
    ``model_title`` (which model) and what each row's ``p`` is."""
    from dfpipe.evaluation.figures import plot_featuremap_grid

    rows = pick_examples(dataset.labels, dataset.ids, per_class, seed, len(class_names))
    images = torch.stack([dataset[int(i)]["image"] for i in rows])  # (B, 3, S, S) uint8
    x = images.float().div(255).to(device)
    layer_name, module = find_layer(model, layer, x[:1])  # strides need one image, not the grid
    maps = gradcam(model, x, module, torch.as_tensor(dataset.labels[rows], device=device))
    p = class_probs(maps["logits"]).numpy()
    titles = [
        f"{dataset.ids[i].split('/')[0]} {class_names[dataset.labels[i]]}\np={p[j, dataset.labels[i]]:.2f}"
        for j, i in enumerate(rows)
    ]
    plot_featuremap_grid(
        path,
        images.permute(0, 2, 3, 1).numpy(),
        maps["cam"].numpy(),
        maps["activation"].numpy(),
        titles,
        layer_name,
        f"{model_title}\nrow label: source, true class; p = the model's softmax probability of the true class",
    )
