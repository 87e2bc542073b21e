"""Spectra: the model transform against scipy/numpy, train-only streaming statistics, cache, stage."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.fft
import torch
import yaml

from dfpipe.features import spectra as sp

from dfpipe.features import moments
from dfpipe.features import spectra_plots
from dfpipe.models import spectrum as ms
from dfpipe.core.config import ConfigError, build, load_yaml
from dfpipe.core.manifest import add_provenance, write_variant
from dfpipe.core.shards import ShardWriter

F16_REL = 2.0**-11  # float16 unit round-off (10-bit mantissa)
F32_U = 2.0**-24    # float32 unit round-off

SIZE = 16
# label, method, count per split: real FFHQ-like, two generators, one edit method
GROUPS = [(0, "ffhq", 6), (1, "stylegan", 4), (1, "wgan_gp", 4), (2, "Face2Face", 3)]


def make_images(rng: np.random.Generator, n: int, size: int, label: int) -> np.ndarray:
    """Smooth random faces-ish images plus noise; generators get a nearest-neighbour up-sampling
    (the periodic artefact Frank et al. find), so class spectra really differ. (n, size, size, 3) uint8."""
    low = rng.normal(size=(n, size // 4, size // 4, 3))
    if label == 1:
        img = np.repeat(np.repeat(low, 4, axis=1), 4, axis=2)
    else:
        # bilinear-ish: repeat then box blur
        img = np.repeat(np.repeat(low, 4, axis=1), 4, axis=2)
        img = (img + np.roll(img, 1, 1) + np.roll(img, 1, 2) + np.roll(img, (1, 1), (1, 2))) / 4
    img = 128 + 40 * img + rng.normal(scale=3.0, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def write_split(root: Path, split: str, rng: np.random.Generator, shard_size: int = 7, outlier: bool = False,
                size: int = SIZE, repeat: int = 1) -> np.ndarray:
    """A variant split in the VARIANT_SCHEMA layout (``repeat`` x the GROUPS counts of ``size`` px
    images); returns its images in manifest order."""
    rows, images = [], []
    for label, method, count in GROUPS:
        imgs = make_images(rng, count * repeat, size, label)
        for k, img in enumerate(imgs):
            rows.append((f"{method}/{split}_{k:03d}.png", label, method))
            images.append(img)
    if outlier:  # a checkerboard at full contrast: extreme high-frequency energy
        board = ((np.indices((size, size)).sum(0) % 2) * 255).astype(np.uint8)
        rows.append(("ffhq/zz_outlier.png", 0, "ffhq"))
        images.append(np.repeat(board[..., None], 3, axis=2))
    order = np.argsort([r[0] for r in rows], kind="stable")  # manifests are sorted by id
    rows = [rows[i] for i in order]
    images = np.stack([images[i] for i in order])
    d = root / split
    writer = ShardWriter(d, "images", shard_size)
    refs = [writer.add(img) for img in images]
    writer.close()
    n = len(rows)
    df = pd.DataFrame(
        {
            "id": [r[0] for r in rows],
            "source": [r[2] for r in rows],
            "label": np.array([r[1] for r in rows], dtype=np.int8),
            "method": [r[2] for r in rows],
            "video_id": [""] * n,
            "group_keys": [[r[0]] for r in rows],
            "path": [r[0] for r in rows],
            "frame_index": np.full(n, -1, np.int32),
            "n_frames": np.full(n, -1, np.int32),
            "box_x": np.zeros(n, np.int32),
            "box_y": np.zeros(n, np.int32),
            "box_w": np.full(n, size, np.int32),
            "box_h": np.full(n, size, np.int32),
            "det_score": np.full(n, np.nan, np.float32),
            "content_hash": [f"h{i}" for i in range(n)],
            "has_mask": np.zeros(n, bool),
            "shard": [r[0] for r in refs],
            "offset": np.array([r[1] for r in refs], np.int32),
            "mask_shard": [""] * n,
            "split": [split] * n,
            "split_group": [r[0] for r in rows],
        }
    )
    write_variant(add_provenance(df), d / "manifest.parquet")
    return images


def make_spectra_variant(root: Path, seed: int = 0, outlier_in_test: bool = False, size: int = SIZE,
                         repeat: int = 1) -> dict[str, np.ndarray]:
    """A variant of images with planted spectral traits (not helpers.make_variant: returns the images)."""
    rng = np.random.default_rng(seed)
    return {s: write_split(root, s, rng, outlier=(outlier_in_test and s == "test"), size=size, repeat=repeat)
            for s in sp.SPLITS}


def config(tmp: Path, **overrides) -> sp.SpectraConfig:
    values = dict(
        variants=["v1"],
        variants_dir="variants",
        out_dir="spectra",
        metrics_dir="metrics/spectra",
        plots_dir="metrics/plots/spectra",
        cache=["v1"],
        kind="dct",
        color="per_channel",
        eps=1e-12,
        batch_size=5,
        shard_size=8,
    )
    values.update(overrides)
    cfg = build(sp.SpectraConfig, values, where="spectra")
    # tests run outside the repository: anchor the relative paths at tmp
    return cfg.model_copy(update=dict(
        variants_dir=tmp / cfg.variants_dir,
        out_dir=tmp / cfg.out_dir,
        metrics_dir=tmp / cfg.metrics_dir,
        plots_dir=tmp / cfg.plots_dir,
    ))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0


# ---------------------------------------------------------------------------------------------
# Transforms
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 7, 16, 64])
def test_dct_matrix_is_scipy_orthonormal_dct(n):
    d = ms.dct_matrix(n, "cpu", torch.float64)
    np.testing.assert_allclose(d.numpy(), scipy.fft.dct(np.eye(n), type=2, norm="ortho", axis=0), atol=1e-13)
    np.testing.assert_allclose((d @ d.T).numpy(), np.eye(n), atol=1e-13)
    assert ms.dct_matrix(n, "cpu", torch.float64) is d  # cached


def test_dct2_matches_dctn_and_inverts():
    x = torch.from_numpy(np.random.default_rng(1).uniform(0, 255, size=(2, 3, 12, 20)))
    y = ms.dct2(x)
    np.testing.assert_allclose(y.numpy(), scipy.fft.dctn(x.numpy(), type=2, norm="ortho", axes=(-2, -1)), atol=1e-9)
    np.testing.assert_allclose(ms.idct2(y).numpy(), x.numpy(), atol=1e-9)
    np.testing.assert_allclose(scipy.fft.idctn(y.numpy(), type=2, norm="ortho", axes=(-2, -1)), x.numpy(), atol=1e-9)


@pytest.mark.parametrize("kind", ["dct", "dft"])
@pytest.mark.parametrize("color", ["per_channel", "gray"])
def test_transform_matches_numpy_reference(kind, color):
    imgs = make_images(np.random.default_rng(2), 3, 32, label=1)
    ref = sp.log_spectrum_np(imgs, kind, color, eps=1.0)  # eps=1: well conditioned, compare tightly
    x = np.moveaxis(imgs.astype(np.float64), -1, 1)
    if color == "gray":
        x = (x * np.array(sp.GRAY_WEIGHTS)[None, :, None, None]).sum(1, keepdims=True)
    if kind == "dft":  # independent numpy.fft reference
        expect = np.log(np.abs(np.fft.fftshift(np.fft.fft2(x, norm="ortho"), axes=(-2, -1))) + 1.0)
    else:
        expect = np.log(np.abs(scipy.fft.dctn(x, norm="ortho", axes=(-2, -1))) + 1.0)
    np.testing.assert_allclose(ref, expect, atol=1e-12)
    out = ms.SpectrumTransform(kind, color, 1.0, 32).log_spectrum(to_tensor(imgs))
    assert out.dtype == torch.float32 and out.shape == (3, 3 if color == "per_channel" else 1, 32, 32)
    np.testing.assert_allclose(out.numpy(), ref, atol=2e-4, rtol=1e-5)


def test_transform_is_float32_under_autocast_and_ignores_tf32_setting():
    imgs = make_images(np.random.default_rng(3), 2, 32, label=0)
    t = ms.SpectrumTransform("dct", "per_channel", 1.0, 32)
    plain = t(to_tensor(imgs))
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):  # would run matmuls in bf16
            auto = t(to_tensor(imgs))
        assert torch.get_float32_matmul_precision() == "medium"  # restored
    finally:
        torch.set_float32_matmul_precision(previous)
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, plain, rtol=0, atol=1e-6)
    assert torch.equal(plain, t(to_tensor(imgs)))


def test_radial_profile_frequency_axis_agrees_between_dct_and_dft():
    n, f = 64, 0.125  # cycles / pixel
    i = np.arange(n)
    img = np.repeat((128 + 100 * np.cos(2 * np.pi * f * (i + 0.5)))[None, :], n, axis=0)
    rgb = np.repeat(img[None, ..., None], 3, axis=3)
    for kind in ("dct", "dft"):
        spec = sp.log_spectrum_np(rgb, kind, "gray", 1.0)[0, 0]
        freq, val = spectra_plots.radial_profile(spec, kind)
        peak = freq[1 + np.argmax(val[1:])]  # skip DC
        assert abs(peak - f) < 1.0 / n, (kind, peak)


def test_transform_rejects_bad_arguments():
    with pytest.raises(ValueError):
        ms.SpectrumTransform("wavelet", "gray", 1.0, 8)
    t = ms.SpectrumTransform("dct", "gray", 1.0, 8)
    with pytest.raises(ValueError, match="statistics must be"):
        t.set_stats(np.zeros((3, 8, 8)), np.ones((3, 8, 8)))
    t = ms.SpectrumTransform("dct", "per_channel", 1.0, 8)
    with pytest.raises(ValueError, match="does not match the statistics"):
        t(torch.rand(1, 3, 16, 16))


def test_constants_agree_between_reference_and_model_transform():
    """features/ (numpy reference) sits below models/ and keeps its own copy of two constants."""
    assert sp.GRAY_WEIGHTS == ms.GRAY_WEIGHTS and moments.STD_FLOOR == ms.STD_FLOOR


def test_model_builds_from_config_alone_and_statistics_live_in_its_state_dict():
    from dfpipe.models import build_model, model_config

    cfg = model_config(dict(name="resnet18", input="dct", spectrum_color="gray", image_size=32))
    model = build_model(cfg)
    t = model.input.spectrum
    assert t.mean.shape == (1, 32, 32) and torch.equal(t.std, torch.ones(1, 32, 32))
    mean, std = np.full((1, 32, 32), 2.0, np.float32), np.full((1, 32, 32), 0.5, np.float32)
    t.set_stats(mean, std)
    state = model.state_dict()
    assert torch.equal(state["input.spectrum.mean"], torch.from_numpy(mean))
    other = build_model(cfg)
    other.load_state_dict(state)
    x = torch.rand(2, 3, 32, 32)
    model.eval(), other.eval()
    assert torch.equal(model(x)["logits"], other(x)["logits"])


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


def test_streaming_moments_equal_numpy():
    rng = np.random.default_rng(4)
    data = 9.0 + 0.01 * rng.normal(size=(103, 2, 5, 5))  # large mean, small spread: cancellation-prone
    m = moments.RunningMoments()
    for a, b in [(0, 1), (1, 40), (40, 41), (41, 103)]:
        m.update(data[a:b])
    mean, std = m.result()
    assert m.count == 103
    np.testing.assert_allclose(mean, data.mean(0), rtol=0, atol=1e-14)
    np.testing.assert_allclose(std, data.std(0), rtol=1e-10)
    with pytest.raises(ValueError):
        moments.RunningMoments().result()


def test_stats_use_train_split_only(tmp_path):
    images = make_spectra_variant(tmp_path / "a" / "variants" / "v1", outlier_in_test=False)
    make_spectra_variant(tmp_path / "b" / "variants" / "v1", outlier_in_test=True)
    cfg_a, cfg_b = config(tmp_path / "a"), config(tmp_path / "b")
    sp.build_variant("v1", cfg_a)
    sp.build_variant("v1", cfg_b)
    stats_a = (cfg_a.out_dir / "v1" / "stats.npz").read_bytes()
    assert stats_a == (cfg_b.out_dir / "v1" / "stats.npz").read_bytes()
    # ... while the outlier did reach the test cache (so it was not silently skipped)
    assert len(sp.SpectraCache(cfg_b.out_dir / "v1" / "test")) == len(sp.SpectraCache(cfg_a.out_dir / "v1" / "test")) + 1
    # and the statistics are numpy's over the train spectra alone
    train = sp.SpectraCache(cfg_a.out_dir / "v1" / "train")
    imgs = images["train"]
    full = sp.log_spectrum_np(imgs, "dct", "per_channel", 1e-12)
    mean, std = moments.load_stats(cfg_a.out_dir / "v1" / "stats.npz")
    np.testing.assert_allclose(mean, full.mean(0).astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(std, full.std(0).astype(np.float32), rtol=1e-5)
    assert moments.read_stats_meta(cfg_a.out_dir / "v1" / "stats.npz")["count"] == len(train) == len(imgs)


@pytest.mark.parametrize("cached", ["dct", "dft"])
def test_stats_for_both_kinds_whatever_is_cached(tmp_path, cached):
    """stats_dct.npz and stats_dft.npz are numpy's train statistics of each transform; stats.npz is
    the cached kind's; the cache itself holds only the configured kind."""
    images = make_spectra_variant(tmp_path / "variants" / "v1")
    cfg = config(tmp_path, kind=cached, color="gray", eps=0.5)
    metrics, _ = sp.build_variant("v1", cfg)
    root = cfg.out_dir / "v1"
    assert sorted(p.name for p in root.glob("stats*.npz")) == ["stats.npz", "stats_dct.npz", "stats_dft.npz"]
    assert (root / "stats.npz").read_bytes() == sp.stats_path(root, cached).read_bytes()
    stats = {}
    for kind in sp.KINDS:
        path = sp.stats_path(root, kind)
        assert path == root / f"stats_{kind}.npz"
        meta = moments.read_stats_meta(path)
        assert (meta["kind"], meta["color"], meta["eps"], meta["split"]) == (kind, "gray", 0.5, "train")
        assert meta["count"] == len(images["train"])
        full = sp.log_spectrum_np(images["train"], kind, "gray", 0.5)
        mean, std = moments.load_stats(path)
        np.testing.assert_allclose(mean, full.mean(0).astype(np.float32), rtol=1e-6)
        np.testing.assert_allclose(std, full.std(0).astype(np.float32), rtol=1e-5, atol=1e-7)
        stats[kind] = mean
        # the device transform with each file's statistics normalises its own kind to ~zero mean
        t = ms.SpectrumTransform(kind, "gray", 0.5, SIZE)
        t.set_stats(mean, std)
        assert np.abs(t(to_tensor(images["train"])).mean(0).numpy()).max() < 1e-3
    assert not np.allclose(stats["dct"], stats["dft"], atol=1e-3)  # two different transforms
    assert set(metrics["std_floored_coefficients_by_kind"]) == set(sp.KINDS)
    assert sp.SpectraCache(root / "train").index["kind"] == cached
    with pytest.raises(ValueError, match="kind must be one of"):
        sp.stats_path(root, "wavelet")


