"""Audit of a materialised variant: group, video, exact and near-duplicate leaks; shortcut probes; gate.

Reads ``<variants_dir>/<name>/{train,val,test}/manifest.parquet`` and the shards they point at,
and counts, across every pair of splits:

* group leaks: union-find groups of ``group_keys`` (recomputed here, not trusted from
  ``split_group``) with items in more than one split;
* video leaks: videos, keyed ``"<method>:<video_id>"`` (Face2Face ``000_003`` and
  FaceSwap ``000_003`` are two videos), in more than one split;
* exact duplicates: identical pixels (content hash recomputed from the shards; a mismatch with the
  manifest's ``content_hash`` is an error) in more than one split, listed with the item ids;
* near duplicates: pairs of items in different splits whose 64-bit DCT perceptual hashes
  (:func:`phash`) differ in at most ``hamming_threshold`` bits, exact duplicates excluded.

A variant declared ``leak_free`` fails on any group leak, video leak or exact duplicate; near
duplicates are reported (a perceptual hash also matches unrelated look-alikes). The shortcut audit
(:mod:`dfpipe.splits.shortcut`) fails a variant declared ``shortcut_free``.

Celeb-DF v2's official test list (``split.celebdf_test_list``; section ``celebdf_test_list`` of the
metrics, :func:`celebdf_list_audit`): any variant with a listed video in train or val fails, whatever
it declares, and so does one with Celeb-DF videos in train or val when no list is configured. The
identities that the list's videos show (``id0_id16_0001``: ``id0`` and ``id16``) and that train or
val videos also show are counted and listed: not a failure (the official list shares people with
the rest of the dataset), but a figure a cross-dataset result must be read with.

Per test item, :data:`TEST_ITEMS_SCHEMA` records whether its group / its video has an item in the
train split (``metrics/audit/<variant>/test_items.parquet``), so the evaluation can compare leaked and clean
test frames of one model ("train" is the train split; val, used for model selection only, is not
counted). The stage writes the gate file (:func:`check_gate`, bound to the variant's bytes by
:mod:`dfpipe.splits.gate`) only when the checks a variant declares pass; ``train@`` depends on it
and refuses to start without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import combinations
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field
from tqdm import tqdm

from dfpipe.core.config import Config, RepoPath
from dfpipe.core.io import array_hash, resolve_inside
from dfpipe.core.manifest import SPLITS, VARIANT_SCHEMA, read_table
from dfpipe.core.shards import ShardReader
from dfpipe.splits.celebdf import celebdf_identities, celebdf_listed, is_celebdf
from dfpipe.splits.groups import canonical_groups
from dfpipe.splits.shortcut import FeatureName, nuisance_table, pixel_stats, shortcut_audit, shortcut_markdown

#: ``test_items.parquet``, read by leak measure (a): one row per test item, sorted by id.
TEST_ITEMS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("video_key", pa.string()),  # "<method>:<video_id>", "" for still images
        ("group_in_train", pa.bool_()),  # its union-find group has an item in the train split
        ("video_in_train", pa.bool_()),  # its video has a frame in the train split
    ]
)


class AuditConfig(Config):
    """``params.yaml`` ``audit:`` settings."""

    hamming_threshold: int = Field(ge=0, lt=32)  # near duplicate: pHash Hamming distance <= this (of 64 bits)
    max_examples: int = Field(ge=0)  # examples listed per finding in the markdown report
    # a shortcut_free variant fails when a probe on the gate features reaches a higher test AUC
    shortcut_max_auc: float = Field(ge=0.5, le=1.0)
    shortcut_gate_features: tuple[FeatureName, ...] = Field(min_length=1)  # dfpipe.splits.shortcut.FEATURES
    shortcut_bootstrap: int = Field(ge=1)  # cluster-bootstrap resamples of the probe scores' CIs
    shortcut_seed: int  # bootstrap draws
    out_dir: RepoPath  # metrics/audit


class GateError(RuntimeError):
    """A variant fails a check it declares (leak_free, shortcut_free); no gate file is written."""


class LeakError(GateError):
    """A variant declared leak-free has a group, video or exact-duplicate leak."""


class ShortcutError(GateError):
    """A variant declared shortcut-free has a nuisance probe above ``audit.shortcut_max_auc``."""


class OfficialListError(GateError):
    """A video of Celeb-DF's official test list is in train or val (or the list needed to check is not set)."""


