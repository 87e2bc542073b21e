"""Pretrained backbone weights as pinned, DVC-tracked inputs, and a run's ``init`` applied to a model.

``params.yaml`` ``pretrained.weights.<name>`` names one file of ImageNet weights; the stage
``pretrained@<name>`` (opt-in: only names listed in ``pretrained.fetch``) obtains it and writes
``<out_dir>/<name>.pt``, a byte copy of the verified file:

1. ``local`` (a path inside the repository) when that file exists: copied, never downloaded;
2. otherwise the download URL of ``source``, read from the installed package's own metadata so the
   URL is the one the library itself would use: ``torchvision:ResNet18_Weights.IMAGENET1K_V1``
   (``WeightsEnum.url``), ``timm:legacy_xception.tf_in1k`` (``pretrained_cfg.url``), or
   ``url:https://...``.

The file's SHA-256 must start with ``sha256`` (a full 64-hex digest, or a prefix of >= 8 hex digits:
torchvision and Cadene/timm put the first digits of the file's SHA-256 in its name, e.g.
``resnet18-f37072fd.pth``, and ``torch.hub`` checks exactly that prefix). Pin the full digest the
stage prints once you have the file. Offline, the stage fails with a message naming the file to
place at ``local``.

:func:`apply_init` loads ``<out_dir>/<init>.pt`` into a built detector with
:func:`dfpipe.models.common.load_weights` (key matching into ``pretrained_targets()``, the first
conv fitted to 12-channel FAD / 6-channel LFS input by repeating the RGB kernel, 1000-class fc and
other shape mismatches skipped) and returns the report as a JSON-able dict.
"""

from __future__ import annotations

import re
import shutil
import urllib.error
from pathlib import Path
from typing import cast

from pydantic import model_validator
from torch import nn

from dfpipe.core.assets import download
from dfpipe.core.config import Config, PlainName, RepoPath
from dfpipe.core.io import atomic_path, resolve_inside, sha256_file

SCRATCH = "scratch"
_HEX = re.compile(r"^[0-9a-f]{8,64}$")


class PretrainedError(RuntimeError):
    """The weights cannot be obtained or do not match their pinned hash."""


class WeightsSpec(Config):
    """One entry of ``params.yaml`` ``pretrained.weights``."""

    arch: PlainName  # detector family the file fits: resnet18 | resnet50 | xception
    source: str  # torchvision:<Enum>.<member> | timm:<model>.<tag> | url:<https://...>
    sha256: str  # full digest or a prefix of >= 8 lowercase hex digits
    local: RepoPath | None = None  # a file provided by hand (copied when it exists; offline use)

    @model_validator(mode="after")
    def _check(self) -> WeightsSpec:
        if not _HEX.match(self.sha256):
            raise ValueError(f"sha256 must be 8-64 lowercase hex digits, got {self.sha256!r}")
        kind = self.source.split(":", 1)[0]
        if kind not in ("torchvision", "timm", "url") or ":" not in self.source:
            raise ValueError(
                f"source must be torchvision:<Enum>.<member>, timm:<model>.<tag> or url:<https://...>, "
                f"got {self.source!r}"
            )
        return self


class PretrainedConfig(Config):
    """``params.yaml`` ``pretrained:``."""

    out_dir: RepoPath  # <out_dir>/<name>.pt
    fetch: tuple[str, ...]  # names with a pretrained@<name> stage (opt-in)
    weights: dict[PlainName, WeightsSpec]

    @model_validator(mode="after")
    def _check(self) -> PretrainedConfig:
        unknown = sorted(set(self.fetch) - set(self.weights))
        if unknown:
            raise ValueError(f"fetch names {unknown} not under weights (known: {sorted(self.weights)})")
        if SCRATCH in self.weights:
            raise ValueError(f"'{SCRATCH}' is reserved for random initialisation")
        return self


