"""Raw data sources declared in ``params.yaml`` and the items (images, videos) they hold.

A source is one folder of one kind with one label:

- ``image_folder``: ``<path>/**/*.{png,jpg,jpeg}`` (FFHQ, a GAN's samples);
- ``ffpp``: one FaceForensics++ subtree (``original_sequences/youtube`` or
  ``manipulated_sequences/<Method>``): videos at ``<path>/<compression>/videos/*.mp4``, masks (when
  ``masks: true``) at ``<path>/masks/videos/<same name>.mp4``;
- ``video_folder``: ``<path>/**/*.{mp4,avi,mov,mkv,webm}``.

Listings are sorted by relative POSIX path (never ``os.listdir`` order: the notes' leak). Files
that do not fit the kind are not skipped silently: they come back as :class:`Reject` records.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from pydantic import model_validator

from dfpipe.core.config import Config, RepoPath, SafeName
from dfpipe.core.io import resolve_inside

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")

# FaceForensics++ file stems: originals "071", fakes "<target>_<source>" = "071_054";
# DeepFakeDetection (Google/Jigsaw) "01_02__meeting_serious__YVGY8LOK" (fake: target, source
# actors) and originals "01__meeting_serious".
_FFPP_ORIGINAL = re.compile(r"^(\d{3})$")
_FFPP_FAKE = re.compile(r"^(\d{3})_(\d{3})$")
_DFD_FAKE = re.compile(r"^(\d{2})_(\d{2})__")
_DFD_ORIGINAL = re.compile(r"^(\d{2})__")


class SourceConfig(Config):
    """One entry of ``sources:`` in params.yaml."""

    kind: Literal["image_folder", "ffpp", "video_folder"]
    path: RepoPath                  # relative to the repository root, inside it
    label: Literal[0, 1, 2]         # 0 real, 1 fake (generated), 2 edited
    method: SafeName                # "ffhq", generator or manipulation name; prefixes group keys
    mode: Literal["raw", "crop", "crop_seg"]
    sampling: Optional[Literal["every_nth", "per_video"]] = None  # videos only
    compression: str = "c23"        # ffpp only: c0 / c23 / c40
    masks: bool = False             # ffpp only: read <path>/masks/videos/<name>.mp4
    group_pattern: Optional[str] = None  # regex; group 1 of a match on the file stem = identity

    @model_validator(mode="after")
    def _per_kind(self) -> "SourceConfig":
        is_video = self.kind in ("ffpp", "video_folder")
        if is_video and self.sampling is None:
            raise ValueError(f"kind {self.kind} needs sampling: every_nth or per_video")
        if not is_video and self.sampling is not None:
            raise ValueError("sampling applies to video sources only; remove it for an image_folder")
        if self.masks and self.kind != "ffpp":
            raise ValueError("masks: true is only defined for kind ffpp (<path>/masks/videos)")
        if self.kind != "ffpp" and self.compression != "c23":
            raise ValueError("compression applies to kind ffpp only")
        if self.group_pattern is not None:
            if self.kind == "ffpp":
                raise ValueError("ffpp group keys come from FaceForensics++ names; drop group_pattern")
            try:
                rx = re.compile(self.group_pattern)
            except re.error as exc:
                raise ValueError(f"group_pattern {self.group_pattern!r} is not a regex: {exc}") from exc
            if rx.groups < 1:
                raise ValueError(f"group_pattern {self.group_pattern!r} needs a capture group")
        return self


@dataclass(frozen=True)
class Item:
    """One raw file to process. ``path``/``mask_path`` are relative to the source root."""

    path: str
    is_video: bool
    video_id: str                   # file stem for videos, "" for images
    group_keys: tuple[str, ...]
    mask_path: str | None = None


@dataclass(frozen=True)
class Reject:
    path: str
    frame_index: int
    reason: str
    detail: str


def ffpp_group_keys(stem: str) -> tuple[str, ...] | None:
    """Identity keys from a FaceForensics++ / DeepFakeDetection file stem, ``None`` if unknown."""
    if m := _FFPP_ORIGINAL.match(stem):
        return (f"ffpp:{m.group(1)}",)
    if m := _FFPP_FAKE.match(stem):
        return (f"ffpp:{m.group(1)}", f"ffpp:{m.group(2)}")
    if m := _DFD_FAKE.match(stem):
        return (f"dfd_actor:{m.group(1)}", f"dfd_actor:{m.group(2)}")
    if m := _DFD_ORIGINAL.match(stem):
        return (f"dfd_actor:{m.group(1)}",)
    return None


def _walk(root: Path) -> list[str]:
    """All regular files under ``root`` as sorted relative POSIX paths (hidden dirs included)."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink())


def list_items(name: str, spec: SourceConfig, root: Path | None = None) -> tuple[list[Item], list[Reject]]:
    """Items of source ``name`` sorted by path, and rejects for files that do not belong.

    ``root`` overrides ``spec.path`` (tests). Raises ``FileNotFoundError`` naming the folder when
    the source root (or an ffpp video folder) does not exist.
    """
    root = Path(root if root is not None else spec.path)
    if not root.is_dir():
        raise FileNotFoundError(f"source {name}: folder {root} does not exist")
    rx = re.compile(spec.group_pattern) if spec.group_pattern else None
    items: list[Item] = []
    rejects: list[Reject] = []

    def inside(rel: str) -> bool:
        try:
            resolve_inside(root, rel)
            return True
        except ValueError as exc:
            rejects.append(Reject(rel, -1, "outside_root", str(exc)))
            return False

    def own_keys(rel: str, stem: str) -> tuple[str, ...] | None:
        if rx is None:
            return (f"{spec.method}:{rel}",)
        m = rx.search(stem)
        if m is None or not m.group(1):
            rejects.append(Reject(rel, -1, "no_group", f"group_pattern {spec.group_pattern!r} does not match {stem!r}"))
            return None
        return (f"{spec.method}:{m.group(1)}",)

    if spec.kind in ("image_folder", "video_folder"):
        is_video = spec.kind == "video_folder"
        suffixes, reason = (VIDEO_SUFFIXES, "not_video") if is_video else (IMAGE_SUFFIXES, "not_image")
        for rel in _walk(root):
            if not rel.lower().endswith(suffixes):
                rejects.append(Reject(rel, -1, reason, f"suffix not in {suffixes}"))
                continue
            if not inside(rel):
                continue
            stem = Path(rel).stem
            keys = own_keys(rel, stem)
            if keys is not None:
                items.append(Item(rel, is_video, stem if is_video else "", keys))
        return items, rejects

    # ffpp
    vdir = root / spec.compression / "videos"
    if not vdir.is_dir():
        raise FileNotFoundError(
            f"source {name}: {vdir} does not exist (FaceForensics++ layout <path>/<compression>/videos)"
        )
    for sub in _walk(vdir):
        rel = f"{spec.compression}/videos/{sub}"
        if "/" in sub or not sub.endswith(".mp4"):
            rejects.append(Reject(rel, -1, "not_video", "expected <name>.mp4 directly in the videos folder"))
            continue
        if not inside(rel):
            continue
        stem = Path(sub).stem
        keys = ffpp_group_keys(stem)
        if keys is None:
            rejects.append(Reject(rel, -1, "bad_name", f"{stem!r} is not a FaceForensics++ / DFD video name"))
            continue
        mask = f"masks/videos/{sub}" if spec.masks else None
        items.append(Item(rel, True, stem, keys, mask))
    return items, rejects
