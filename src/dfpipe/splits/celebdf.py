"""Celeb-DF v2's official test list in the split stage and the audit: which items are listed, and who a video shows.

``List_of_testing_videos.txt`` (``split.celebdf_test_list``) names the official test videos by
their path under the dataset root (``Celeb-real/id0_0000.mp4``), the ``path`` of a manifest row of
a ``kind: celebdf`` source. It is honoured like FF++'s official test split
(:func:`dfpipe.splits.groups.official_group_splits`): the variant stage sends every split unit
holding a listed video to ``test``, in every variant (:mod:`dfpipe.splits.variants`). The file name
also says who a video shows (a face swap ``id0_id16_0001``: ``id0`` and ``id16``), which the audit
uses to count the people on both sides of the list's boundary (:mod:`dfpipe.splits.audit`).

Kept apart from :mod:`dfpipe.splits.groups` so that the stages that only need union-find (the
evaluation) do not depend on the dataset listing code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath

import numpy as np

from dfpipe.core.config import ConfigError
from dfpipe.ingest.datasets import bridge_keys, celebdf_group_keys, read_celebdf_test_list

#: Group-key prefixes of Celeb-DF v2 items (:func:`dfpipe.ingest.datasets.celebdf_group_keys`).
CELEBDF_PREFIXES = ("celebdf:", "celebdf_yt:")


def read_celebdf_list(path: Path | None, key: str = "split.celebdf_test_list") -> dict[str, int] | None:
    """Celeb-DF v2's official test list at ``path`` (``{"Celeb-real/id0_0000.mp4": 0, ...}``), or ``None``.

    A configured list that is not a file is a :class:`~dfpipe.core.config.ConfigError` naming
    ``key``; a malformed line is the ``ValueError`` of
    :func:`dfpipe.ingest.datasets.read_celebdf_test_list`.
    """
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key}: {path} is not a file (expected Celeb-DF v2's List_of_testing_videos.txt)")
    return read_celebdf_test_list(path)


def is_celebdf(group_keys: Sequence[Iterable[str]]) -> np.ndarray:
    """``(N,)`` bool: the item is a Celeb-DF v2 video frame (a group key with a Celeb-DF prefix)."""
    return np.asarray([any(str(k).startswith(CELEBDF_PREFIXES) for k in keys) for keys in group_keys], dtype=bool)


def celebdf_listed(
    paths: Sequence[str], group_keys: Sequence[Iterable[str]], test_list: Mapping[str, int] | None
) -> np.ndarray:
    """``(N,)`` bool: Celeb-DF items whose video (``path``, relative to the dataset root) is on ``test_list``."""
    if not test_list:
        return np.zeros(len(paths), dtype=bool)
    return is_celebdf(group_keys) & np.asarray([str(p) in test_list for p in paths], dtype=bool)


def celebdf_identities(rel_path: str) -> tuple[str, ...]:
    """The identity keys a Celeb-DF v2 video shows, from its path relative to the dataset root.

    ``Celeb-real/id3_0001.mp4`` -> ``("celebdf:id3",)``; ``Celeb-synthesis/id0_id16_0001.mp4`` ->
    ``("celebdf:id0", "celebdf:id16")`` (target, then the swapped-in face);
    ``YouTube-real/00170.mp4`` -> ``("celebdf_yt:00170",)`` (an unknown person, one per video).
    A name that is not Celeb-DF's gives ``()``.
    """
    path = PurePosixPath(rel_path)
    keys = celebdf_group_keys(path.parent.name, path.stem) or ()
    pair = bridge_keys(path.with_suffix("").as_posix()) if keys else None
    return tuple(dict.fromkeys(keys + (pair or ())))


def celebdf_list_keys(test_list: Mapping[str, int] | None) -> dict[str, str]:
    """``{group key: "test"}`` for the group key of every listed video: the side its group takes
    (used for a face swap's other person when no item of the variant holds that person)."""
    out: dict[str, str] = {}
    for rel in test_list or {}:
        path = PurePosixPath(rel)
        for key in celebdf_group_keys(path.parent.name, path.stem) or ():
            out[key] = "test"
    return out