def phash(image: np.ndarray) -> np.uint64:
    """64-bit DCT perceptual hash of an RGB ``(H, W, 3)`` or gray ``(H, W)`` uint8 image.

    Zauner (2010), "Implementation and Benchmarking of Perceptual Image Hash Functions": gray,
    resize to 32x32, 2-D DCT, keep the 8x8 lowest frequencies, bit = coefficient > median of the
    63 non-DC coefficients. Bit 63 is coefficient (0, 0).
    """
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    block = cv2.dct(small)[:8, :8].ravel()
    bits = block > np.median(block[1:])
    return np.uint64(int.from_bytes(np.packbits(bits).tobytes(), "big"))


def near_pairs(a: np.ndarray, b: np.ndarray, threshold: int, chunk_elems: int = 1 << 23) -> np.ndarray:
    """Index pairs ``(i, j)`` with ``popcount(a[i] ^ b[j]) <= threshold``; shape ``(K, 2)``, sorted.

    ``a``, ``b``: uint64 hash arrays. Memory is bounded by ``chunk_elems`` uint64s per block.
    """
    out = []
    if len(a) and len(b):
        step = max(1, chunk_elems // len(b))
        for start in range(0, len(a), step):
            dist = np.bitwise_count(a[start : start + step, None] ^ b[None, :])
            i, j = np.nonzero(dist <= threshold)
            out.append(np.stack([i + start, j], axis=1))
    return np.concatenate(out) if out else np.zeros((0, 2), dtype=np.int64)


def load_variant(variant_dir: Path) -> pd.DataFrame:
    """All rows of the variant's split manifests, with ``root`` (the split directory) added."""
    frames = []
    for s in SPLITS:
        split_dir = resolve_inside(variant_dir, s)
        df = read_table(split_dir / "manifest.parquet", VARIANT_SCHEMA)
        wrong = sorted(set(df["split"]) - {s})
        if wrong:
            raise ValueError(f"{split_dir / 'manifest.parquet'}: rows with split {wrong}, expected {s!r}")
        df["root"] = str(split_dir)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def scan_pixels(rows: pd.DataFrame) -> tuple[list[str], np.ndarray, np.ndarray]:
    """One pass over every row's image, in row order.

    Returns the content hashes (:func:`dfpipe.core.io.array_hash`), the pHashes ``(N,)`` uint64
    and ``(N, 3)`` float64 columns ``side, brightness, hf_energy``
    (:func:`dfpipe.splits.shortcut.pixel_stats`).
    """
    readers: dict[str, ShardReader] = {}
    sha, ph = [], np.empty(len(rows), dtype=np.uint64)
    stats = np.empty((len(rows), 3), dtype=np.float64)
    for k, row in enumerate(tqdm(rows.itertuples(index=False), total=len(rows), desc="scan", unit="img", leave=False)):
        img = readers.setdefault(row.root, ShardReader(row.root)).get(row.shard, row.offset)
        sha.append(array_hash(img))
        ph[k] = phash(img)
        stats[k] = (img.shape[0], *pixel_stats(img))
    return sha, ph, stats


def video_keys(rows: pd.DataFrame) -> pd.Series:
    """``"<method>:<video_id>"`` per row, ``""`` for still images."""
    vid = rows["video_id"].astype(str)
    return (rows["method"].astype(str) + ":" + vid).where(vid != "", "")


def flag_test_items(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of :data:`TEST_ITEMS_SCHEMA` for the test items of ``rows`` (needs ``group``, ``video_key``)."""
    train = rows[rows["split"] == "train"]
    ev = rows[rows["split"] == "test"].sort_values("id", kind="stable")
    train_videos = set(train.loc[train["video_key"] != "", "video_key"])
    return pd.DataFrame(
        {
            "id": ev["id"].astype(str).to_numpy(),
            "video_key": ev["video_key"].to_numpy(),
            "group_in_train": ev["group"].isin(set(train["group"])).to_numpy(),
            "video_in_train": ev["video_key"].isin(train_videos).to_numpy(),
        }
    )


def _spread(rows: pd.DataFrame, key: str) -> pd.DataFrame:
    """Values of column ``key`` present in more than one split, with per-split item counts."""
    sub = rows[rows[key] != ""]
    table = sub.groupby([key, "split"]).size().unstack(fill_value=0)
    table = table.reindex(columns=[s for s in SPLITS if s in table.columns])
    table = table[(table > 0).sum(axis=1) > 1]
    # largest first (whole videos before single images), then by key: a stable, readable order
    order = sorted(table.index, key=lambda k: (-int(table.loc[k].sum()), str(k)))
    return table.loc[order]


def celebdf_list_audit(rows: pd.DataFrame, test_list: Mapping[str, int] | None) -> tuple[dict, pd.DataFrame]:
    """Celeb-DF official test list vs the variant's train and val: ``(section, shared identities)``.

    ``rows``: the variant's rows (``split``, ``path``, ``group_keys``, ``video_key``). The section
    counts Celeb-DF videos in train+val, listed videos in train+val (must be 0) and in test, the
    identities the whole list shows, those train+val videos show and those both show; ``check``
    is ``not required`` (no Celeb-DF video in train or val), ``failed`` (a listed video there, or
    no list to check against) or ``passed``. The table has one row per shared identity:
    ``identity``, ``listed_videos`` (on the list), ``train_val_videos`` (of the variant).
    """
    celebdf = is_celebdf(rows["group_keys"].tolist())
    listed = celebdf_listed(rows["path"].tolist(), rows["group_keys"].tolist(), test_list)
    fit_side = rows["split"].isin(["train", "val"]).to_numpy()
    tv = rows[celebdf & fit_side].drop_duplicates("video_key")
    tv_ids: dict[str, set[str]] = {}
    for vkey, path in zip(tv["video_key"], tv["path"]):
        for ident in celebdf_identities(str(path)):
            tv_ids.setdefault(ident, set()).add(vkey)
    list_ids: dict[str, int] = {}
    for rel in test_list or {}:
        for ident in celebdf_identities(rel):
            list_ids[ident] = list_ids.get(ident, 0) + 1
    shared = sorted(set(tv_ids) & set(list_ids), key=lambda k: (-len(tv_ids[k]), k))
    table = pd.DataFrame(
        {
            "identity": shared,
            "listed_videos": [list_ids[k] for k in shared],
            "train_val_videos": [len(tv_ids[k]) for k in shared],
        },
        columns=["identity", "listed_videos", "train_val_videos"],
    )
    in_fit = int(rows.loc[listed & fit_side, "video_key"].nunique())
    if not len(tv):
        check = "not required"
    else:
        check = "failed" if test_list is None or in_fit else "passed"
    section = {
        "check": check,
        "configured": test_list is not None,
        "celebdf_videos_train_val": int(len(tv)),
        "listed_videos_train_val": in_fit,
        "listed_videos_test": int(rows.loc[listed & (rows["split"] == "test").to_numpy(), "video_key"].nunique()),
        "identities_listed": len(list_ids),
        "identities_train_val": len(tv_ids),
        "identities_shared": len(shared),
    }
    return section, table


def audit_variant(
    name: str,
    variant_dir: Path,
    leak_free: bool,
    cfg: AuditConfig,
    shortcut_free: bool = False,
    test_list: Mapping[str, int] | None = None,
) -> tuple[dict, str, pd.DataFrame]:
    """Audit one variant; return ``(metrics, markdown, test_items)``. ``ValueError`` on corrupt data.

    ``metrics`` holds counts and the compact ``shortcut`` and ``celebdf_test_list`` sections (DVC
    metrics); ``markdown`` lists up to ``cfg.max_examples`` examples of each finding;
    ``test_items`` has :data:`TEST_ITEMS_SCHEMA` rows. ``test_list``: Celeb-DF v2's official test
    list (:func:`dfpipe.splits.celebdf.read_celebdf_list`) or ``None`` (:func:`celebdf_list_audit`).
    """
    rows = load_variant(variant_dir)
    rows["group"] = canonical_groups(rows["id"].tolist(), rows["group_keys"].tolist())
    rows["video_key"] = video_keys(rows)
    sha, ph, stats = scan_pixels(rows)
    bad = [i for i, (a, b) in enumerate(zip(sha, rows["content_hash"])) if a != b]
    if bad:
        raise ValueError(
            f"{variant_dir}: {len(bad)} items' pixels do not match their content_hash, "
            f"e.g. {rows['id'].iloc[bad[0]]!r} in {rows['root'].iloc[bad[0]]}"
        )
    rows["sha"] = sha

    groups = _spread(rows, "group")
    videos = _spread(rows, "video_key")
    exact = _spread(rows, "sha")
    exact_ids = {h: sorted(rows.loc[rows["sha"] == h, "id"]) for h in exact.index[: cfg.max_examples]}
    leak_groups_src = rows[rows["group"].isin(groups.index)].groupby("source")["group"].nunique()

    near_rows = []
    pair_counts = {}
    split_arr = rows["split"].to_numpy()
    for a, b in combinations(SPLITS, 2):
        ia, ib = np.flatnonzero(split_arr == a), np.flatnonzero(split_arr == b)
        pairs = near_pairs(ph[ia], ph[ib], cfg.hamming_threshold)
        pa_, pb_ = ia[pairs[:, 0]], ib[pairs[:, 1]]
        keep = rows["sha"].to_numpy()[pa_] != rows["sha"].to_numpy()[pb_]
        pa_, pb_ = pa_[keep], pb_[keep]
        same_group = rows["group"].to_numpy()[pa_] == rows["group"].to_numpy()[pb_]
        pair_counts[f"{a}-{b}"] = {"pairs": int(len(pa_)), "pairs_other_group": int((~same_group).sum())}
        for i, j, g in zip(pa_, pb_, same_group):
            near_rows.append(
                (f"{a}-{b}", rows["id"].iat[i], rows["id"].iat[j], int(np.bitwise_count(ph[i] ^ ph[j])), bool(g))
            )

    n_items = {s: int((split_arr == s).sum()) for s in SPLITS}
    failed = bool(len(groups) or len(videos) or len(exact))
    table, origin = nuisance_table(rows, stats[:, 0], stats[:, 1], stats[:, 2])
    shortcut = shortcut_audit(
        table,
        shortcut_free,
        cfg.shortcut_max_auc,
        cfg.shortcut_gate_features,
        cfg.shortcut_bootstrap,
        cfg.shortcut_seed,
    )
    flags = flag_test_items(rows)
    listed, shared_ids = celebdf_list_audit(rows, test_list)
    metrics = {
        "variant": name,
        "leak_free_declared": leak_free,
        "shortcut_free_declared": shortcut_free,
        "leak_check": ("failed" if failed else "passed") if leak_free else "not required",
        "items": n_items,
        "groups": int(rows["group"].nunique()),
        "group_leaks": int(len(groups)),
        "items_in_leaking_groups": int(rows["group"].isin(groups.index).sum()),
        "group_leaks_by_source": {k: int(v) for k, v in sorted(leak_groups_src.items())},
        "videos": int(rows.loc[rows["video_key"] != "", "video_key"].nunique()),
        "video_leaks": int(len(videos)),
        "test_items_video_in_train": int(flags["video_in_train"].sum()),
        "test_items_group_in_train": int(flags["group_in_train"].sum()),
        "exact_duplicates": int(len(exact)),
        "near_duplicate_pairs": int(sum(v["pairs"] for v in pair_counts.values())),
        "near_duplicate_pairs_other_group": int(sum(v["pairs_other_group"] for v in pair_counts.values())),
        "near_duplicates_by_split_pair": pair_counts,
        "hamming_threshold": cfg.hamming_threshold,
        "shortcut": shortcut,
        "celebdf_test_list": listed,
    }
    metrics["gate"] = gate_status(metrics)
    md = _markdown(metrics, groups, videos, exact, exact_ids, near_rows, cfg.max_examples)
    md += "\n".join(_test_list_md(listed, shared_ids, cfg.max_examples)) + "\n"
    md += "\n".join(shortcut_markdown(shortcut, origin)) + "\n"
    return metrics, md, flags


def _table_md(title: str, table: pd.DataFrame, key: str, k: int, ids: dict | None = None) -> list[str]:
    """Markdown table of a :func:`_spread` result; ``ids``: key -> item ids, shown in an extra column."""
    lines = [f"## {title}: {len(table)}", ""]
    if len(table) and k:
        cols = list(table.columns)
        extra = ["items"] if ids is not None else []
        lines += [f"| {key} | " + " | ".join(cols + extra) + " |", "|---|" + "---|" * (len(cols) + len(extra))]
        for idx, r in table.head(k).iterrows():
            cells = [str(int(r[c])) for c in cols]
            if ids is not None:
                cells.append(", ".join(f"`{i}`" for i in ids.get(idx, [])))
            lines.append(f"| `{idx}` | " + " | ".join(cells) + " |")
        if len(table) > k:
            lines.append(f"| ... {len(table) - k} more | " + " | ".join("" for _ in cols + extra) + " |")
        lines.append("")
    return lines


def _markdown(m: dict, groups, videos, exact, exact_ids, near_rows, k: int) -> str:
    items = ", ".join(f"{s} {n}" for s, n in m["items"].items())
    lines = [
        f"# Leakage audit: variant `{m['variant']}`",
        "",
        f"Items: {items}. Declared leak-free: {m['leak_free_declared']}. Leak check: **{m['leak_check']}**. "
        f"Declared shortcut-free: {m['shortcut_free_declared']}. Gate: **{m['gate']}**.",
        "",
        "| finding | count |",
        "|---|---|",
        f"| groups (union-find of group_keys) on more than one split | {m['group_leaks']} of {m['groups']} "
        f"({m['items_in_leaking_groups']} items) |",
        f"| videos on more than one split | {m['video_leaks']} of {m['videos']} |",
        f"| exact duplicates (same pixels) across splits | {m['exact_duplicates']} |",
        f"| test items whose video / group has items in train | {m['test_items_video_in_train']} / "
        f"{m['test_items_group_in_train']} of {m['items']['test']} |",
        f"| near-duplicate pairs across splits (pHash distance <= {m['hamming_threshold']}) | "
        f"{m['near_duplicate_pairs']} ({m['near_duplicate_pairs_other_group']} between different groups) |",
        "",
    ]
    if m["group_leaks_by_source"]:
        lines += [
            "Leaking groups by source: " + ", ".join(f"{s} {n}" for s, n in m["group_leaks_by_source"].items()),
            "",
        ]
    lines += _table_md("Groups on more than one split", groups, "group", k)
    lines += _table_md("Videos on more than one split", videos, "video (method:video_id)", k)
    lines += _table_md("Exact duplicates across splits", exact, "content sha256", k, exact_ids)
    lines += [f"## Near-duplicate pairs: {len(near_rows)}", ""]
    if near_rows and k:
        lines += ["| splits | item | item | distance | same group |", "|---|---|---|---|---|"]
        for r in sorted(near_rows, key=lambda r: (r[3], r[0], r[1], r[2]))[:k]:
            lines.append(f"| {r[0]} | `{r[1]}` | `{r[2]}` | {r[3]} | {'yes' if r[4] else 'no'} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _test_list_md(s: dict, shared: pd.DataFrame, k: int) -> list[str]:
    lines = [f"## Celeb-DF official test list: {s['check']}", ""]
    if s["check"] == "not required":
        return lines + ["No Celeb-DF video in train or val.", ""]
    if not s["configured"]:
        return lines + [
            f"{s['celebdf_videos_train_val']} Celeb-DF videos in train/val, but no test list is "
            "configured (split.celebdf_test_list): they cannot be checked.",
            "",
        ]
    lines += [
        f"Listed videos in train/val: **{s['listed_videos_train_val']}** (must be 0); in test: "
        f"{s['listed_videos_test']}. Identities shown by the list's videos and by train/val videos: "
        f"**{s['identities_shared']}** of {s['identities_listed']} listed identities "
        f"({s['identities_train_val']} identities in train/val).",
        "",
    ]
    if len(shared) and k:
        lines += ["| identity | videos on the test list | train/val videos |", "|---|---|---|"]
        lines += [f"| `{r.identity}` | {r.listed_videos} | {r.train_val_videos} |" for r in shared.head(k).itertuples()]
        if len(shared) > k:
            lines.append(f"| ... {len(shared) - k} more | | |")
        lines.append("")
    return lines


def gate_status(metrics: dict) -> str:
    """``failed`` if a check failed, ``passed`` if some check ran and passed, else ``not_required``.

    The declared checks (leak_free, shortcut_free) and the Celeb-DF test-list check (every
    variant holding Celeb-DF videos in train or val) count.
    """
    checks = [metrics["leak_check"], metrics["shortcut"]["check"], metrics["celebdf_test_list"]["check"]]
    if "failed" in checks:
        return "failed"
    return "passed" if "passed" in checks else "not_required"


def check_gate(metrics: dict) -> dict:
    """Return the gate verdict (``gate.json`` less its fingerprint), or raise :class:`LeakError`,
    :class:`ShortcutError` or :class:`OfficialListError`."""
    if metrics["leak_check"] == "failed":
        raise LeakError(
            f"variant {metrics['variant']!r} is declared leak_free but the audit found "
            f"{metrics['group_leaks']} group leak(s), {metrics['video_leaks']} video leak(s) and "
            f"{metrics['exact_duplicates']} exact duplicate(s) across splits; see the audit report"
        )
    s = metrics["shortcut"]
    if s["check"] == "failed":
        gate = s["probes"]["gate"]
        best = max(gate, key=lambda p: gate[p]["auc"] or 0.0)
        raise ShortcutError(
            f"variant {metrics['variant']!r} is declared shortcut_free but the {best} probe on the gate "
            f"features {s['features']['gate']} reaches test AUC {s['max_auc']} > "
            f"audit.shortcut_max_auc {s['threshold']}; see the audit report"
        )
    t = metrics["celebdf_test_list"]
    if t["check"] == "failed":
        if not t["configured"]:
            raise OfficialListError(
                f"variant {metrics['variant']!r} has {t['celebdf_videos_train_val']} Celeb-DF video(s) in train/val "
                "but split.celebdf_test_list is not set, so the official test list cannot be checked"
            )
        raise OfficialListError(
            f"variant {metrics['variant']!r} has {t['listed_videos_train_val']} video(s) of Celeb-DF's official "
            "test list in train/val; see the audit report"
        )
    return {"variant": metrics["variant"], "leak_free": metrics["leak_free_declared"], "status": metrics["gate"]}
