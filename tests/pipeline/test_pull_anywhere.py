"""`make pull` from a clone in an unrelated folder (docs/sharing.md, "Pull one variant").

The maintainer's repository (``kit.build``: the real variant stage, the real Makefile) commits its
default remote as the real .dvc/config does: a folder next to the repository, by a relative URL.
A reviewer's clone elsewhere resolves that URL next to itself, where nothing is: ``make pull``
must stop before ``dvc pull`` with one message naming the URL it tried and how to set one. After
``dvc remote modify --local <name> url <pushed folder>`` it pulls byte-identical files, ``dvc
status --cloud`` is in sync, and the docs' numpy/pandas snippet reads a pulled shard. Real DVC
throughout; with ``DFPIPE_TEST_PULL_ENV=1`` (package index reachable) ``make pull`` creates
``.venv-pull`` itself and the snippet runs in it (no torch there), else the test's DVC and Python
stand in for it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REAL_ENV = os.environ.get("DFPIPE_TEST_PULL_ENV") == "1"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("git") is None or shutil.which("make") is None, reason="git and make required"),
]


@pytest.fixture(scope="module")
def pushed(tmp_path_factory, kit) -> tuple[Path, Path, dict]:
    """(maintainer's repository, its pushed remote folder, the variant's bytes)."""
    root = tmp_path_factory.mktemp("maintainer")
    repo = kit.build(root)
    kit.run([kit.DVC, "remote", "add", "-d", "local", "../remote"], repo)  # as .dvc/config: ../../<folder>
    config = (repo / ".dvc" / "config").read_text()
    assert "url = ../../remote" in config, config  # relative to .dvc/: resolved by each clone itself
    kit.run([kit.DVC, "push", "-q"], repo)
    kit.run(["git", "commit", "-q", "-am", "default remote next to the repository"], repo)
    return repo, root / "remote", kit.files(repo / "data/variants/tiny")


def make_pull(clone: Path, kit) -> subprocess.CompletedProcess:
    extra = [] if REAL_ENV else [f"PULL_DVC={kit.DVC}"]
    return subprocess.run(["make", "pull", "VARIANT=tiny", *extra], cwd=clone, env=kit.env(), capture_output=True,
                          text=True, timeout=1200)


def clone_elsewhere(pushed, tmp_path_factory, kit) -> Path:
    clone = tmp_path_factory.mktemp("elsewhere") / "reviewer" / "dfpipe"
    clone.parent.mkdir(parents=True)
    kit.run(["git", "clone", "-q", str(pushed[0]), str(clone)], clone.parent)
    return clone


def docs_snippet(variant: str) -> str:
    """The python block of docs/sharing.md "Read a pulled shard", for ``variant``."""
    text = (REPO / "docs/sharing.md").read_text(encoding="utf-8")
    section = text.split("### Read a pulled shard", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 5, code
    assert "dfpipe" not in code and "torch" not in code
    return code.replace("data/variants/v4/", f"data/variants/{variant}/")


def test_unreachable_remote_named_then_pull_after_setting_it(pushed, tmp_path_factory, kit):
    repo, remote, original = pushed
    dvc = kit.DVC
    clone = clone_elsewhere(pushed, tmp_path_factory, kit)
    tried = (clone.parent / "remote").resolve()  # the committed ../../remote, seen from the clone
    assert not tried.exists()

    proc = make_pull(clone, kit)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert f"DVC remote 'local' is not reachable at {tried} (no such folder)" in out, out
    assert re.search(r"\S*dvc remote modify --local local url <url>", out), out
    assert "dvc remote add --local -d <name> <url>" in out, out
    assert "Traceback" not in out and not (clone / "data/variants/tiny").exists()
    assert "failed to pull" not in out  # stopped before `dvc pull`, not by it

    if REAL_ENV:  # what make pull created: DVC, the shard readers, no torch
        dvc = str(clone / ".venv-pull" / "bin" / "dvc")
        probe = subprocess.run([str(clone / ".venv-pull/bin/python"), "-c",
                                "import importlib.util as u, dvc, numpy, pandas, pyarrow; "
                                "print(u.find_spec('torch') is None)"], capture_output=True, text=True)
        assert probe.stdout.strip() == "True", probe.stderr
    kit.run([dvc, "remote", "modify", "--local", "local", "url", str(remote)], clone)
    proc = make_pull(clone, kit)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"DVC remote 'local' at {remote} is reachable" in proc.stdout
    assert kit.files(clone / "data/variants/tiny") == original
    assert not (clone / "data/faces").exists()
    assert "in sync" in kit.run([dvc, "status", "--cloud", "variant@tiny"], clone).lower()
    assert kit.run(["git", "status", "--porcelain", ".dvc"], clone) == ""  # the URL went to .dvc/config.local only

    python = str(clone / ".venv-pull/bin/python") if REAL_ENV else sys.executable
    read = subprocess.run([python, "-c", docs_snippet("tiny")], cwd=clone, capture_output=True, text=True,
                          timeout=120)
    assert read.returncode == 0, read.stderr
    item_id, label, *rest = read.stdout.split()
    assert label in {"0", "1", "2"} and " ".join(rest) == "(8, 8, 3) uint8", read.stdout


def test_missing_local_url_is_named(pushed, tmp_path_factory, kit):
    """A URL set with --local that names no folder (a typo) is reported as such, not pulled from."""
    clone = clone_elsewhere(pushed, tmp_path_factory, kit)
    typo = pushed[1].parent / "remtoe"
    kit.run([kit.DVC, "remote", "modify", "--local", "local", "url", str(typo)], clone)
    # the test's DVC in either mode: the check is the point here, not a second .venv-pull
    proc = subprocess.run(["make", "pull", "VARIANT=tiny", f"PULL_DVC={kit.DVC}"], cwd=clone, env=kit.env(),
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and f"not reachable at {typo} (no such folder)" in out, out
    assert not (clone / "data/variants/tiny").exists()
    # control, why the check exists: DVC alone reports missing cache files, never the URL it tried
    plain = subprocess.run([kit.DVC, "pull", "variant@tiny"], cwd=clone, env=kit.env(), capture_output=True,
                           text=True, timeout=300)
    assert plain.returncode != 0 and str(typo) not in plain.stdout + plain.stderr
