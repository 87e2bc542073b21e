"""Dataset cards: what a variant holds, how it was made, who may use it (Markdown, deterministic).

``variant@<name>`` writes :func:`variant_card` to ``data/variants/<name>/card.md`` beside
``summary.json``: sources and counts per split and class, how the items were made (the provenance
columns the preprocess stage recorded in every manifest row: crop size, file format, codec, face
rule, resize kernel; video frames per video), the split rule and salt, intended use and the licence
conditions of each source dataset. ``audit@<name>`` cannot write into that folder (it is
``variant@``'s DVC output), so it writes the completed card -- the same text plus
:func:`audit_section` with the leak and shortcut figures -- to ``metrics/audit/<name>.card.md``;
the variant card points there. Everything is derived from the written rows and the params the
stage already depends on, so the card adds no dependency and is byte-stable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dfpipe.core.io import write_bytes
from dfpipe.core.manifest import LABELS, SPLITS, read_table

CARD = "card.md"

#: Source dataset families, by the prefix of an item's group keys (dfpipe.ingest.sources / datasets):
#: (name, reference, licence conditions).
FAMILIES: dict[str, tuple[str, str, str]] = {
    "ffpp": (
        "FaceForensics++",
        "Rossler et al., ICCV 2019",
        "not redistributable: access only after accepting the FaceForensics++ terms of use (EULA / "
        "access form); a reviewer needs their own access grant to hold these crops",
    ),
    "dfd_actor": (
        "DeepFakeDetection (distributed with FaceForensics++)",
        "Google / Jigsaw 2019, via FaceForensics++",
        "as FaceForensics++: not redistributable without its terms of use; own access grant needed",
    ),
    "celebdf": (
        "Celeb-DF v2",
        "Li et al., CVPR 2020",
        "not redistributable: research use after the Celeb-DF request form is approved; own access grant needed",
    ),
    "celebdf_yt": (
        "Celeb-DF v2 (YouTube-real)",
        "Li et al., CVPR 2020",
        "not redistributable: research use after the Celeb-DF request form is approved; own access grant needed",
    ),
    "dfdc": (
        "DFDC",
        "Dolhansky et al., arXiv 2006.07397",
        "not redistributable: DFDC data licence agreement (non-commercial research); own access grant needed",
    ),
    "ffhq": (
        "FFHQ",
        "Karras et al., CVPR 2019",
        "CC BY-NC-SA 4.0 as a collection (NVIDIA); each photo keeps its own Flickr licence "
        "(CC BY / BY-NC / public domain ...): non-commercial, attribute, share alike",
    ),
}
GAN = ("GAN images", "generator named by the source", "the licence of the generator's release and of its training data")
DEMO = (
    "embedded demo data",
    "dfpipe make_demo",
    "generated deterministically by this project (no real person, no third-party data): the project's own terms",
)


def family(keys: Sequence[str], label: int, method: str) -> str:
    """The family key of an item: its first group key's prefix when known, else ``gan:<method>``
    for generated images and the method otherwise."""
    for k in keys:
        prefix = str(k).split(":", 1)[0]
        if prefix in FAMILIES:
            return prefix
    return f"gan:{method}" if int(label) == 1 else str(method)


def _families(rows: pd.DataFrame) -> pd.Series:
    return pd.Series(
        [family(list(k), int(lab), str(m)) for k, lab, m in zip(rows["group_keys"], rows["label"], rows["method"])],
        index=rows.index,
        dtype=object,
    )


def _fmt(values: pd.Series) -> str:
    vals = sorted({str(v) for v in values if str(v) not in ("", "nan")})
    return ", ".join(vals) if vals else "not recorded"


def _counts_table(rows: pd.DataFrame) -> list[str]:
    labels = list(LABELS.values())
    lines = [
        "| split | items | units | " + " | ".join(labels) + " | with mask |",
        "|---|---|---|" + "---|" * len(labels) + "---|",
    ]
    for s in SPLITS:
        sub = rows[rows["split"] == s]
        by = sub["label"].map(lambda v: LABELS[int(v)]).value_counts()
        cells = [str(int(by.get(lab, 0))) for lab in labels]
        lines.append(
            f"| {s} | {len(sub)} | {sub['split_group'].nunique()} | "
            + " | ".join(cells)
            + f" | {int(sub['has_mask'].astype(bool).sum())} |"
        )
    return lines


def _sources_table(rows: pd.DataFrame, fams: pd.Series) -> list[str]:
    lines = [
        "| source | dataset | class | train | val | test | crop | native face (median px) | source format "
        "| codec control | face rule | resize | frames per video |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for src, sub in rows.groupby("source", sort=True):
        fam = fams[sub.index[0]]
        name = FAMILIES[fam][0] if fam in FAMILIES else (f"{GAN[0]} ({fam[4:]})" if fam.startswith("gan:") else fam)
        n = {s: int((sub["split"] == s).sum()) for s in SPLITS}
        videos = sub[sub["video_id"].astype(str) != ""]
        if len(videos):
            per = videos.groupby(["video_id"])["id"].count().to_numpy()
            frames = f"{len(per)} videos, {int(np.median(per))} median, {int(per.max())} max"
        else:
            frames = "stills"
        crop = _fmt(sub["crop"])
        native = pd.to_numeric(sub["native_face"], errors="coerce").dropna()
        face = f"{float(native.median()):g}" if len(native) else "not recorded"
        codec = ", ".join(sorted({str(c) or "none" for c in sub["codec"]}))  # "": no codec control applied
        lines.append(
            f"| `{src}` | {name} | {_fmt(sub['label'].map(lambda v: LABELS[int(v)]))} | {n['train']} | {n['val']} "
            f"| {n['test']} | {crop} | {face} | {_fmt(sub['file_format'])} | {codec} | {_fmt(sub['face_rule'])} "
            f"| {_fmt(sub['resize_kernel'])} | {frames} |"
        )
    return lines


def _licences(fams: pd.Series) -> list[str]:
    lines = ["| dataset | reference | conditions |", "|---|---|---|"]
    for fam in sorted(set(fams)):
        if fam in FAMILIES:
            name, ref, cond = FAMILIES[fam]
        elif fam.startswith("gan:"):
            name, ref, cond = f"{GAN[0]} ({fam[4:]})", GAN[1], GAN[2]
        else:
            name, ref, cond = fam, "", "see the source's own terms"
        lines.append(f"| {name} | {ref} | {cond} |")
    lines.append(f"| ({DEMO[0]}) | {DEMO[1]} | {DEMO[2]} |")
    return lines


def _capped(capped: Sequence) -> str:
    out = []
    for c in capped:
        if isinstance(c, Mapping) and {"split", "source", "requested", "available"} <= set(c):
            out.append(f"{c['split']} `{c['source']}`: {c['available']} of {c['requested']}")
        else:
            out.append(str(c))
    return "; ".join(out)


def _pairs(d: Mapping) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items())


def variant_card(name: str, summary: Mapping, rows: pd.DataFrame, salt: str, audit_card: str) -> str:
    """The card of variant ``name`` from its written ``rows`` (every split, variant manifest columns plus
    ``crop``: the crop shape as text) and its ``summary.json`` dict; ``audit_card``: where the completed
    card is written (``metrics/audit/<name>.card.md``)."""
    fams = _families(rows)
    capped = summary.get("capped") or []
    celeb = summary.get("celebdf_test_list")
    bridging = summary.get("bridging") or {}
    lines = [
        f"# Dataset card: variant `{name}`",
        "",
        f"{summary.get('description', '')}",
        "",
        f"Written by the stage `variant@{name}` beside `summary.json` (the counts in machine form). The completed "
        f"card, with the leakage and shortcut audit's figures, is `{audit_card}`, written by `audit@{name}`.",
        "",
        "## Contents",
        "",
        *_counts_table(rows),
        "",
        "`units`: split units (union-find groups of `group_keys`; frame level: single video frames). "
        "Files: `{train,val,test}/manifest.parquet`, `images-NNNNN.npy` `(N, S, S, 3)` uint8 RGB"
        + (", `masks-NNNNN.npy` `(N, S, S)` uint8 0/255 at the same offset." if summary.get("masks") else "."),
        "",
        "## Sources and how the items were made",
        "",
        *_sources_table(rows, fams),
        "",
        "The provenance the preprocess stage recorded per item: crop (stored side), native face (side of the "
        "square crop region in source pixels), source format (container / codec of the source file), codec "
        "control (re-encoding applied before detection), face rule (the detector policy that picked the face: "
        "`only` one face, `largest`, `mask_overlap`), resize kernel. Frames per video: of the videos in this "
        "variant.",
        "",
        "## Split rule",
        "",
        f"- level: `{summary.get('level')}`; salt `{salt}`; scale {summary.get('scale')}",
        f'- a unit is in the test pool when sha256(salt, "split", unit) < {summary.get("test_fraction")} '
        f"(FF++ official split where configured: {summary.get('items_split_by_official_ffpp', 0)} items)",
        '- sampling: per source and split, the first n items of the pool ordered by sha256(salt, "sample", id)',
        f'- val: train units with sha256(salt, "val", unit) < {summary.get("val_fraction")}',
        f"- counts capped for lack of data: {len(capped)}" + (f" ({_capped(capped)})" if capped else ""),
    ]
    if celeb:
        lines.append(f"- Celeb-DF v2 official test list: {_pairs(celeb)}")
    if bridging:
        lines.append(f"- bridging face swaps: {_pairs(bridging)}")
    lines += [
        f"- declared leak-free: {summary.get('leak_free')}; declared shortcut-free: {summary.get('shortcut_free')}",
        "",
        "## Intended use",
        "",
        "Training and evaluating deepfake / generated-face detectors for research (the paper's tables). Not "
        "for identifying people, nor for any use the source datasets' terms below forbid. A frame-level "
        "variant leaks on purpose (see the audit) and measures that leak; it is not an honest benchmark.",
        "",
        "## Licences of the source datasets",
        "",
        *_licences(fams),
        "",
        "Variants built from the real downloads inherit these terms: FaceForensics++, Celeb-DF and DFDC crops "
        "must not be redistributed, and the project's DVC remote is never public-read. Variants built from "
        "the embedded demo data (the default `params.yaml`) hold generated images only.",
        "",
    ]
    return "\n".join(lines)


def audit_section(metrics: Mapping) -> str:
    """Markdown of the audit's leak and shortcut status with its figures (``audit_variant``'s metrics)."""
    sc = metrics.get("shortcut") or {}
    cd = metrics.get("celebdf_test_list") or {}
    lines = [
        "## Leakage and shortcut audit",
        "",
        f"Gate: **{metrics.get('gate')}**. Leak check: **{metrics.get('leak_check')}**; shortcut check: "
        f"**{sc.get('check')}**.",
        "",
        "| finding | value |",
        "|---|---|",
        f"| groups on more than one split | {metrics.get('group_leaks')} of {metrics.get('groups')} "
        f"({metrics.get('items_in_leaking_groups')} items) |",
        f"| videos on more than one split | {metrics.get('video_leaks')} of {metrics.get('videos')} |",
        f"| exact duplicates across splits | {metrics.get('exact_duplicates')} |",
        f"| near-duplicate pairs across splits (pHash Hamming <= {metrics.get('hamming_threshold')}) | "
        f"{metrics.get('near_duplicate_pairs')} ({metrics.get('near_duplicate_pairs_other_group')} in other groups) |",
        f"| shortcut probe: max test AUC on the gate features (threshold {sc.get('threshold')}) "
        f"| {sc.get('max_auc')} |",
        f"| shortcut probe: max test AUC, all features | {sc.get('max_auc_all_features')} |",
    ]
    if cd:
        lines.append(
            f"| Celeb-DF test list: check / identities shared with train+val | {cd.get('check')} / "
            f"{cd.get('identities_shared')} |"
        )
    lines += ["", f"Details: `{metrics.get('variant')}.md` and `{metrics.get('variant')}.json` beside this card.", ""]
    return "\n".join(lines)


def completed_card(variant_card_text: str, metrics: Mapping) -> str:
    """The variant's card followed by the audit section (``metrics/audit/<name>.card.md``)."""
    return variant_card_text.rstrip("\n") + "\n\n" + audit_section(metrics)