# ---------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,color,eps", [("dct", "per_channel", 1e-12), ("dct", "gray", 0.5), ("dft", "per_channel", 1e-12)])
def test_cache_agrees_with_on_device_transform(tmp_path, kind, color, eps):
    images = make_spectra_variant(tmp_path / "variants" / "v1")
    cfg = config(tmp_path, kind=kind, color=color, eps=eps)
    metrics, _ = sp.build_variant("v1", cfg)
    c = sp.num_channels(color)
    assert metrics["shape"] == [c, SIZE, SIZE]
    assert metrics["bytes_per_image"] > c * SIZE * SIZE * 2  # float16 payload plus .npy headers
    stats = cfg.out_dir / "v1" / "stats.npz"
    mean, std = moments.load_stats(stats)
    device = ms.SpectrumTransform(kind, color, eps, SIZE)
    device.set_stats(mean, std)
    raw = device.log_spectrum
    for split in sp.SPLITS:
        cache = sp.SpectraCache(cfg.out_dir / "v1" / split)
        cached = cache.gather(np.arange(len(cache)))  # rows in manifest order
        assert cached.dtype == np.float16 and cached.shape == (len(images[split]), c, SIZE, SIZE)
        x = to_tensor(images[split])
        got_log = raw(x).numpy().astype(np.float64)
        exact = sp.log_spectrum_np(images[split], kind, color, eps)
        # Tolerance: float16 rounding of the cache, plus the float32 transform's error delta
        # propagated through the log (d log(|c|+eps) = delta / (|c|+eps)); delta bounds the
        # float32 matrix products (2 n u sum|X|) and is only felt by near-zero coefficients.
        delta = 2 * SIZE * F32_U * 255.0 * SIZE * SIZE
        mag = np.exp(exact) - eps
        tol = F16_REL * np.abs(exact) + delta / (mag + eps)
        assert np.all(np.abs(cached - got_log) <= tol + 1e-6)
        well = mag > 32.0  # where the log is well conditioned the agreement is float16-tight
        assert well.sum() > 200  # not vacuous
        assert np.all(np.abs(cached - got_log)[well] <= F16_REL * np.abs(exact[well]) + 1e-5)
        # normalised: the cache read path equals the module's output within the same bound / std
        got = device(x).numpy()
        norm = moments.normalize(cached, mean, std)
        assert np.all(np.abs(norm - got) <= (tol + 1e-5) / np.maximum(std, moments.STD_FLOOR) + 1e-4)