def source_url(source: str) -> str:
    """Download URL of ``source`` from the installed torchvision / timm metadata (or the URL itself)."""
    kind, _, ref = source.partition(":")
    if kind == "url":
        return ref
    if kind == "torchvision":
        import torchvision.models

        enum_name, _, member = ref.partition(".")
        try:
            return getattr(getattr(torchvision.models, enum_name), member).url
        except AttributeError as exc:
            raise PretrainedError(f"torchvision has no weights {ref!r} (e.g. ResNet18_Weights.IMAGENET1K_V1)") from exc
    if kind == "timm":
        import timm

        cfg = timm.models.get_pretrained_cfg(ref)
        if cfg is None or not cfg.url:
            raise PretrainedError(f"timm has no download URL for {ref!r} (e.g. legacy_xception.tf_in1k)")
        # PretrainedCfg.url also admits a (url, revision) tuple; timm's own cfgs hold plain strings
        return cast(str, cfg.url)
    raise PretrainedError(f"unknown source kind {kind!r}")


def obtain(name: str, spec: WeightsSpec, out_dir: Path, timeout: float = 60.0) -> dict:
    """Write ``<out_dir>/<name>.pt`` (verified copy of the local file or the download); return a record.

    Raises :class:`PretrainedError` naming the file to provide when offline or the hash differs;
    nothing is left at the output path then.
    """
    out = resolve_inside(out_dir, f"{name}.pt")
    with atomic_path(out) as tmp:
        if spec.local is not None and spec.local.is_file():
            shutil.copyfile(spec.local, tmp)
            origin = f"local:{spec.local.as_posix()}"
        else:
            url = source_url(spec.source)
            try:
                download(url, Path(tmp), timeout)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                where = (
                    spec.local.as_posix()
                    if spec.local is not None
                    else f"a path set as pretrained.weights.{name}.local"
                )
                raise PretrainedError(
                    f"pretrained@{name}: cannot download {url} ({exc}). Offline: download that file elsewhere and "
                    f"place it at {where} (its sha256 must start with {spec.sha256}), then re-run."
                ) from exc
            origin = url
        digest = sha256_file(Path(tmp))
        if not digest.startswith(spec.sha256):
            raise PretrainedError(
                f"pretrained@{name}: {origin} has sha256 {digest}, pinned {spec.sha256}; "
                "wrong or corrupt file (the output was not written)"
            )
    return {"name": name, "arch": spec.arch, "origin": origin, "sha256": digest, "bytes": out.stat().st_size}


def weights_path(init: str, out_dir: Path) -> Path | None:
    """``<out_dir>/<init>.pt`` for a weights key, ``None`` for ``scratch``."""
    return None if init == SCRATCH else resolve_inside(out_dir, f"{init}.pt")


def apply_init(model: nn.Module, init: str, out_dir: Path) -> dict:
    """Load run ``init`` (``scratch`` or a ``pretrained.weights`` key) into ``model``; report what loaded.

    Returns ``{"init", "file", "loaded": {target: n}, "adapted": [...], "missing": {target: [...]},
    "unexpected": [...], "shape_mismatch": [...]}`` (``file`` etc. absent for ``scratch``). A missing
    file is a ``FileNotFoundError`` naming the stage that makes it.
    """
    from dfpipe.models.common import load_weights

    path = weights_path(init, out_dir)
    if path is None:
        return {"init": SCRATCH}
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: pretrained weights of init {init!r} not found; list {init!r} in "
            f"params.yaml pretrained.fetch and run `dvc repro pretrained@{init}`"
        )
    rep = load_weights(model, path)
    return {
        "init": init,
        "file": (Path(out_dir) / f"{init}.pt").as_posix(),  # relative, as given: reports stay portable
        "loaded": dict(sorted(rep.loaded.items())),
        "adapted": sorted(rep.adapted),
        "missing": {k: list(v) for k, v in sorted(rep.missing.items())},
        "unexpected": list(rep.unexpected),
        "shape_mismatch": list(rep.shape_mismatch),
    }