def card_rows(variant_dir: Path) -> pd.DataFrame:
    """Every split's manifest rows of a written variant, with ``crop``: the item's crop shape (``SxS``)."""
    parts = []
    for s in SPLITS:
        path = variant_dir / s / "manifest.parquet"
        if not path.is_file():
            continue
        df = read_table(path)
        shapes = {sh: np.load(variant_dir / s / sh, mmap_mode="r").shape[1:3] for sh in sorted(set(df["shard"]))}
        df["crop"] = [f"{shapes[sh][0]}x{shapes[sh][1]}" for sh in df["shard"]]
        parts.append(df)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def write_variant_card(name: str, variant_dir: Path, summary: Mapping, salt: str) -> Path:
    """Write ``<variant_dir>/card.md`` (called by ``variant@`` after ``summary.json``)."""
    text = variant_card(name, summary, card_rows(variant_dir), salt, f"metrics/audit/{name}.card.md")
    write_bytes(variant_dir / CARD, text.encode("utf-8"))
    return variant_dir / CARD


def write_completed_card(variant_dir: Path, metrics: Mapping, path: Path) -> Path:
    """Write the variant's card plus the audit section to ``path`` (``audit@``'s own output)."""
    text = (variant_dir / CARD).read_text(encoding="utf-8") if (variant_dir / CARD).is_file() else ""
    write_bytes(path, completed_card(text, metrics).encode("utf-8"))
    return path