def test_cache_is_deterministic_and_aligned(tmp_path):
    images = make_spectra_variant(tmp_path / "variants" / "v1")
    cfg = config(tmp_path)
    sp.build_variant("v1", cfg)
    files = sorted(p for p in cfg.out_dir.rglob("*") if p.is_file())
    first = {p: p.read_bytes() for p in files}
    cfg2 = cfg.model_copy(update={"batch_size": 3})  # different batch split, same cached bytes
    sp.build_variant("v1", cfg)
    assert {p: p.read_bytes() for p in files} == first
    sp.build_variant("v1", cfg2)
    for p in files:
        if p.name.startswith("spectra-"):
            assert p.read_bytes() == first[p]
    # threads compute spectra and batch moments; results are merged in batch order: same bytes
    for workers in (1, 3):
        sp.build_variant("v1", cfg.model_copy(update={"workers": workers}))
        assert {p: p.read_bytes() for p in files} == first
    idx = json.loads((cfg.out_dir / "v1" / "train" / "index.json").read_text())
    assert idx["count"] == len(images["train"]) and idx["shards"] == ["spectra-00000.npy", "spectra-00001.npy", "spectra-00002.npy"]
    cache = sp.SpectraCache(cfg.out_dir / "v1" / "train")
    manifest = pd.read_parquet(cfg.variants_dir / "v1" / "train" / "manifest.parquet")
    cache.check_aligned(manifest)
    with pytest.raises(ValueError, match="stale"):
        cache.check_aligned(manifest.iloc[::-1])
    row = 9  # second shard
    expect = sp.log_spectrum_np(images["train"][row : row + 1], "dct", "per_channel", 1e-12)[0]
    np.testing.assert_array_equal(cache.gather([row])[0], expect.astype(np.float16))


