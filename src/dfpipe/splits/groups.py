"""Leak-free split assignment: union-find groups, salted-hash splits, official FF++ splits.

Why: the notes lost a result to a split that depended on ``os.listdir`` order and put frames of
one video on both sides. Here a split is a pure function of (salt, canonical group key, params):

* :func:`canonical_groups` joins items that share any ``group_keys`` entry (union-find); a
  group's canonical key is its smallest key. An FF++ fake ``TTT_SSS`` has keys
  ``["ffpp:TTT", "ffpp:SSS"]``, so it, the originals ``TTT`` and ``SSS`` and every other fake
  touching them fall in one group.
* :func:`unit_hash` maps ``sha256(salt, purpose, key)`` to ``[0, 1)``; a group goes to ``test``
  when its hash is below ``test_fraction``. Listing order never matters, and adding or removing
  items never moves an existing group -- EXCEPT when a new item links two groups (a new FF++ fake
  ``AAA_BBB`` joins the groups of ``AAA`` and ``BBB``): the merged group takes the smaller
  canonical key, so the items of the other group can move. Only linked items can move.
* :func:`read_official_ffpp` reads the official FaceForensics++ split files
  ``{train,val,test}.json`` (pairs ``[["071", "054"], ...]``); when configured they decide the
  split of every group holding an ``ffpp:`` key listed there (its ``test`` is our ``test``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

#: Names of the splits of every variant, in output order.
#: Official FF++ split names -> our split names.
OFFICIAL_TO_SPLIT = {"train": "train", "val": "val", "test": "test"}
FFPP_PREFIX = "ffpp:"


class SplitError(ValueError):
    """A split cannot be decided (bad group keys, malformed or conflicting official split)."""


class UnionFind:
    """Union-find over string keys whose root is always the smallest key of the component.

    Keeping the minimum as root makes the result independent of the order of ``union`` calls.
    """

    def __init__(self) -> None:
        self._parent: dict[str, str] = {}

    def add(self, key: str) -> None:
        self._parent.setdefault(key, key)

    def find(self, key: str) -> str:
        parent = self._parent
        root = key
        while parent[root] != root:
            root = parent[root]
        while parent[key] != root:  # path compression
            parent[key], key = root, parent[key]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            lo, hi = (ra, rb) if ra < rb else (rb, ra)
            self._parent[hi] = lo


def canonical_groups(ids: Sequence[str], group_keys: Sequence[Iterable[str]]) -> list[str]:
    """Canonical group key (smallest key of its union-find component) of every item.

    ``ids[i]`` names item ``i`` in errors; ``group_keys[i]`` is its non-empty list of keys.
    Returns a list aligned with ``ids``.
    """
    if len(ids) != len(group_keys):
        raise SplitError(f"{len(ids)} ids but {len(group_keys)} group_keys lists")
    uf = UnionFind()
    keys_per_item: list[list[str]] = []
    for item_id, keys in zip(ids, group_keys):
        keys = [str(k) for k in (keys if keys is not None else [])]
        if not keys or any(not k for k in keys):
            raise SplitError(
                f"item {item_id!r} has empty group_keys {keys!r}; preprocess must give "
                "every item at least one identity key (its own id when none is known)"
            )
        for k in keys:
            uf.add(k)
        for k in keys[1:]:
            uf.union(keys[0], k)
        keys_per_item.append(keys)
    return [uf.find(keys[0]) for keys in keys_per_item]


def unit_hash(salt: str, purpose: str, keys: Sequence[str]) -> np.ndarray:
    """``sha256(salt NUL purpose NUL key)`` of each key as a float64 in ``[0, 1)``, shape ``(len(keys),)``.

    ``purpose`` separates independent decisions (``split``, ``val``, ``sample``) so that, e.g.,
    the sampling order inside a pool is not correlated with the pool threshold.
    """
    prefix = f"{salt}\0{purpose}\0".encode()
    out = np.empty(len(keys), dtype=np.float64)
    for i, key in enumerate(keys):
        digest = hashlib.sha256(prefix + key.encode("utf-8")).digest()
        # 53 bits: exactly representable in float64, so the value is platform independent.
        out[i] = (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53)
    return out


def read_official_ffpp(split_dir: str | Path) -> dict[str, str]:
    """Read ``<split_dir>/{train,val,test}.json``; return ``{"ffpp:071": "train", ...}``.

    Each file must be a JSON list of 2-item lists of video-id strings. A malformed file, a missing
    file or a video listed in two splits is a :class:`SplitError` naming the file.
    """
    split_dir = Path(split_dir)
    out: dict[str, str] = {}
    for official, ours in OFFICIAL_TO_SPLIT.items():
        path = split_dir / f"{official}.json"
        if not path.is_file():
            raise SplitError(f"{path}: official FF++ split file not found")
        try:
            pairs = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SplitError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(pairs, list):
            raise SplitError(f"{path}: expected a list of [target, source] pairs, got {type(pairs).__name__}")
        for i, pair in enumerate(pairs):
            if not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(v, str) and v.strip() for v in pair):
                raise SplitError(f'{path}: entry {i} is {pair!r}; expected a pair of video ids like ["071", "054"]')
            for vid in pair:
                key = FFPP_PREFIX + vid.strip()
                if out.get(key, ours) != ours:
                    raise SplitError(f"{path}: video {vid!r} is also listed in the {out[key]!r} split")
                out[key] = ours
    return out


def official_group_splits(
    canon: Sequence[str], group_keys: Sequence[Iterable[str]], official: Mapping[str, str]
) -> dict[str, str]:
    """Split decided by the official lists for each canonical group holding a listed key.

    Groups whose listed keys disagree (possible only when union-find links videos across official
    splits) are a :class:`SplitError`. Groups with no listed key are absent from the result.
    """
    decided: dict[str, str] = {}
    for root, keys in zip(canon, group_keys):
        for k in keys:
            s = official.get(str(k))
            if s is None:
                continue
            prev = decided.setdefault(root, s)
            if prev != s:
                raise SplitError(
                    f"group {root!r} holds videos of the official {prev!r} and {s!r} splits "
                    f"(key {k!r}); the official lists and the group keys disagree"
                )
    return decided
