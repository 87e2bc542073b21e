"""End to end: a reviewer pulls one variant's exact bytes from a DVC remote (docs/sharing.md).

In a temporary git + DVC repository (``kit.build``, tests/pipeline/conftest.py): a stage writes
small generated face shards + manifests, the real ``stages/variant.py`` builds a tiny v4-like
variant, ``dvc push`` fills a local remote; then a fresh ``git clone`` pulls only ``variant@tiny``
and must get byte-identical files, without the upstream faces, with DVC seeing them as up to date.
The README's reviewer path, ``make pull VARIANT=<v>`` (the real Makefile), pulls the same bytes in
a second clone; it runs with the test's DVC (``PULL_DVC``) because creating ``.venv-pull`` needs
the package index, which ``DFPIPE_TEST_PULL_ENV=1`` enables (then the env must hold DVC and no torch).
The release flow (tag, push, main moves on, ``dvc get --rev <tag>`` / ``make pull`` at the tag) is
checked here too; SSH and S3 remotes: test_remotes.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def test_citation_cff_is_valid_and_current():
    """CITATION.cff: the keys CFF 1.2.0 requires, the package's version, the restricted sources cited."""
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0"
    assert {"message", "title", "authors"} <= set(cff)
    assert all("name" in a or "family-names" in a for a in cff["authors"])
    version = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    assert str(cff["version"]) == version
    titles = " ".join(r["title"] for r in cff["references"])
    for name in ("FaceForensics++", "Celeb-DF", "DeepFake Detection Challenge", "Style-Based Generator"):
        assert name in titles, name


@pytest.fixture(scope="module")
def published(tmp_path_factory, kit) -> tuple:
    """A pushed tiny repository (tag v0.1) and the bytes of its variant."""
    tmp_path = tmp_path_factory.mktemp("sharing")
    repo = kit.build(tmp_path)
    kit.run([kit.DVC, "remote", "add", "-d", "store", str(tmp_path / "remote")], repo)
    kit.run([kit.DVC, "push", "-q"], repo)
    kit.run(["git", "commit", "-q", "-am", "default remote"], repo)
    kit.run(["git", "tag", "v0.1"], repo)
    original = kit.files(repo / "data/variants/tiny")
    assert {"train/masks-00000.npy", "summary.json", "card.md"} <= set(original)
    return repo, original


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="git is required")
def test_reviewer_pulls_one_variant_byte_identical(published, tmp_path, kit):
    repo, original = published
    clone = tmp_path / "clone"
    kit.run(["git", "clone", "-q", "--branch", "v0.1", str(repo), str(clone)], tmp_path)
    kit.run([kit.DVC, "pull", "-q", "variant@tiny"], clone)
    assert kit.files(clone / "data/variants/tiny") == original
    assert not (clone / "data/faces").exists()  # one variant alone, not its upstream
    out = kit.run([kit.DVC, "status", "--cloud", "variant@tiny"], clone)
    assert "in sync" in out.lower(), out
    kit.run([kit.DVC, "pull", "-q"], clone)
    out = kit.run([kit.DVC, "status"], clone)
    assert "up to date" in out.lower(), out


def _make_pull(published, tmp_path, kit, extra: list[str], rev: str = "v0.1") -> tuple:
    repo, original = published
    clone = tmp_path / f"clone-{rev}"
    kit.run(["git", "clone", "-q", "--branch", rev, str(repo), str(clone)], tmp_path)
    proc = subprocess.run(["make", "pull", "VARIANT=tiny", *extra], cwd=clone, env=kit.env(), capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"make pull failed:\n{proc.stdout}\n{proc.stderr}"
    assert not (clone / "data/faces").exists()
    return clone, kit.files(clone / "data/variants/tiny")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None or shutil.which("git") is None, reason="make and git required")
def test_make_pull_fetches_one_variant(published, tmp_path, kit):
    """The README's reviewer command, with the test's DVC standing in for .venv-pull."""
    _, pulled = _make_pull(published, tmp_path, kit, [f"PULL_DVC={kit.DVC}"])
    assert pulled == published[1]


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("DFPIPE_TEST_PULL_ENV") != "1",
                    reason="creating .venv-pull needs the package index: set DFPIPE_TEST_PULL_ENV=1")
def test_make_pull_creates_a_dvc_only_env(published, tmp_path, kit):
    clone, pulled = _make_pull(published, tmp_path, kit, [])
    assert pulled == published[1]
    py = clone / ".venv-pull" / "bin" / "python"
    probe = subprocess.run([str(py), "-c", "import importlib.util as u; import dvc; "
                            "print(u.find_spec('torch') is None)"], capture_output=True, text=True)
    assert probe.stdout.strip() == "True", probe.stderr


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None or shutil.which("git") is None, reason="make and git required")
def test_release_tag_returns_tagged_bytes_after_main_moved(published, tmp_path, kit):
    """docs/sharing.md "Releases": tag + push, then main changes the variant (new salt, pushed);
    ``dvc get --rev <tag>`` and ``make pull`` at the tag still give the tagged bytes, main the new ones."""
    tagged, original = published
    repo = tmp_path / "repo"
    kit.run(["git", "clone", "-q", str(tagged), str(repo)], tmp_path)  # the maintainer's second checkout
    shutil.copytree(tagged / ".dvc" / "cache", repo / ".dvc" / "cache")
    (repo / "params.yaml").write_text(yaml.safe_dump(kit.params(salt="moved-on"), sort_keys=False))
    kit.run([kit.DVC, "repro", "-q"], repo)
    kit.run([kit.DVC, "push", "-q"], repo)
    kit.run(["git", "commit", "-q", "-am", "new salt"], repo)
    moved = kit.files(repo / "data/variants/tiny")
    assert moved != original  # control: main's variant really changed

    got = tmp_path / "got"
    kit.run([kit.DVC, "get", str(repo), "data/variants/tiny", "--rev", "v0.1", "-o", str(got)], tmp_path)
    assert kit.files(got) == original
    head = tmp_path / "head"
    kit.run([kit.DVC, "get", str(repo), "data/variants/tiny", "-o", str(head)], tmp_path)
    assert kit.files(head) == moved
    published_main = (repo, moved)
    assert _make_pull(published_main, tmp_path, kit, [f"PULL_DVC={kit.DVC}"], rev="v0.1")[1] == original
    assert _make_pull(published_main, tmp_path, kit, [f"PULL_DVC={kit.DVC}"], rev="main")[1] == moved
