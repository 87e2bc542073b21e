"""The audit gate bound to the bytes it approved: the variant's fingerprint, and the check that training runs.

``<audit.out_dir>/<variant>/gate.json`` (written by ``audit@<variant>`` only when the checks the
variant declares pass) holds the audit's verdict (``variant``, ``leak_free``, ``status``) and
``fingerprint`` (:func:`variant_fingerprint`): the size and sha256 of every file of the variant
folder ``<split.out_dir>/<variant>/`` -- the train, val and test manifests, image and mask shards
and ``summary.json`` -- keyed by POSIX path relative to that folder, plus ``digest``, one sha256
over those entries. The audit stage takes the fingerprint *before* it reads the variant, so a
variant rewritten while it is audited does not match its gate.

Training calls :func:`require_gate` before it opens a split: no gate, a gate of another variant or
without a fingerprint, or any added, missing or changed file of the variant is a
:class:`GateRefused` whose one-line message says which (and names the differing files). Only a new
``audit@<variant>`` run approves a changed variant; a gate is never refreshed by training.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ConfigDict

from dfpipe.core.config import Config, RepoPath
from dfpipe.core.io import TEMP_GLOB, sha256_file

#: Differing files named in a refusal message (the rest are counted).
MAX_NAMED = 3


class GateConfig(Config):
    """Where the gates are: ``audit.out_dir``, the one key of ``params.yaml`` ``audit:`` that training reads.

    The other keys of the section are the audit stage's (validated strictly there by
    :class:`dfpipe.splits.audit.AuditConfig`) and are ignored here, so training neither imports
    the audit's probes nor reruns when their settings change.
    """

    model_config = ConfigDict(**{**Config.model_config, "extra": "ignore"})

    out_dir: RepoPath


class GateRefused(RuntimeError):
    """Training may not start: the variant has no gate, or is not the variant its gate approved."""


def gate_path(audit_dir: Path, variant: str) -> Path:
    """``<audit_dir>/<variant>/gate.json``."""
    return Path(audit_dir) / variant / "gate.json"


def variant_fingerprint(variant_dir: Path) -> dict[str, Any]:
    """``{"files": {relative path: {"bytes", "sha256"}}, "digest"}`` of every file under ``variant_dir``.

    Files are found recursively and sorted by relative POSIX path; temporaries of an unfinished
    write (``.*.tmp``, :func:`dfpipe.core.io.atomic_path`) are not part of a variant. ``digest`` is
    the sha256 of the lines ``<path>\\t<bytes>\\t<sha256>\\n``, so one byte changed, a file added or
    removed changes it. A missing folder is a :class:`GateRefused`.
    """
    variant_dir = Path(variant_dir)
    if not variant_dir.is_dir():
        raise GateRefused(f"variant folder {variant_dir} does not exist; run `dvc repro variant@{variant_dir.name}`")
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(variant_dir.rglob("*")):
        if not path.is_file() or fnmatch.fnmatch(path.name, TEMP_GLOB):
            continue
        rel = path.relative_to(variant_dir).as_posix()
        files[rel] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    return {"files": dict(sorted(files.items())), "digest": _digest(files)}


def _digest(files: Mapping[str, Mapping[str, Any]]) -> str:
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(f"{rel}\t{files[rel]['bytes']}\t{files[rel]['sha256']}\n".encode())
    return h.hexdigest()


def gate_record(verdict: Mapping[str, Any], fingerprint: Mapping[str, Any]) -> dict[str, Any]:
    """The gate file's content: the audit's verdict (:func:`dfpipe.splits.audit.check_gate`) and the
    fingerprint of the variant it audited."""
    return {**verdict, "fingerprint": dict(fingerprint)}


def fingerprint_changes(approved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """What differs between two fingerprints, as ``changed <path>`` / ``missing <path>`` /
    ``added <path>`` in path order; empty when they are equal."""
    old, new = approved.get("files") or {}, current.get("files") or {}
    out = []
    for rel in sorted(set(old) | set(new)):
        if rel not in new:
            out.append(f"missing {rel}")
        elif rel not in old:
            out.append(f"added {rel}")
        elif dict(old[rel]) != dict(new[rel]):
            out.append(f"changed {rel}")
    if not out and approved.get("digest") != current.get("digest"):
        out.append("digest differs")  # a hand-edited gate: entries equal, digest not
    return out


def require_gate(gate_file: Path | None, variant_dir: Path, variant: str) -> dict[str, Any]:
    """Return the gate record of ``variant`` when the variant on disk is the one it approved.

    Raises :class:`GateRefused` with a one-line reason when ``gate_file`` is ``None`` or absent,
    unreadable, of another variant, without a fingerprint, or when the fingerprint of
    ``variant_dir`` now differs from the recorded one.
    """
    rerun = f"run `dvc repro audit@{variant}`"
    if gate_file is None:
        raise GateRefused(
            f"no audit gate given for variant {variant!r}; training needs <audit.out_dir>/{variant}/gate.json"
        )
    gate_file = Path(gate_file)
    if not gate_file.is_file():
        raise GateRefused(
            f"no audit gate {gate_file} for variant {variant!r} (the audit never passed it, or "
            f"failed its declared checks); {rerun}"
        )
    try:
        record = json.loads(gate_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GateRefused(f"audit gate {gate_file} is not valid JSON ({exc}); {rerun}") from None
    if not isinstance(record, dict) or record.get("variant") != variant:
        got = record.get("variant") if isinstance(record, dict) else record
        raise GateRefused(f"audit gate {gate_file} approves variant {got!r}, not {variant!r}; {rerun}")
    approved = record.get("fingerprint")
    if not isinstance(approved, dict) or not isinstance(approved.get("files"), dict):
        raise GateRefused(
            f"audit gate {gate_file} records no fingerprint of variant {variant!r} (written by an older audit); {rerun}"
        )
    changes = fingerprint_changes(approved, variant_fingerprint(variant_dir))
    if changes:
        named = "; ".join(changes[:MAX_NAMED]) + (
            f"; and {len(changes) - MAX_NAMED} more" if len(changes) > MAX_NAMED else ""
        )
        raise GateRefused(
            f"variant {variant!r} on disk ({variant_dir}) differs from what its audit gate "
            f"{gate_file} approved: {named}; {rerun}"
        )
    return record
