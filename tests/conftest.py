"""Shared pytest fixtures. Test modules never import each other: shared code lives in helpers.py
(builders of small generated data) and synthetic.py (a detectable face, small videos)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # helpers.py, synthetic.py

from helpers import REPO, RUN_DEFAULTS, make_variant  # noqa: E402


@pytest.fixture(scope="session")
def repo() -> Path:
    """The repository root (holds params.yaml)."""
    return REPO


@pytest.fixture(scope="session")
def run_defaults() -> dict:
    """params.yaml's ``run_defaults`` (a copy per session; do not mutate)."""
    return RUN_DEFAULTS


@pytest.fixture(scope="module")
def toy_variant(tmp_path_factory) -> Path:
    """A tiny variant ``<tmp>/toy/{train,val,test}`` in the variant stage's format (shards + manifest)."""
    return make_variant(tmp_path_factory.mktemp("variant") / "toy")


@pytest.fixture()
def torch_one_thread():
    """fit() sets process-wide torch state; restore it. One thread: the CI box is shared (2 cores).
    Modules that train use it with ``pytestmark = pytest.mark.usefixtures("torch_one_thread")``."""
    import torch

    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(det)
