"""Listing of the public deepfake datasets as downloaded: Celeb-DF v2, DFDC, and identity parsing.

FaceForensics++ (with DeepFakeDetection) is listed by :func:`dfpipe.ingest.sources.list_items`
(kind ``ffpp``); this module adds the two standard cross-dataset test sets and the name parsing
the split stage needs for "bridging" fakes.

**Celeb-DF v2** (Li et al., CVPR 2020; github.com/yuezunli/celeb-deepfakeforensics), kind
``celebdf``, ``path`` = the dataset root::

    Celeb-real/id<k>_<n>.mp4            real, celebrity k                 -> keys ("celebdf:id<k>",)
    YouTube-real/<n>.mp4                real, unknown identity            -> keys ("celebdf_yt:<n>",)
    Celeb-synthesis/id<t>_id<s>_<n>.mp4 fake: video id<t>_<n> with the face of id<s>
                                                                          -> keys ("celebdf:id<t>",)
    List_of_testing_videos.txt          "<l> <folder>/<file>.mp4" per line, l = 1 real, 0 fake

Test list convention: ``1`` = real, ``0`` = synthesized (as public parsers of the file read it;
the README version in our search index, v1's, does not state it). The folder of every listed
video is checked against its list label (``label_mismatch`` reject), so an inverted convention
would reject every listed video instead of silently flipping labels.
A source's ``label`` picks the folders (0: Celeb-real + YouTube-real; 1 or 2: Celeb-synthesis)
and ``subset`` picks the videos (``test``: listed in the test file; ``train``: not listed; ``all``).
A listed video whose list label disagrees with its folder is a ``label_mismatch`` reject.

**DFDC** (Dolhansky et al. 2020, arXiv 2006.07397), kind ``dfdc``, ``path`` either

* the training set root: ``dfdc_train_part_<k>/metadata.json`` = ``{"<file>.mp4": {"label":
  "REAL"|"FAKE", "split": "train", "original": "<file>.mp4" (fakes)}}`` with the videos beside it;
  a fake joins its original's group (keys ``("dfdc:<original stem>",)``), or
* the public test set root: ``labels.csv`` (header ``filename,label``, label 1 = fake, 0 = real)
  with the videos beside it; the test set names no originals, so each video is its own group.

A source keeps the videos whose label matches its own (0 REAL, 1/2 FAKE), so one folder gives
two sources with one label each, as every other source.

**Bridging fakes.** A face swap shows two people: the target (whose video it is) and the source
face. Grouping both by union-find joins almost every actor of DeepFakeDetection (28 actors, 3,068
fakes) and of Celeb-DF into one group, so no group-level split exists. These datasets are grouped
by the *target* identity only; :func:`bridge_keys` gives ``(target_key, source_key)`` so the split
stage can find fakes whose two identities fall on different sides and drop them or keep them on
the target's side (``split.bridging``), counting them in ``summary.json``.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path, PurePosixPath

from dfpipe.ingest.items import Item, Reject

CELEBDF_REAL_FOLDERS = ("Celeb-real", "YouTube-real")
CELEBDF_FAKE_FOLDER = "Celeb-synthesis"
CELEBDF_TEST_LIST = "List_of_testing_videos.txt"
DFDC_METADATA = "metadata.json"
DFDC_TEST_LABELS = "labels.csv"

_CELEB_REAL = re.compile(r"^id(\d+)_(\d+)$")
_CELEB_FAKE = re.compile(r"^id(\d+)_id(\d+)_(\d+)$")
_YOUTUBE = re.compile(r"^(\d+)$")
_DFD_FAKE = re.compile(r"^(\d{2})_(\d{2})__")
_DFDC_PART = re.compile(r"^dfdc_train_part_(\d+)$")
_DFDC_NAME = re.compile(r"^[A-Za-z0-9_-]+\.mp4$")


def bridge_keys(video_id: str) -> tuple[str, str] | None:
    """``(target_key, source_key)`` of a face-swap video grouped by its target, else ``None``.

    ``video_id`` is the manifest's (path relative to the source root, no extension); its last
    component is parsed: DeepFakeDetection ``01_02__scene__ID`` -> ``("dfd_actor:01",
    "dfd_actor:02")``, Celeb-DF ``id0_id16_0003`` -> ``("celebdf:id0", "celebdf:id16")``.
    """
    stem = PurePosixPath(video_id).name
    if m := _DFD_FAKE.match(stem):
        return f"dfd_actor:{m.group(1)}", f"dfd_actor:{m.group(2)}"
    if m := _CELEB_FAKE.match(stem):
        return f"celebdf:id{m.group(1)}", f"celebdf:id{m.group(2)}"
    return None


def celebdf_group_keys(folder: str, stem: str) -> tuple[str, ...] | None:
    """Identity keys of a Celeb-DF v2 video (folder, file stem); ``None`` for a foreign name."""
    if folder == "Celeb-real" and (m := _CELEB_REAL.match(stem)):
        return (f"celebdf:id{m.group(1)}",)
    if folder == "YouTube-real" and (m := _YOUTUBE.match(stem)):
        return (f"celebdf_yt:{m.group(1)}",)
    if folder == CELEBDF_FAKE_FOLDER and (m := _CELEB_FAKE.match(stem)):
        return (f"celebdf:id{m.group(1)}",)
    return None


def read_celebdf_test_list(path: Path) -> dict[str, int]:
    """``{"Celeb-real/id0_0000.mp4": 0, ...}``: the official test videos, 0 real / 1 synthesized
    (the source's own ``label`` decides 1 or 2 for the fakes).

    The file's convention is ``1`` = real, ``0`` = synthesized; it is inverted here. A malformed
    line is a ``ValueError`` naming the file and line.
    """
    out: dict[str, int] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ("0", "1"):
            raise ValueError(f"{path}:{n}: expected '<1 real | 0 fake> <folder>/<file>.mp4', got {line!r}")
        rel = parts[1]
        if rel in out:
            raise ValueError(f"{path}:{n}: {rel} listed twice")
        out[rel] = 0 if parts[0] == "1" else 1
    return out


def list_celebdf(
    name: str, is_real: bool, subset: str, root: Path, flat_mp4, rejects: list[Reject]
) -> tuple[list[Item], list[Reject]]:
    """Items of a ``celebdf`` source; see the module docstring. ``flat_mp4(folder, prefix)`` yields
    ``(relative path, stem)`` of the videos in a folder (:mod:`dfpipe.ingest.sources`), appending
    other files to ``rejects``, which is returned with this listing's own rejects."""
    folders = CELEBDF_REAL_FOLDERS if is_real else (CELEBDF_FAKE_FOLDER,)
    test_path = root / CELEBDF_TEST_LIST
    test: dict[str, int] | None = None
    if subset != "all":
        if not test_path.is_file():
            raise FileNotFoundError(
                f"source {name}: {test_path} not found (subset {subset} needs Celeb-DF v2's official test list)"
            )
        test = read_celebdf_test_list(test_path)
    items = []
    for folder in folders:
        fdir = root / folder
        if not fdir.is_dir():
            raise FileNotFoundError(
                f"source {name}: {fdir} does not exist (Celeb-DF v2 layout "
                f"{'/'.join(CELEBDF_REAL_FOLDERS + (CELEBDF_FAKE_FOLDER,))})"
            )
        for rel, stem in flat_mp4(fdir, folder):
            keys = celebdf_group_keys(folder, stem)
            if keys is None:
                rejects.append(Reject(rel, -1, "bad_name", f"{stem!r} is not a Celeb-DF v2 name in {folder}"))
                continue
            if test is not None:
                listed = rel in test
                if listed and test[rel] != (0 if is_real else 1):
                    rejects.append(
                        Reject(
                            rel,
                            -1,
                            "label_mismatch",
                            f"{CELEBDF_TEST_LIST} labels it {'real' if test[rel] == 0 else 'fake'}",
                        )
                    )
                    continue
                if listed != (subset == "test"):
                    continue  # the other subset: not an error, not an item
            items.append(Item(rel, True, f"{folder}/{stem}", keys))
    if test is not None and subset == "test":
        mine = {r for r, lab in test.items() if (lab == 0) == is_real and r.split("/")[0] in folders}
        missing = sorted(mine - {it.path for it in items} - {r.path for r in rejects})
        for rel in missing:  # listed but not on disk: a recorded reject, not a silent gap
            rejects.append(Reject(rel, -1, "missing_file", f"listed in {CELEBDF_TEST_LIST}, not found"))
    items.sort(key=lambda it: it.path)
    return items, rejects


def _dfdc_train_labels(part: Path) -> dict[str, tuple[str, str | None]]:
    meta = part / DFDC_METADATA
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{meta}: not a readable DFDC metadata.json ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{meta}: expected a mapping of file name -> entry")
    out = {}
    for fname, entry in sorted(data.items()):
        if not isinstance(entry, dict) or entry.get("label") not in ("REAL", "FAKE"):
            raise ValueError(f"{meta}: entry {fname!r} has no label REAL/FAKE: {entry!r}")
        orig = entry.get("original")
        if entry["label"] == "FAKE" and not (isinstance(orig, str) and orig):
            raise ValueError(f"{meta}: fake {fname!r} names no original")
        out[fname] = (entry["label"], orig if entry["label"] == "FAKE" else None)
    return out


def _dfdc_test_labels(path: Path) -> dict[str, tuple[str, str | None]]:
    out: dict[str, tuple[str, str | None]] = {}
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"filename", "label"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected a header 'filename,label', got {reader.fieldnames}")
        for n, row in enumerate(reader, 2):
            lab = (row["label"] or "").strip()
            if lab not in ("0", "1", "0.0", "1.0"):
                raise ValueError(f"{path}:{n}: label {lab!r} is not 0 (real) or 1 (fake)")
            out[row["filename"].strip()] = ("FAKE" if lab.startswith("1") else "REAL", None)
    return out


def list_dfdc(name: str, label: int, root: Path, walk, inside) -> tuple[list[Item], list[Reject]]:
    """Items of a ``dfdc`` source (training parts or the public test set); see the module docstring."""
    want = "REAL" if label == 0 else "FAKE"
    if (root / DFDC_TEST_LABELS).is_file():
        tables = {"": _dfdc_test_labels(root / DFDC_TEST_LABELS)}
        own_groups = True
    else:
        parts = sorted(p.name for p in root.iterdir() if p.is_dir() and _DFDC_PART.match(p.name))
        if not parts:
            raise FileNotFoundError(
                f"source {name}: {root} holds neither {DFDC_TEST_LABELS} (public test "
                f"set) nor dfdc_train_part_<k>/{DFDC_METADATA} folders"
            )
        tables = {p: _dfdc_train_labels(root / p) for p in parts}
        own_groups = False
    items, rejects = [], []
    for part, table in tables.items():
        pdir = root / part if part else root
        on_disk = set(walk(pdir))
        for fname, (file_label, orig) in sorted(table.items()):
            rel = f"{part}/{fname}" if part else fname
            if not _DFDC_NAME.match(fname):
                rejects.append(Reject(rel, -1, "bad_name", f"{fname!r} is not a DFDC video file name"))
                continue
            if fname not in on_disk:
                if file_label == want:
                    rejects.append(Reject(rel, -1, "missing_file", "listed in the labels, not found"))
                continue
            if file_label != want or not inside(rel):
                continue
            # a fake joins its original's group; a real video (or any test-set video) is its own
            group = fname if (own_groups or orig is None) else orig
            group = group[: -len(".mp4")] if group.endswith(".mp4") else group
            items.append(Item(rel, True, rel[: -len(".mp4")], (f"dfdc:{group}",)))
        listed = set(table) | {DFDC_METADATA, DFDC_TEST_LABELS}
        for sub in sorted(on_disk - listed):
            if "/" in sub:
                continue  # other parts' folders (test-set root) are not ours to judge
            rel = f"{part}/{sub}" if part else sub
            rejects.append(Reject(rel, -1, "unlisted", "file not in the DFDC labels"))
    items.sort(key=lambda it: it.path)
    return items, rejects