def test_bad_image_shard_names_the_file(tmp_path):
    make_spectra_variant(tmp_path / "variants" / "v1")
    shard = tmp_path / "variants" / "v1" / "val" / "images-00000.npy"
    np.save(shard, np.zeros((7, SIZE, SIZE, 3), np.float32))
    with pytest.raises(ValueError, match="images-00000.npy.*uint8"):
        sp.build_variant("v1", config(tmp_path))
    with pytest.raises(FileNotFoundError, match="variant"):
        sp.build_variant("v9", config(tmp_path))


# ---------------------------------------------------------------------------------------------
# Config and stage
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override",
    [
        {"kind": "wavelet"},
        {"color": "rgb"},
        {"eps": 0},
        {"eps": -1e-3},
        {"batch_size": 0},
        {"shard_size": 0},
        {"variants": []},
        {"variants": ["v1", "v1"]},
        {"variants": ["../v1"]},
        {"cache": ["v2"]},
        {"out_dir": "/abs/spectra"},
        {"surprise": 1},
    ],
)
def test_bad_params_are_config_errors(tmp_path, override):
    with pytest.raises(ConfigError):
        config(tmp_path, **override)


def test_missing_param_is_config_error():
    with pytest.raises(ConfigError, match="missing required key 'eps'"):
        build(sp.SpectraConfig, {"variants": ["v1"], "variants_dir": "a", "out_dir": "b", "metrics_dir": "c",
                                 "plots_dir": "d", "cache": [], "kind": "dct", "color": "gray", "batch_size": 1,
                                 "shard_size": 1})


