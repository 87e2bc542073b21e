"""Item and Reject: the records every source lister returns (one raw file to process, one file or
frame refused with its reason)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Item:
    """One raw file to process. ``path``/``mask_path`` are relative to the source root."""

    path: str
    is_video: bool
    video_id: str  # relative path without extension (FF++: official id), "" for images
    group_keys: tuple[str, ...]
    mask_path: str | None = None


@dataclass(frozen=True)
class Reject:
    path: str
    frame_index: int
    reason: str
    detail: str
