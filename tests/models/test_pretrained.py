"""Pretrained backbones: pinned copy / download, offline message, and the loading path into detectors.

The weights files are small generated state_dicts with the real key names (torchvision ResNet,
timm legacy Xception), so the test needs no network and no 45-90 MB download.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from dfpipe.core.config import ConfigError, build
from dfpipe.models.pretrained import (PretrainedConfig, PretrainedError, WeightsSpec, apply_init, obtain,
                                      source_url)
from dfpipe.models.registry import build_model, model_config


def xception_file(path, classes: int = 1000) -> torch.Tensor:
    """A few timm legacy_xception tensors: conv1 (32, 3, 3, 3), bn1, a 2-D pointwise weight as in
    the Keras-ported file, a 1000-class fc, and one key no model has."""
    g = torch.Generator().manual_seed(0)
    conv1 = torch.randn(32, 3, 3, 3, generator=g)
    state = {
        "conv1.weight": conv1,
        "bn1.weight": torch.rand(32, generator=g), "bn1.bias": torch.rand(32, generator=g),
        "bn1.running_mean": torch.zeros(32), "bn1.running_var": torch.ones(32),
        "conv2.weight": torch.randn(64, 32, 3, 3, generator=g),
        "block1.rep.0.pointwise.weight": torch.randn(128, 64, generator=g),
        "fc.weight": torch.randn(classes, 2048, generator=g), "fc.bias": torch.zeros(classes),
        "last_linear.extra": torch.zeros(3),
    }
    torch.save(state, path)
    return conv1


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_obtain_copies_local_file_checks_pin_and_downloads_by_url(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "data/raw/pretrained/xception-test.pth"
    src.parent.mkdir(parents=True)
    xception_file(src)
    digest = sha(src)
    spec = build(WeightsSpec, dict(arch="xception", source="timm:legacy_xception.tf_in1k", sha256=digest[:9],
                                   local="data/raw/pretrained/xception-test.pth"))
    rec = obtain("xception_imagenet", spec, tmp_path / "models/pretrained")
    out = tmp_path / "models/pretrained/xception_imagenet.pt"
    assert out.read_bytes() == src.read_bytes() and rec["sha256"] == digest
    assert rec["origin"] == "local:data/raw/pretrained/xception-test.pth"
    # a wrong pin: error, and no output left behind
    out.unlink()
    bad = build(WeightsSpec, dict(arch="xception", source="timm:legacy_xception.tf_in1k", sha256="0" * 64,
                                  local="data/raw/pretrained/xception-test.pth"))
    with pytest.raises(PretrainedError, match="pinned 0000"):
        obtain("xception_imagenet", bad, tmp_path / "models/pretrained")
    assert not out.exists() and not list(out.parent.glob(".*tmp"))
    # the download path (file:// URL: no network needed), with the full digest pinned
    url = build(WeightsSpec, dict(arch="xception", source=f"url:{src.as_uri()}", sha256=digest))
    assert obtain("x2", url, tmp_path / "models/pretrained")["origin"] == src.as_uri()
    assert sha(tmp_path / "models/pretrained/x2.pt") == digest


def test_offline_failure_names_the_file_to_provide(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = build(WeightsSpec, dict(arch="resnet18", source="url:http://127.0.0.1:9/resnet18-f37072fd.pth",
                                   sha256="f37072fd", local="data/raw/pretrained/resnet18-f37072fd.pth"))
    with pytest.raises(PretrainedError, match="place it at data/raw/pretrained/resnet18-f37072fd.pth"):
        obtain("resnet18_imagenet", spec, tmp_path / "models/pretrained", timeout=5)
    assert not (tmp_path / "models/pretrained/resnet18_imagenet.pt").exists()


def test_source_urls_come_from_library_metadata_and_config_is_strict():
    assert source_url("torchvision:ResNet18_Weights.IMAGENET1K_V1").endswith("/resnet18-f37072fd.pth")
    assert source_url("torchvision:ResNet50_Weights.IMAGENET1K_V1").endswith("/resnet50-0676ba61.pth")
    assert source_url("timm:legacy_xception.tf_in1k").endswith("/xception-43020ad28.pth")
    with pytest.raises(PretrainedError, match="torchvision has no weights"):
        source_url("torchvision:ResNet18_Weights.NOPE")
    with pytest.raises(ConfigError, match="sha256"):
        build(WeightsSpec, dict(arch="resnet18", source="url:x", sha256="xyz"))
    with pytest.raises(ConfigError, match="fetch names"):
        build(PretrainedConfig, dict(out_dir="models/pretrained", fetch=["nope"], weights={}))


def test_apply_init_fits_first_conv_to_fad_and_reports_unmatched(tmp_path):
    conv1 = xception_file(tmp_path / "xception_imagenet.pt")
    model = build_model(model_config(dict(name="f3net", f3net_mode="fad", image_size=64)))
    rep = apply_init(model, "xception_imagenet", tmp_path)
    assert rep["loaded"] == {"fad_net": 7}
    # 12-channel FAD conv: the RGB kernel repeated 4 times and divided by 4 (F3Net's init)
    w = model.fad_net.conv1.weight.detach()
    assert w.shape == (32, 12, 3, 3) and torch.allclose(w, conv1.repeat(1, 4, 1, 1) / 4)
    assert "fad_net.conv1.weight" in rep["adapted"] and "fad_net.block1.rep.0.pointwise.weight" in rep["adapted"]
    # the backbone has no classifier: the ImageNet fc is reported unused, as is the foreign key
    assert rep["unexpected"] == ["fc.bias", "fc.weight", "last_linear.extra"] and rep["shape_mismatch"] == []
    assert rep["missing"]["fad_net"] and rep["file"] == f"{tmp_path.as_posix()}/xception_imagenet.pt"
    # the same file into the plain Xception baseline: conv1 loads unchanged
    base = build_model(model_config(dict(name="xception", image_size=64)))
    rep = apply_init(base, "xception_imagenet", tmp_path)
    (target,) = rep["loaded"]
    assert rep["loaded"][target] == 7 and rep["adapted"] == [f"{target}.block1.rep.0.pointwise.weight"]
    assert torch.equal(dict(base.pretrained_targets())[target].conv1.weight.detach(), conv1)
    assert apply_init(base, "scratch", tmp_path) == {"init": "scratch"}
    with pytest.raises(FileNotFoundError, match="dvc repro pretrained@resnet18_imagenet"):
        apply_init(base, "resnet18_imagenet", tmp_path)


def test_apply_init_resnet18_reports_fc_mismatch(tmp_path):
    import torchvision

    ref = torchvision.models.resnet18(weights=None)
    state = {k: v for k, v in ref.state_dict().items() if k.startswith(("conv1", "bn1", "layer1.0", "fc"))}
    torch.save(state, tmp_path / "resnet18_imagenet.pt")
    model = build_model(model_config(dict(name="resnet18", image_size=64)))
    rep = apply_init(model, "resnet18_imagenet", tmp_path)
    assert torch.equal(model.backbone.conv1.weight.detach(), state["conv1.weight"])
    # the 1000-class ImageNet fc cannot fit the 3-class head: skipped and reported, head kept at init
    assert sorted(m.split(":")[0] for m in rep["shape_mismatch"]) == ["backbone.fc.bias", "backbone.fc.weight"]
    assert "fc.weight" in rep["missing"]["backbone"] and rep["unexpected"] == []


def test_stage_offline_exits_with_the_file_to_provide(tmp_path):
    """`python stages/pretrained.py <name>` offline: non-zero exit, message names the local file."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parents[2]
    params = {"pretrained": {"out_dir": "models/pretrained", "fetch": ["resnet18_imagenet"], "weights": {
        "resnet18_imagenet": {"arch": "resnet18", "source": "url:http://127.0.0.1:9/resnet18-f37072fd.pth",
                              "sha256": "f37072fd", "local": "data/raw/pretrained/resnet18-f37072fd.pth"}}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = dict(os.environ, PYTHONPATH=str(repo / "src"))
    proc = subprocess.run([sys.executable, str(repo / "stages/pretrained.py"), "resnet18_imagenet"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "place it at data/raw/pretrained/resnet18-f37072fd.pth" in proc.stderr
    assert not (tmp_path / "models/pretrained/resnet18_imagenet.pt").exists()