def test_stage_writes_cache_metrics_and_plots(tmp_path, monkeypatch):
    import importlib.util

    make_spectra_variant(tmp_path / "data" / "variants" / "v1")
    repo = Path(__file__).resolve().parents[2]
    params = yaml.safe_load((repo / "params.yaml").read_text())["spectra"]
    params.update(variants=["v1"], cache=["v1"], batch_size=5, shard_size=8)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"spectra": params}))
    spec = importlib.util.spec_from_file_location("spectra_stage", repo / "stages" / "spectra.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="not in spectra.variants"):
        stage.main(["v2"])
    stage.main(["v1"])
    metrics = json.loads((tmp_path / params["metrics_dir"] / "v1.json").read_text())
    assert metrics["train_count"] == sum(g[2] for g in GROUPS)
    assert metrics["raw_bytes_per_image"] == SIZE * SIZE * 3
    plots = tmp_path / params["plots_dir"] / "v1"
    for name in ("class_mean.png", "method_mean.png", "profiles.png"):
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csvs = sorted(p.name for p in (plots / "profiles").glob("*.csv"))
    assert csvs == ["class-edited.csv", "class-fake.csv", "class-real.csv", "method-edited-Face2Face.csv",
                    "method-fake-stylegan.csv", "method-fake-wgan_gp.csv", "method-real-ffhq.csv"]
    real = pd.read_csv(plots / "profiles" / "class-real.csv")
    assert list(real.columns) == ["frequency", "log_magnitude", "diff_to_real"]
    assert np.allclose(real["diff_to_real"], 0.0) and real["frequency"].max() < 0.5
    # nearest-neighbour up-sampled "GAN" images differ from real at high frequency
    fake = pd.read_csv(plots / "profiles" / "class-fake.csv")
    assert np.abs(fake["diff_to_real"].to_numpy()[len(fake) // 2 :]).max() > 0.1
    before = {p: p.read_bytes() for p in sorted(plots.rglob("*")) if p.is_file()}
    stage.main(["v1"])
    assert {p: p.read_bytes() for p in sorted(plots.rglob("*")) if p.is_file()} == before


def test_uncached_variant_gets_statistics_and_plots_only(tmp_path):
    make_spectra_variant(tmp_path / "variants" / "v1")
    cfg = config(tmp_path, cache=[])
    metrics, means = sp.build_variant("v1", cfg)
    assert not metrics["cached"] and set(metrics["splits"]) == {"train"}
    root = cfg.out_dir / "v1"
    assert sorted(p.name for p in root.iterdir()) == ["stats.npz", "stats_dct.npz", "stats_dft.npz"]
    assert sorted(means["class"]) == ["edited", "fake", "real"]
    assert len(spectra_plots.write_plots("v1", cfg, means)) > 3


# ---------------------------------------------------------------------------------------------
# The Frank et al. baseline reads the cache
# ---------------------------------------------------------------------------------------------


def test_frank_baseline_learns_the_upsampling_artefact_from_the_cache(tmp_path):
    """Logistic regression on the cached normalised log-DCT separates the nearest-up-sampled
    "GAN" images; C is chosen on val; probabilities are rows of the test manifest; a cache of
    another kind is refused."""
    from dfpipe.scoring.frank import FrankConfig, fit_and_score

    make_spectra_variant(tmp_path / "variants" / "v1")
    cfg = config(tmp_path)
    sp.build_variant("v1", cfg)
    frank = build(FrankConfig, {"variant": "v1", "kind": "dct", "c_grid": [0.01, 1.0], "class_weight": "balanced",
                                "max_iter": 200, "patience": None}, where="frank.x")
    out = fit_and_score(frank, cfg.out_dir, cfg.variants_dir)
    manifest = pd.read_parquet(cfg.variants_dir / "v1" / "test" / "manifest.parquet")
    assert list(out["ids"]) == list(manifest["id"]) and out["probs"].shape == (len(manifest), 3)
    np.testing.assert_allclose(out["probs"].sum(1), 1.0, atol=1e-5)
    assert out["selection"]["C"] in (0.01, 1.0) and set(out["selection"]["val_macro_f1"]) == {"0.01", "1.0"}
    real_or_fake = manifest["label"].to_numpy() < 2
    pred = out["probs"].argmax(1)
    assert np.mean(pred[real_or_fake] == manifest["label"].to_numpy()[real_or_fake]) >= 0.9
    with pytest.raises(ValueError, match="cache holds 'dct'"):
        fit_and_score(frank.model_copy(update={"kind": "dft"}), cfg.out_dir, cfg.variants_dir)


def test_frank_stage_writes_an_evaluation_with_a_seed_column(tmp_path, monkeypatch):
    import importlib.util

    make_spectra_variant(tmp_path / "data" / "variants" / "v1")
    repo = Path(__file__).resolve().parents[2]
    params = load_yaml(repo / "params.yaml")  # YAML 1.2: `amp: off` is a string, as DVC reads it
    spectra = dict(params["spectra"], variants=["v1"], cache=["v1"], batch_size=5, shard_size=8)
    frank = {"f": {"variant": "v1", "kind": "dct", "c_grid": [0.1], "class_weight": "none", "max_iter": 100, "patience": None}}
    evaluate = dict(params["evaluate"], bootstrap=20)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"spectra": spectra, "frank": frank, "evaluate": evaluate,
                                                          "runtime": params["runtime"]}))
    monkeypatch.chdir(tmp_path)
    stages = {}
    for name in ("spectra", "frank"):
        spec = importlib.util.spec_from_file_location(f"{name}_stage", repo / "stages" / f"{name}.py")
        stages[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(stages[name])
    stages["spectra"].main(["v1"])
    monkeypatch.setattr("sys.argv", ["frank.py", "f"])
    stages["frank"].main()
    pred = pd.read_parquet(tmp_path / "metrics/eval/f/predictions.parquet")
    assert {"id", "label", "p_real", "p_fake", "p_edited", "seed"} <= set(pred.columns)
    assert (pred["seed"] == 0).all() and len(pred) == sum(g[2] for g in GROUPS)
    head = json.loads((tmp_path / "metrics/eval/f.json").read_text())
    details = json.loads((tmp_path / "metrics/eval/f/details.json").read_text())
    assert details["run"]["model"] == "frank_linear" and 0.0 <= head["macro_f1"]["mean"] <= 1.0  # headline file
    # provenance: the fingerprint of the frank stage's own code, found from the script, not the cwd
    assert len(details["provenance"]["code"]) == 12 and int(details["provenance"]["code"], 16) >= 0



def test_frank_products_sums_exp_and_log_do_not_depend_on_order_or_simd():
    """The fit's arithmetic: a product or sum gives the same bits in any summation order (BLAS
    kernels and threads only reorder it) and is accurate to float64; exp/log to a few ulp."""
    from dfpipe.scoring import frank

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3000)).astype(np.float32) * np.exp(rng.normal(size=(40, 1)))
    q, shift = frank._fixed_rows(x)
    assert np.abs(q).max() <= 2.0**frank._X_BITS and np.array_equal(q, np.rint(q))
    np.testing.assert_allclose(np.ldexp(q, -shift[:, None]), x, rtol=0, atol=float(np.abs(x).max()) * 2.0**-15)
    b = rng.normal(size=(3000, 3)) * np.array([1e-3, 1.0, 1e4])
    perm = rng.permutation(3000)
    got = frank._exact_matmul(q, b)
    assert np.array_equal(got, frank._exact_matmul(q[:, perm], b[perm]))   # same bits in another order
    assert np.array_equal(got, frank._exact_matmul(np.asfortranarray(q), b))  # and through the transposed path
    exact = np.array([[math.fsum((q[i] * b[:, c]).tolist()) for c in range(3)] for i in range(40)])
    np.testing.assert_allclose(got, exact, rtol=0, atol=float(np.abs(b).max(axis=0).max()) * 3000 * 2.0**-30)
    v = rng.normal(size=20000) * np.exp(rng.normal(scale=5, size=20000))
    assert frank._sum(v) == frank._sum(v[::-1])
    assert abs(frank._sum(v) - math.fsum(v.tolist())) <= 1e-15 * np.abs(v).sum()
    z = -np.abs(rng.normal(scale=20, size=100000))
    np.testing.assert_allclose(frank._exp(z), np.exp(z), rtol=4e-16, atol=1e-300)
    s_ = 1.0 + np.abs(rng.normal(scale=3, size=100000))
    np.testing.assert_allclose(frank._log(s_), np.log(s_), rtol=4e-16, atol=4e-16)


