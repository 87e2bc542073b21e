"""Raw data sources declared in ``params.yaml`` and the items (images, videos) they hold.

A source is one folder of one kind with one label:

- ``image_folder``: ``<path>/**/*.{png,jpg,jpeg}`` (FFHQ, a GAN's samples);
- ``ffpp``: one FaceForensics++ subtree (``original_sequences/youtube`` or
  ``manipulated_sequences/<Method>``): videos at ``<path>/<compression>/videos/*.mp4``, masks (when
  ``masks: true``) at ``<path>/masks/videos/<same name>.mp4``;
- ``video_folder``: ``<path>/**/*.{mp4,avi,mov,mkv,webm}``;
- ``celebdf`` / ``dfdc``: the Celeb-DF v2 and DFDC roots as downloaded (:mod:`dfpipe.ingest.datasets`).

Listings are sorted by relative POSIX path (never ``os.listdir`` order: the notes' leak). Files
that do not fit the kind are not skipped silently: they come back as :class:`Reject` records.
A symbolic link to a folder is not followed (its files could be listed twice, or loop):
``symlinked_folder``; a link whose target does not exist is ``broken_link``; a video in another
container than the layout's ``.mp4`` (ffpp, celebdf) is ``wrong_container``.
A file name that is not valid UTF-8 or holds control characters cannot be stored in a manifest
(nor hashed by ``dvc add``): it is a ``bad_name`` reject whose path is the escaped printable
form of the name (``caf\\xe9.png``), see docs/raw_data.md.

Video ids (``video_id``; downstream a video is keyed ``"<method>:<video_id>"``) are the path
relative to the source root without its extension, so ``a/clip.mp4`` and ``b/clip.mp4`` are two
videos; FaceForensics++ keeps its official ids (``071``, ``071_054``), which are unique within one
method folder.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import model_validator

from dfpipe.core.config import Config, RepoPath, SafeName
from dfpipe.core.io import is_representable, printable_name, relative_message, resolve_inside
from dfpipe.ingest.datasets import list_celebdf, list_dfdc
from dfpipe.ingest.items import Item, Reject

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")

# FaceForensics++ file stems: originals "071", fakes "<target>_<source>" = "071_054";
# DeepFakeDetection (Google/Jigsaw) "01_02__meeting_serious__YVGY8LOK" (fake: target, source
# actors) and originals "01__meeting_serious". A DFD fake is grouped by its target actor only
# (union-find over both actors joins all 28 actors into one group); the split stage handles the
# source actor (dfpipe.ingest.datasets.bridge_keys).
_FFPP_ORIGINAL = re.compile(r"^(\d{3})$")
_FFPP_FAKE = re.compile(r"^(\d{3})_(\d{3})$")
_DFD_FAKE = re.compile(r"^(\d{2})_(\d{2})__")
_DFD_ORIGINAL = re.compile(r"^(\d{2})__")


class CodecConfig(Config):
    """Codec control of a still-image source: every image goes through a lossy codec before
    face detection, as the frames of a compressed video did (the codec-controlled ``*_c23`` still sources, so that
    stills and video frames do not differ by compression).

    ``h264``: one intra-coded H.264 frame at ``crf`` (libx264, the demo video writer's
    bit-exact settings; CRF 23 ~ FaceForensics++ c23). ``jpeg``: baseline JPEG at ``quality``.
    """

    kind: Literal["h264", "jpeg"]
    crf: int | None = None  # h264 only, 0..51
    quality: int | None = None  # jpeg only, 1..100

    @model_validator(mode="after")
    def _per_kind(self) -> CodecConfig:
        if self.kind == "h264":
            if self.crf is None or not 0 <= self.crf <= 51 or self.quality is not None:
                raise ValueError(f"codec h264 needs crf in [0, 51] and no quality, got crf={self.crf}")
        elif self.quality is None or not 1 <= self.quality <= 100 or self.crf is not None:
            raise ValueError(f"codec jpeg needs quality in [1, 100] and no crf, got quality={self.quality}")
        return self

    @property
    def tag(self) -> str:
        """Manifest ``codec`` value: ``h264_crf23`` / ``jpeg_q90``."""
        return f"h264_crf{self.crf}" if self.kind == "h264" else f"jpeg_q{self.quality}"


class SourceConfig(Config):
    """One entry of ``sources:`` in params.yaml."""

    kind: Literal["image_folder", "ffpp", "video_folder", "celebdf", "dfdc"]
    path: RepoPath  # relative to the repository root, inside it
    label: Literal[0, 1, 2]  # 0 real, 1 fake (generated), 2 edited
    method: SafeName  # "ffhq", generator or manipulation name; prefixes group keys
    mode: Literal["raw", "crop", "crop_seg"]
    sampling: Literal["every_nth", "per_video"] | None = None  # videos only
    compression: str = "c23"  # ffpp only: raw / c23 / c40 (FF++ download folder names; c0 = raw)
    masks: bool = False  # ffpp only: read <path>/masks/videos/<name>.mp4
    group_pattern: str | None = None  # regex; group 1 of a match on the file stem = identity
    subset: Literal["all", "test", "train"] = "all"  # celebdf only: official test list membership
    codec: CodecConfig | None = None  # image_folder only: re-encode before detection (off: null)

    @model_validator(mode="after")
    def _per_kind(self) -> SourceConfig:
        is_video = self.kind in ("ffpp", "video_folder", "celebdf", "dfdc")
        if is_video and self.sampling is None:
            raise ValueError(f"kind {self.kind} needs sampling: every_nth or per_video")
        if not is_video and self.sampling is not None:
            raise ValueError("sampling applies to video sources only; remove it for an image_folder")
        if self.masks and self.kind != "ffpp":
            raise ValueError("masks: true is only defined for kind ffpp (<path>/masks/videos)")
        if self.kind != "ffpp" and self.compression != "c23":
            raise ValueError("compression applies to kind ffpp only")
        if self.compression not in ("raw", "c0", "c23", "c40"):
            raise ValueError(f"compression must be raw, c23 or c40 (FF++ folder names), got {self.compression!r}")
        if self.subset != "all" and self.kind != "celebdf":
            raise ValueError("subset applies to kind celebdf only (DFDC's test set is its own folder)")
        if self.codec is not None and self.kind != "image_folder":
            raise ValueError("codec applies to image_folder sources only (videos are already encoded)")
        if self.group_pattern is not None:
            if self.kind in ("ffpp", "celebdf", "dfdc"):
                raise ValueError(f"{self.kind} group keys come from the dataset's names; drop group_pattern")
            try:
                rx = re.compile(self.group_pattern)
            except re.error as exc:
                raise ValueError(f"group_pattern {self.group_pattern!r} is not a regex: {exc}") from exc
            if rx.groups < 1:
                raise ValueError(f"group_pattern {self.group_pattern!r} needs a capture group")
        return self


def ffpp_group_keys(stem: str) -> tuple[str, ...] | None:
    """Identity keys from a FaceForensics++ / DeepFakeDetection file stem, ``None`` if unknown."""
    if m := _FFPP_ORIGINAL.match(stem):
        return (f"ffpp:{m.group(1)}",)
    if m := _FFPP_FAKE.match(stem):
        return (f"ffpp:{m.group(1)}", f"ffpp:{m.group(2)}")
    if m := _DFD_FAKE.match(stem):
        return (f"dfd_actor:{m.group(1)}",)
    if m := _DFD_ORIGINAL.match(stem):
        return (f"dfd_actor:{m.group(1)}",)
    return None


def _walk(root: Path) -> list[str]:
    """All regular files under ``root`` as sorted relative POSIX paths (hidden dirs included).

    Names that are not valid UTF-8 come back with surrogate escapes (``os.fsdecode``); see
    :func:`bad_names`.
    """
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink())


def link_reject(path: Path, rel: str) -> Reject | None:
    """The reject (named ``rel``) of ``path`` when it is a symbolic link that cannot be an item, else
    ``None``: a link to a folder (``symlinked_folder``, not followed) or one whose target does not
    exist (``broken_link``, a link loop included)."""
    if not path.is_symlink():
        return None
    if path.is_dir():
        return Reject(
            rel,
            -1,
            "symlinked_folder",
            "symbolic link to a folder, not followed (move or copy the files into the source folder)",
        )
    if not path.exists():
        return Reject(rel, -1, "broken_link", "symbolic link whose target does not exist")
    return None


def _flat_mp4(folder: Path, prefix: str, rejects: list[Reject], inside) -> Iterator[tuple[str, str]]:
    """``(relative path, stem)`` of the ``.mp4`` files directly in ``folder`` (sorted), relative
    paths ``<prefix>/<name>.mp4``; another video container is a ``wrong_container`` reject, a
    folder link or dangling link a :func:`link_reject`, anything else ``not_video``."""
    for sub in _walk(folder):
        rel = f"{prefix}/{sub}"
        if not is_representable(rel) or link_reject(folder / sub, rel) is not None:
            inside(rel)  # records the bad_name / link reject
            continue
        if "/" not in sub and sub.lower().endswith(VIDEO_SUFFIXES) and not sub.endswith(".mp4"):
            rejects.append(
                Reject(rel, -1, "wrong_container", f"{Path(sub).suffix} video; this layout holds <name>.mp4 files only")
            )
            continue
        if "/" in sub or not sub.endswith(".mp4"):
            rejects.append(Reject(rel, -1, "not_video", "expected <name>.mp4 directly in the folder"))
            continue
        if inside(rel):
            yield rel, sub[: -len(".mp4")]


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
        if not is_representable(rel):
            rejects.append(
                Reject(printable_name(rel), -1, "bad_name", "file name is not valid UTF-8 or holds control characters")
            )
            return False
        if (link := link_reject(root / rel, rel)) is not None:
            rejects.append(link)
            return False
        try:
            resolve_inside(root, rel)
            return True
        except ValueError as exc:
            rejects.append(Reject(rel, -1, "outside_root", relative_message(str(exc), root)))
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
            if not is_representable(rel) or link_reject(root / rel, rel) is not None:
                inside(rel)  # records the bad_name / link reject
                continue
            if not rel.lower().endswith(suffixes):
                rejects.append(Reject(rel, -1, reason, f"suffix not in {suffixes}"))
                continue
            if not inside(rel):
                continue
            stem = Path(rel).stem
            keys = own_keys(rel, stem)
            if keys is not None:
                vid = rel[: len(rel) - len(Path(rel).suffix)] if is_video else ""
                items.append(Item(rel, is_video, vid, keys))
        return items, rejects

    if spec.kind == "celebdf":
        return list_celebdf(
            name,
            spec.label == 0,
            spec.subset,
            root,
            lambda folder, prefix: _flat_mp4(folder, prefix, rejects, inside),
            rejects,
        )
    if spec.kind == "dfdc":
        return list_dfdc(name, spec.label, root, _walk, inside)

    # ffpp
    vdir = root / spec.compression / "videos"
    if not vdir.is_dir():
        raise FileNotFoundError(
            f"source {name}: {vdir} does not exist (FaceForensics++ layout <path>/<compression>/videos)"
        )
    if spec.masks and not (root / "masks" / "videos").is_dir():
        raise FileNotFoundError(
            f"source {name}: masks: true but {root / 'masks' / 'videos'} does not exist (FaceShifter has "
            "no masks in FF++: set masks: false for it and use it only in variants without masks)"
        )
    for rel, stem in _flat_mp4(vdir, f"{spec.compression}/videos", rejects, inside):
        sub = rel.rsplit("/", 1)[1]
        keys = ffpp_group_keys(stem)
        if keys is None:
            rejects.append(Reject(rel, -1, "bad_name", f"{stem!r} is not a FaceForensics++ / DFD video name"))
            continue
        mask = f"masks/videos/{sub}" if spec.masks else None
        items.append(Item(rel, True, stem, keys, mask))
    return items, rejects
