"""Which evaluations exist: every run scored on its own variant, plus the exceptions params.yaml lists.

``evaluate@<run>`` scores run ``<run>`` on the test split of the variant it was trained on
(``runs.<run>.variant``); nothing about it is written in params.yaml. ``evaluations.<name> =
{run, variant}`` adds an evaluation that scores a run on another variant (a cross-variant or
cross-dataset row); its ``train_variant`` (whose val split gives the thresholds) is always the
run's own variant, so it is derived, never written. dvc.yaml's ``evaluate`` foreach is this
module's :func:`resolved_evaluations`, written by ``python -m dfpipe.pipeline.dvcfile --write``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dfpipe.core.config import PARAMS_FILE, Config, ConfigError, PlainName, build, load_yaml, merged_entry


class Evaluation(Config):
    """One resolved evaluation: ``run`` scored on ``variant``'s test split.

    ``train_variant`` is the variant the run was trained on (checked against each checkpoint's
    config); the leak measure (a) applies when it equals ``variant``.
    """

    run: PlainName
    variant: PlainName
    train_variant: PlainName


class EvaluationEntry(Config):
    """One ``evaluations.<name>`` entry of params.yaml (an exception to "own run, own variant")."""

    run: PlainName
    variant: PlainName


def resolved_evaluations(params: Mapping[str, Any], where: str = PARAMS_FILE) -> dict[str, dict[str, str]]:
    """Evaluation name -> ``{run, variant, train_variant}``: one per run (its own name, its own
    variant) in ``runs:`` order, then the ``evaluations:`` entries in their order.

    Raises :class:`ConfigError` naming the dotted key for an entry that names an unknown run,
    reuses a run's name, or holds a key other than ``run`` and ``variant``.
    """
    runs = params.get("runs") or {}
    out: dict[str, dict[str, str]] = {}
    for run in runs:
        variant = merged_entry(params, "runs", run, where=where).get("variant")
        if not isinstance(variant, str):
            raise ConfigError(f"runs.{run}.variant: missing ({where})")
        out[run] = {"run": run, "variant": variant, "train_variant": variant}
    extra = params.get("evaluations") or {}
    if not isinstance(extra, Mapping):
        raise ConfigError(f"evaluations: must be a mapping of named entries ({where})")
    for name in extra:
        key = f"evaluations.{name}"
        entry = build(EvaluationEntry, merged_entry(params, "evaluations", name, where=where), where=key)
        if name in runs:
            raise ConfigError(
                f"{key}: evaluate@{name} already scores run {name} on its own variant; "
                "give a cross-variant evaluation its own name"
            )
        if entry.run not in runs:
            raise ConfigError(f"{key}.run: no run {entry.run!r} under runs: ({sorted(runs)})")
        out[name] = {"run": entry.run, "variant": entry.variant, "train_variant": out[entry.run]["variant"]}
    return out


def decisive_key(name: str, evaluation: Mapping[str, str]) -> str:
    """The params.yaml key that decides which run evaluation ``name`` (an entry of
    :func:`resolved_evaluations`) scores on which variant: ``runs.<run>.variant`` for a run on its
    own variant, ``evaluations.<name>`` for an exception."""
    return f"runs.{name}.variant" if name == evaluation["run"] else f"evaluations.{name}"


def load_evaluation(name: str, path: str | Path = PARAMS_FILE) -> Evaluation:
    """The resolved evaluation ``name``; a :class:`ConfigError` listing the known names otherwise."""
    known = resolved_evaluations(load_yaml(path), where=str(path))
    if name not in known:
        raise ConfigError(f"evaluations.{name}: no such evaluation (runs and evaluations: {sorted(known)})")
    return build(Evaluation, known[name], where=f"evaluations.{name}")