@pytest.mark.parametrize("binary", [False, True], ids=["three_classes", "two_classes"])
def test_frank_fit_reaches_scikit_learns_logistic_regression_optimum(tmp_path, binary):
    """Same objective as scikit-learn's LogisticRegression (balanced class weights, unpenalised
    intercept; binomial for two classes): the fit lands on scikit-learn's tightly converged
    solution, closer than scikit-learn's own default stopping does."""
    import warnings

    from sklearn.linear_model import LogisticRegression

    from dfpipe.scoring import frank

    make_spectra_variant(tmp_path / "variants" / "v1")
    cfg = config(tmp_path)
    sp.build_variant("v1", cfg)
    fc = build(frank.FrankConfig, {"variant": "v1", "kind": "dct", "c_grid": [0.1], "class_weight": "balanced",
                                   "max_iter": 300, "patience": None}, where="frank.x")
    _, y, x = frank.load_split(cfg.out_dir, cfg.variants_dir, fc, "train")
    _, y_ev, x_ev = frank.load_split(cfg.out_dir, cfg.variants_dir, fc, "test")
    if binary:
        y, x, x_ev = y[y < 2], x[y < 2], x_ev[y_ev < 2]
    classes, counts = np.unique(y, return_counts=True)
    problem = frank._Problem(x, y, classes, (len(y) / (len(classes) * counts))[np.searchsorted(classes, y)])
    problem.l2 = 1.0 / (0.1 * problem.weight_sum)
    theta, steps = frank._lbfgs(problem, np.zeros(problem.features * problem.free + problem.free), 300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tight = LogisticRegression(C=0.1, tol=1e-12, max_iter=10000, class_weight="balanced").fit(
            x.astype(np.float64), y)
        default = LogisticRegression(C=0.1, max_iter=300, class_weight="balanced").fit(x, y)
    ours, ref = problem.proba(theta, x_ev), tight.predict_proba(x_ev)
    assert 0 < steps < 300 and np.abs(ours - ref).max() < 1e-4
    assert np.abs(ours - ref).max() <= np.abs(default.predict_proba(x_ev) - ref).max()
    tight_theta = np.concatenate([tight.coef_.T.ravel(), tight.intercept_])
    np.testing.assert_allclose(problem(theta)[0], problem(tight_theta)[0], rtol=1e-8)


# The fit runs in a fresh interpreter per setting: BLAS kernels (OPENBLAS_CORETYPE), thread counts
# and numpy's SIMD dispatch are chosen when the libraries load. It writes every byte the frank stage
# takes from the fit: test probabilities, labels, ids, val threshold, selection.
_FRANK_FIT = """
import json, sys
from pathlib import Path
import numpy as np
from threadpoolctl import threadpool_info
from dfpipe.core.config import build
from dfpipe.scoring.frank import FrankConfig, fit_and_score
root, out = Path(sys.argv[1]), Path(sys.argv[2])
cfg = build(FrankConfig, {"variant": "v1", "kind": "dct", "c_grid": [0.01, 0.1, 1.0], "class_weight": "balanced",
                          "max_iter": 300, "patience": None}, where="frank.x")
res = fit_and_score(cfg, root / "spectra", root / "variants")
out.mkdir()
(out / "probs.bin").write_bytes(np.ascontiguousarray(res["probs"]).tobytes())
(out / "meta.json").write_text(json.dumps({"ids": list(map(str, res["ids"])), "labels": res["labels"].tolist(),
                                           "val_threshold": res["val_threshold"], "selection": res["selection"]}))
blas = [i.get("architecture") for i in threadpool_info() if i["user_api"] == "blas"]
(out / "blas.json").write_text(json.dumps(blas))
"""


@pytest.mark.slow
def test_frank_fit_gives_the_same_bytes_under_other_blas_threads_kernels_and_simd(tmp_path):
    """The baseline's outputs are identical bytes whatever the BLAS thread count, the OpenBLAS
    kernel (OPENBLAS_CORETYPE, where the build honours it) and numpy's SIMD level
    (NPY_DISABLE_CPU_FEATURES: this machine seen as an older CPU). The variant is big enough for
    OpenBLAS to use two threads, and its real and edited images have the same spectra (a hard fit).
    scikit-learn's lbfgs gave three different results here (threads, kernel)."""
    import hashlib
    import os
    import subprocess
    import sys

    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    make_spectra_variant(tmp_path / "variants" / "v1", seed=3, size=32, repeat=40)
    sp.build_variant("v1", config(tmp_path, shard_size=256))
    threads = {k: "{n}" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    settings = {
        "1 thread": {k: v.format(n=1) for k, v in threads.items()},
        "2 threads": {k: v.format(n=2) for k, v in threads.items()},
        "2 threads, Sandybridge kernel, numpy baseline SIMD": {
            **{k: v.format(n=2) for k, v in threads.items()},
            "OPENBLAS_CORETYPE": "Sandybridge",
            "NPY_DISABLE_CPU_FEATURES": " ".join(f for f in __cpu_dispatch__ if __cpu_features__.get(f))},
    }
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "OPENBLAS_", "MKL_", "NPY_"))}
    outs, blas = {}, {}
    for label, env in settings.items():
        out = tmp_path / f"out{len(outs)}"
        subprocess.run([sys.executable, "-c", _FRANK_FIT, str(tmp_path), str(out)], env=base | env, check=True,
                       timeout=300)
        outs[label] = {f: (out / f).read_bytes() for f in ("probs.bin", "meta.json")}
        blas[label] = json.loads((out / "blas.json").read_text())
    md5 = {k: {f: hashlib.md5(v).hexdigest() for f, v in r.items()} for k, r in outs.items()}
    first, *others = settings
    if any(blas[first]):  # OpenBLAS: the last setting really ran another kernel
        assert blas[others[-1]] != blas[first], blas
    for label in others:
        gap = np.abs(np.frombuffer(outs[first]["probs.bin"], np.float32)
                     - np.frombuffer(outs[label]["probs.bin"], np.float32)).max()
        assert outs[label] == outs[first], f"{label} vs {first}: max |dp| {gap:.3g}; md5 {md5}; BLAS {blas}"


