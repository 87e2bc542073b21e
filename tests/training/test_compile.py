"""``train.compile``: CPU falls back to eager with one logged line; a compiled model trains and its
checkpoint holds the plain module's keys; the CUDA step loop reads nothing back per step."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytest
import torch

from dfpipe.core.config import build
from dfpipe.models import build_model
from dfpipe.training.checkpoint import COMPILED_PREFIX, load_model, save_model
from dfpipe.training.config import RunConfig, TrainConfig
from dfpipe.training.engine import compile_model, train_one_epoch
from dfpipe.training.losses import build_loss
from dfpipe.training.train import RunPaths, fit

from helpers import approve_variant, loss_config, make_variant, run_dict

pytestmark = pytest.mark.usefixtures("torch_one_thread")

RUN = run_dict(model={"name": "resnet18", "num_classes": 3, "image_size": 32, "width": 0.25}, variant="toy",
               lr=0.01, batch_size=6, epochs=1, optimizer="adam", schedule="none", warmup_epochs=0.0, seeds=[5],
               max_steps_per_epoch=1, bn_recalibration_images=0)


def _batches(n: int = 1, b: int = 6, size: int = 32) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    return [{"image": torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8, generator=g),
             "label": torch.arange(b) % 3, "index": torch.arange(b)} for _ in range(n)]


def test_compile_on_cpu_falls_back_to_eager_with_one_logged_line():
    model, lines = torch.nn.Linear(2, 2), []
    assert compile_model(model, torch.device("cpu"), True, lines.append) is model
    assert len(lines) == 1 and "train.compile" in lines[0] and "cpu" in lines[0]
    assert compile_model(model, torch.device("cpu"), False, lines.append) is model and len(lines) == 1


def test_compiled_model_trains_one_step_and_saves_plain_keys(tmp_path):
    """torch.compile with the "eager" backend (no C++ toolchain, seconds) stands in for inductor:
    the wrapper, its prefixed state dict and the unwrapping are the same."""
    run_cfg = build(RunConfig, RUN, where="runs.test")
    torch.manual_seed(0)
    model = build_model(run_cfg.model)
    compiled = torch.compile(model, backend="eager")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(compiled.parameters(), lr=0.01)
    out = train_one_epoch(compiled, _batches(), build_loss(loss_config(), 3), opt,
                          torch.amp.GradScaler("cpu", enabled=False), torch.device("cpu"), progress=False)
    assert out["steps"] == 1 and out["loss"] > 0
    assert not torch.equal(before["backbone.conv1.weight"], model.state_dict()["backbone.conv1.weight"])
    # control: the wrapper's own keys carry the prefix the checkpoint must not
    assert all(k.startswith(COMPILED_PREFIX) for k in compiled.state_dict())
    save_model(tmp_path / "compiled.pt", compiled, run_cfg)
    save_model(tmp_path / "given.pt", compiled, run_cfg, state_dict=compiled.state_dict())
    save_model(tmp_path / "plain.pt", model, run_cfg)
    keys = list(torch.load(tmp_path / "compiled.pt", weights_only=True)["model"])
    assert keys == list(model.state_dict()) and not any(COMPILED_PREFIX in k for k in keys)
    plain = (tmp_path / "plain.pt").read_bytes()
    assert (tmp_path / "compiled.pt").read_bytes() == plain == (tmp_path / "given.pt").read_bytes()
    loaded, _ = load_model(tmp_path / "compiled.pt")  # strict load into a plain model
    assert torch.equal(loaded.state_dict()["backbone.conv1.weight"], model.state_dict()["backbone.conv1.weight"])


def _fit(root: Path, out: str, compile_: bool) -> tuple[bytes, str]:
    run_cfg = build(RunConfig, RUN, where="runs.test")
    train_cfg = build(TrainConfig, {"device": "cpu", "amp": "off", "progress": False, "threads": 1, "log_every": 0,
                                    "compile": compile_, "models_dir": f"{out}/models",
                                    "metrics_dir": f"{out}/metrics", "scratch_dir": f"{out}/scratch",
                                    "log_dir": f"{out}/logs"}, where="train")
    paths = RunPaths.for_run("test", run_cfg, train_cfg, Path("metrics/audit"))
    paths = dataclasses.replace(paths, **{f: root / getattr(paths, f) for f in (
        "variant_dir", "out_dir", "metrics_dir", "scratch_dir", "log_file", "gate")})
    approve_variant(paths.variant_dir, paths.gate)
    fit("test", run_cfg, train_cfg, paths)
    return (paths.out_dir / "seed5.pt").read_bytes(), paths.log_file.read_text()


def test_compile_true_on_cpu_trains_the_same_bytes_and_says_so(tmp_path):
    make_variant(tmp_path / "data/variants/toy", per_class={"train": 4, "val": 2}, size=32)
    eager, eager_log = _fit(tmp_path, "eager", False)
    asked, asked_log = _fit(tmp_path, "asked", True)
    assert asked == eager
    assert "train.compile" not in eager_log and "train.compile: true ignored on cpu" in asked_log


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: counts host-device synchronisations")
def test_cuda_step_loop_syncs_a_fixed_number_of_times_not_per_step():
    """CUDA's sync debug mode warns at every synchronising call: the count over an epoch must not
    grow with its steps (the end-of-epoch reads are the only ones)."""
    device = torch.device("cuda")
    run_cfg = build(RunConfig, RUN, where="runs.test")

    def syncs(steps: int) -> int:
        torch.manual_seed(0)
        model = build_model(run_cfg.model).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        batches = [{k: v.pin_memory() for k, v in b.items()} for b in _batches(steps)]
        loss_fn = build_loss(loss_config(), 3).to(device)
        scaler = torch.amp.GradScaler("cuda", enabled=False)
        train_one_epoch(model, batches[:1], loss_fn, opt, scaler, device, progress=False)  # lazy init
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                train_one_epoch(model, batches, loss_fn, opt, scaler, device, epoch=1, progress=False)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    assert syncs(2) == syncs(6)


def test_demo_params_train_eager_and_the_full_profile_compiles(repo):
    from dfpipe.core.config import load_yaml

    assert load_yaml(repo / "params.yaml")["train"]["compile"] is False  # demo bytes: eager
    assert load_yaml(repo / "params.full.yaml")["train"]["compile"] is True  # for CUDA
