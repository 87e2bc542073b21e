"""Dataset cards: variant@ writes card.md beside summary.json; audit@ completes it with its figures."""

from __future__ import annotations

import pandas as pd
import pytest

from dfpipe.splits.audit import audit_variant
from dfpipe.splits.card import CARD, card_rows, family, variant_card, write_completed_card
from dfpipe.splits.variants import build_variant
from helpers import ALL, AUDIT, SIZE, face_rows, split_cfg, variant_cfg, write_source

FF = {"codec": "h264", "file_format": "mp4", "face_rule": "largest", "resize_kernel": "area"}


@pytest.fixture()
def faces(tmp_path):
    faces = tmp_path / "faces"
    write_source(faces, face_rows("ffhq", n_images=24, per_identity=3, provenance={"file_format": "png"}))
    write_source(faces, face_rows("gan_a", n_images=24))
    write_source(faces, face_rows("ff_f2f_k", videos=[(f"{i:03d}", f"{i + 1:03d}") for i in range(0, 20, 2)], frames=4,
                                  provenance=FF))
    return faces


def test_variant_stage_writes_a_deterministic_card(tmp_path, faces):
    split = split_cfg(tmp_path, on_shortfall="cap")
    summary = build_variant("v4", variant_cfg(masks=True, train=ALL, test=ALL), split)
    path = tmp_path / "variants/v4" / CARD
    card = path.read_text()
    for s, c in summary["counts"].items():  # counts per split and class, as summary.json
        by = c["by_label"]
        labels = " | ".join(str(by.get(k, 0)) for k in ("real", "fake", "edited"))
        row = f"| {s} | {c['items']} | {c['units']} | {labels} |"
        assert row in card, row
    assert "salt `test-salt`" in card and "`metrics/audit/v4.card.md`" in card
    assert f"| {SIZE}x{SIZE} | not recorded | mp4 | h264 | largest | area | 10 videos, 4 median, 4 max |" in card
    assert "| FaceForensics++ | Rossler et al., ICCV 2019 | not redistributable" in card
    assert "| FFHQ |" in card and "CC BY-NC-SA 4.0" in card and "| GAN images (gan_a) |" in card
    assert "Celeb-DF" not in card.split("## Licences")[1].split("Variants built")[0]  # control: only sources present
    first = path.read_bytes()
    build_variant("v4", variant_cfg(masks=True, train=ALL, test=ALL), split)
    assert path.read_bytes() == first
    build_variant("v4", variant_cfg(masks=True, train=ALL, test=ALL), split.model_copy(update={"salt": "other"}))
    assert path.read_bytes() != first  # control: the card follows the split


def test_card_names_each_restricted_source():
    assert family(["celebdf:id3"], 0, "Celeb-real") == "celebdf"
    assert family(["dfdc:abc"], 1, "dfdc") == "dfdc"
    assert family(["stylegan/img1.png"], 1, "stylegan") == "gan:stylegan"
    rows = pd.DataFrame(dict(
        id=["a", "b", "c"], source=["celeb", "dfdc", "dfd"], label=[2, 1, 2], method=["m", "dfdc", "m"],
        group_keys=[["celebdf:id1"], ["dfdc:x"], ["dfd_actor:01"]], video_id=["v1", "v2", "v3"], split="test",
        split_group=["g1", "g2", "g3"], has_mask=False, crop="8x8", native_face=100.0, file_format="mp4", codec="",
        face_rule="",
        resize_kernel=""))
    card = variant_card("x", {"description": "d", "masks": False}, rows, "s", "a.card.md")
    lic = card.split("## Licences")[1]
    for name in ("Celeb-DF v2", "DFDC", "DeepFakeDetection"):
        line = next(ln for ln in lic.splitlines() if ln.startswith(f"| {name}"))
        assert "not redistributable" in line and "own access grant" in line, line
    assert "FFHQ" not in lic.split("Variants built")[0]


def test_audit_completes_the_card_with_its_figures(tmp_path, faces):
    split = split_cfg(tmp_path, on_shortfall="cap")
    for name, level in (("clean", "group"), ("leaky", "frame")):  # leaky: the control, frames on both sides
        build_variant(name, variant_cfg(level=level, leak_free=level == "group", train=ALL, test=ALL), split)
        vdir = tmp_path / "variants" / name
        m, _, _ = audit_variant(name, vdir, level == "group", AUDIT)
        out = write_completed_card(vdir, m, tmp_path / f"{name}.card.md").read_text()
        assert out.startswith((vdir / CARD).read_text().rstrip("\n"))
        assert f"Gate: **{m['gate']}**" in out
        assert f"| groups on more than one split | {m['group_leaks']} of {m['groups']} " in out
        assert f"| {m['shortcut']['max_auc']} |" in out
        if name == "leaky":
            assert m["video_leaks"] > 0 and f"| videos on more than one split | {m['video_leaks']} of" in out
        else:
            assert m["group_leaks"] == m["video_leaks"] == 0 and "Leak check: **passed**" in out
    assert len(card_rows(tmp_path / "variants/clean")) == sum(m["items"].values())