def _reference_log_spectrum(images, kind, color, eps):
    """The former whole-batch formulas (complex fft2 for the DFT): the DCT cache's bytes are pinned to them."""
    x = np.moveaxis(np.asarray(images, dtype=np.float64), -1, 1)
    if color == "gray":
        x = np.tensordot(np.asarray(sp.GRAY_WEIGHTS), x, axes=([0], [1]))[:, None]
    if kind == "dct":
        spec = scipy.fft.dctn(x, type=2, norm="ortho", axes=(-2, -1), workers=1)
    else:
        spec = np.fft.fftshift(np.fft.fft2(x, norm="ortho", axes=(-2, -1)), axes=(-2, -1))
    return np.log(np.abs(spec) + eps)


def _smooth_images(n, size, seed=0):
    rng = np.random.default_rng(seed)
    low = rng.normal(size=(n, size // 8 + 1, size // 8 + 1, 3))
    smooth = np.repeat(np.repeat(low, 8, 1), 8, 2)[:, :size, :size]
    return np.clip(128 + 50 * smooth + rng.normal(0, 4, (n, size, size, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("size, n", [(64, 2 * sp.chunk_images(64, 64) + 3), (33, 5), (48, 1)])
@pytest.mark.parametrize("color", ["per_channel", "gray"])
def test_chunked_dct_is_bit_identical_and_rfft_dft_agrees(size, n, color):
    """The DCT (cached bytes) equals the whole-batch formula bit for bit, chunking included; the DFT
    from the half spectrum (Hermitian mirror) equals the complex FFT's to rounding, except in bins
    that are zero up to rounding (log of rounding noise), which only a flat image has."""
    images = _smooth_images(n, size)
    got = sp.log_spectrum_np(images, "dct", color, 1e-12)
    want = _reference_log_spectrum(images, "dct", color, 1e-12)
    assert got.dtype == np.float64 and np.array_equal(got, want)
    got = sp.log_spectrum_np(images, "dft", color, 1e-12)
    want = _reference_log_spectrum(images, "dft", color, 1e-12)
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-9
    # control: |F(-u, v)| in place of |F(u, v)| (a mirror that forgets one axis) is caught
    wrong = got.copy()
    wrong[..., 1:, :] = got[..., :0:-1, :]
    assert np.abs(wrong - want).max() > 1e-3


def test_batch_moments_bytes_equal_the_whole_batch_formula():
    """Item-by-item moments give the bytes of ``mean(axis=0)`` / ``((b - mean) ** 2).sum(axis=0)``."""
    rng = np.random.default_rng(5)
    for shape in [(64, 3, 32, 32), (7, 1, 9, 11), (1, 3, 8, 8), (5, 2, 2, 2), (9, 40)]:
        batch = rng.normal(9.0, 0.3, shape)
        n, mean, m2 = moments.RunningMoments.batch_moments(batch)
        want = batch.mean(axis=0)
        assert n == shape[0] and np.array_equal(mean, want)
        assert np.array_equal(m2, ((batch - want) ** 2).sum(axis=0)), shape


def test_group_batch_sums_bytes_equal_the_masked_sum():
    """Row-by-row group sums (and the whole-batch key's sum taken from the batch total) give the
    bytes of ``spec[keys == key].sum(axis=0)``; summing the rows in another order does not."""
    rng = np.random.default_rng(6)
    for shape in [(64, 3, 32, 32), (9, 1, 8, 8), (4, 1, 2, 2)]:
        spec = rng.normal(9.0, 0.3, shape)
        total = spec[0].copy()
        for item in spec[1:]:
            total += item
        mixed = rng.choice(np.array(["fake:a", "real:b", "edited:c"], dtype=object), shape[0])
        for keys in (mixed, np.full(shape[0], "real", dtype=object)):
            want = [(k, spec[keys == k].sum(axis=0), int((keys == k).sum())) for k in sorted(set(keys))]
            for tot in (None, total):
                got = sp.GroupMeans.batch_sums(spec, keys, tot)
                assert [(k, c) for k, _, c in got] == [(k, c) for k, _, c in want]
                assert all(np.array_equal(g, w) for (_, g, _), (_, w, _) in zip(got, want)), shape
    # control: the same rows summed in reverse order are other bytes
    spec = rng.normal(9.0, 0.3, (64, 3, 32, 32))
    assert not np.array_equal(spec[::-1].sum(axis=0), spec.sum(axis=0))


@pytest.mark.parametrize("chunk", [None, 2])
@pytest.mark.parametrize("color", ["per_channel", "gray"])
def test_build_split_bytes_equal_the_per_batch_formulas(tmp_path, monkeypatch, color, chunk):
    """The cache build takes shortcuts that must not change a byte: float16 rows converted chunk by
    chunk, shards streamed to disk as batches arrive, DFT statistics from the rfft half plane. Each
    output equals the plain formula on the same batches: ``ShardWriter`` of ``astype(float16)``
    rows, and ``RunningMoments`` fed the full-plane spectra batch by batch."""
    batch = 5  # shards of 8 rows cross batch boundaries; a short last batch and a short last shard
    if chunk is not None:  # transform calls of 2 images: running sums and float16 rows cross chunks
        monkeypatch.setattr(sp, "CHUNK_BYTES", chunk * 3 * 24 * 24 * 8)
    root = tmp_path / "variants" / "v1"
    images = write_split(root, "train", np.random.default_rng(3), size=24)
    n = len(images)
    assert chunk is None or sp.chunk_images(24, 24) == chunk
    assert n % batch and n % 8
    root = root / "train"
    cfg = config(tmp_path, color=color, batch_size=batch, workers=2)
    acc = {kind: moments.RunningMoments() for kind in sp.KINDS}
    sp.build_split(root, tmp_path / "out", cfg, acc)
    want_dir = tmp_path / "want"
    want_writer = ShardWriter(want_dir, sp.SHARD_PREFIX, cfg.shard_size)
    want = {kind: moments.RunningMoments() for kind in sp.KINDS}
    for i in range(0, n, batch):
        for kind in sp.KINDS:
            spec = sp.log_spectrum_np(images[i : i + batch], kind, color, cfg.eps)
            want[kind].update(spec)
            if kind == cfg.kind:
                for row in spec.astype(np.float16):
                    want_writer.add(row)
    names = want_writer.close()
    assert len(names) > 2 and names == sp.SpectraCache(tmp_path / "out").index["shards"]
    for name in names:
        assert (tmp_path / "out" / name).read_bytes() == (want_dir / name).read_bytes(), name
    for kind in sp.KINDS:
        assert acc[kind].count == n
        assert np.array_equal(acc[kind].mean, want[kind].mean) and np.array_equal(acc[kind].m2, want[kind].m2), kind
    # control: the half plane's moments mirrored along one axis only are other values
    mean = acc["dft"].mean
    wrong = mean.copy()
    wrong[..., 1:, :] = mean[..., :0:-1, :]
    assert not np.array_equal(wrong, want["dft"].mean)


def test_shard_stream_refuses_missing_rows_and_aborts_cleanly(tmp_path):
    stream = sp._ShardStream(tmp_path, count=5, shard_size=3)
    stream.write(np.zeros((4, 2), np.float16))
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["spectra-00000.npy"]
    with pytest.raises(ValueError, match="4 rows written, 5 announced"):
        stream.close()
    with pytest.raises(ValueError, match="more than the 5 rows"):
        stream.write(np.zeros((2, 2), np.float16))
    stream.abort()  # the partial second shard's temporary file goes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spectra-00000.npy"]
