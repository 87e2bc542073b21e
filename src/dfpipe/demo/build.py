"""``make_demo``: write the whole demo data tree (see :mod:`dfpipe.demo`)."""

from __future__ import annotations

import multiprocessing
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from dfpipe.core.io import atomic_path, clean_stale_temps, write_json
from dfpipe.demo.config import DemoConfig

from . import datasets as cross
from . import leakctl
from .faces import add_sensor_noise, draw_face, render_face, sample_identity, sample_pose
from .gan import make_chain, upsample
from .video import METHODS, encode_video, manipulate, render_original, swap_renders

# Stream keys: every random draw comes from default_rng([seed, STREAM, index...]), so one part of
# the demo never shifts another part's numbers when its counts change.
_FFHQ_ID, _FFHQ_IMG, _GAN_WEIGHTS, _GAN_IMG, _FFPP_VIDEO, _FFPP_FAKE, _FFPP_PAIRS = range(1, 8)
_TOP_LEVEL = {"ffhq", "gan", "ffpp", "celebdf", "dfdc", leakctl.ROOT}
_PNG = [cv2.IMWRITE_PNG_COMPRESSION, 6]
_GAN_CHUNK = 50  # GAN images per task


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 (H, W, 3) image as PNG, atomically (OpenCV's PNG writer is deterministic)."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]), _PNG)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def make_demo(cfg: DemoConfig) -> dict:
    """Write the demo tree under ``cfg.out_dir``; return the counts written.

    Work is split into independent tasks (one FFHQ identity, a chunk of GAN images, one FF++ pair)
    whose files depend only on ``cfg`` and the task, never on the worker that runs it, so
    ``cfg.workers`` changes the speed and not the bytes. The tree is built in a temporary sibling
    folder and moved into place at the end, so an interrupted run never leaves a half-written tree.
    An existing ``out_dir`` is replaced only if it holds nothing but a previous demo tree
    (``ffhq``, ``gan``, ``ffpp``); anything else is an error.
    """
    out = Path(cfg.out_dir)
    clean_stale_temps(out)  # no-op when out does not exist
    if out.exists():
        extra = sorted(p.name for p in out.iterdir()) if out.is_dir() else [out.name]
        if not out.is_dir() or set(extra) - _TOP_LEVEL:
            raise FileExistsError(
                f"{out}: exists and holds {extra}, not only a demo tree {sorted(_TOP_LEVEL)}; refusing to replace it"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    # a run killed outside DVC leaves its temporary tree (and atomic_path files) behind
    clean_stale_temps(out.parent, recursive=False, prefix=out.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        pairs = ffpp_pairs(cfg)
        # Longest tasks first, so the pool's workers finish together.
        tasks: list[tuple] = [("ffpp", k) for k in range(len(pairs))]
        tasks += [("cross", k) for k in range(len(cross.plan(cfg)))]
        tasks += [("leak", k) for k in range(cfg.leak_videos)]
        for g in range(len(cfg.gan_generators)):
            tasks += [("gan", g, j) for j in range(0, cfg.gan_images, _GAN_CHUNK)]
        tasks += [("ffhq", i) for i in range(cfg.ffhq_identities)]
        counts: dict = {
            "ffhq": 0,
            "gan": {name: 0 for name in sorted(cfg.gan_generators)},
            "ffpp": {"original": 0, **{m: 0 for m in cfg.ffpp_methods}},
            "celebdf": 0,
            "dfdc": 0,
            leakctl.ROOT: {c: 0 for c in leakctl.CLASSES},
        }
        with tqdm(total=len(tasks), desc="make_demo", unit="task") as bar:
            if cfg.workers == 1:
                results = (_run_task(cfg, tmp, pairs, t) for t in tasks)
                for res in results:
                    _add(counts, res)
                    bar.update(1)
            else:
                # spawn, not fork: a forked child of a process that already runs threads (tqdm's
                # monitor, torch/OpenCV pools in a test process) can deadlock on a lock copied in
                # its held state; and a dead worker raises BrokenProcessPool here instead of
                # leaving Pool.imap waiting forever for its lost task.
                ctx = multiprocessing.get_context("spawn")
                with ProcessPoolExecutor(
                    cfg.workers, mp_context=ctx, initializer=cv2.setNumThreads, initargs=(1,)
                ) as pool:
                    futures = [pool.submit(_run_task, cfg, tmp, pairs, t) for t in tasks]
                    for fut in as_completed(futures):
                        _add(counts, fut.result())
                        bar.update(1)
        cross.write_label_files(cfg, tmp)
        for split, members in split_pairs(cfg, pairs).items():
            write_json(tmp / "ffpp" / "splits" / f"{split}.json", [list(p) for p in members])
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return counts


def _add(counts: dict, res: dict) -> None:
    counts["ffhq"] += res.get("ffhq", 0)
    for k in ("celebdf", "dfdc"):
        counts[k] += res.get(k, 0)
    for k, v in res.get("gan", {}).items():
        counts["gan"][k] += v
    for k, v in res.get("ffpp", {}).items():
        counts["ffpp"][k] += v
    for k, v in res.get(leakctl.ROOT, {}).items():
        counts[leakctl.ROOT][k] += v


def _run_task(cfg: DemoConfig, root: Path, pairs: list[tuple[str, str]], task: tuple) -> dict:
    kind = task[0]
    if kind == "ffhq":
        return {"ffhq": _make_ffhq_identity(cfg, root / "ffhq", task[1])}
    if kind == "gan":
        name = sorted(cfg.gan_generators)[task[1]]
        return {"gan": {name: _make_gan_chunk(cfg, root / "gan", task[1], task[2])}}
    if kind == "cross":
        return {cross.make_video(cfg, root, cross.plan(cfg)[task[1]]): 1}
    if kind == "leak":
        return {leakctl.ROOT: {leakctl.make_video(cfg, root, task[1]): 1}}
    return {"ffpp": _make_ffpp_pair(cfg, root / "ffpp", pairs[task[1]])}


def _make_ffhq_identity(cfg: DemoConfig, root: Path, i: int) -> int:
    """``idNNNN_KK.png``: K aligned portraits of identity ``i`` with pose/expression/lighting variation."""
    ident = sample_identity(_rng(cfg.seed, _FFHQ_ID, i))
    for k in range(cfg.ffhq_images_per_identity):
        rng = _rng(cfg.seed, _FFHQ_IMG, i, k)
        img = draw_face(ident, sample_pose(rng, aligned=True), rng, cfg.image_size, noise_sigma=cfg.noise_sigma)
        write_png(root / f"id{i:04d}_{k:02d}.png", img)
    return cfg.ffhq_images_per_identity


def _make_gan_chunk(cfg: DemoConfig, root: Path, g: int, start: int) -> int:
    """``<generator>/<generator>_NNNNN.png`` for images ``start .. start + _GAN_CHUNK - 1`` of
    generator ``g`` (sorted folder order).

    A new identity is drawn at ``image_size`` as a real portrait is; its coarse band (the face
    area-reduced to ``gan_base_size``) goes through the family's fixed chain of 2x stages, and the
    fine detail above that band plus sensor-like noise at the output size are added back after the
    chain, as a generator's last layers and per-resolution noise inputs (StyleGAN, Karras et al.
    CVPR 2019) synthesise them. So generated images are neither blurrier nor cleaner than real
    ones; what tells a family apart, from real photographs and from the other families, is its
    chain's up-sampling fingerprint. Without the detail and noise every family shared the cue
    "low-resolution content, no noise at full size", and a detector trained on one family scored
    the others as if it had seen them (the unseen-generator control, ``report.controls``).
    """
    name = sorted(cfg.gan_generators)[g]
    stages = (cfg.image_size // cfg.gan_base_size).bit_length() - 1
    chain = make_chain(cfg.gan_generators[name], stages, _rng(cfg.seed, _GAN_WEIGHTS, g))
    stop = min(cfg.gan_images, start + _GAN_CHUNK)
    for j in range(start, stop):
        rng = _rng(cfg.seed, _GAN_IMG, g, j)
        ident = sample_identity(rng)
        face, _, _ = render_face(ident, sample_pose(rng, aligned=True), cfg.image_size, cfg.image_size)
        coarse = cv2.resize(face, (cfg.gan_base_size,) * 2, interpolation=cv2.INTER_AREA)
        detail = face - cv2.resize(coarse, (cfg.image_size,) * 2, interpolation=cv2.INTER_LINEAR)
        img = add_sensor_noise(upsample(coarse, chain) + detail, rng, cfg.noise_sigma)
        write_png(root / name / f"{name}_{j:05d}.png", img)
    return stop - start


def ffpp_pairs(cfg: DemoConfig) -> list[tuple[str, str]]:
    """Pairs of original ids, each original in exactly one pair (FF++: the fakes of pair (a, b)
    are ``a_b`` and ``b_a``, so every original is a target once and a source once per method)."""
    ids = [f"{i:03d}" for i in range(cfg.ffpp_videos)]
    order = _rng(cfg.seed, _FFPP_PAIRS, 0).permutation(len(ids))
    pairs = [tuple(sorted((ids[order[2 * k]], ids[order[2 * k + 1]]))) for k in range(len(ids) // 2)]
    return sorted(pairs)


def split_pairs(cfg: DemoConfig, pairs: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """Assign whole pairs to train/val/test by ``split_fractions`` (shuffled with the seed)."""
    order = _rng(cfg.seed, _FFPP_PAIRS, 1).permutation(len(pairs))
    n_train = max(1, int(round(cfg.split_fractions[0] * len(pairs))))
    n_val = min(len(pairs) - n_train, int(round(cfg.split_fractions[1] * len(pairs))))
    shuffled = [pairs[i] for i in order]
    return {
        "train": sorted(shuffled[:n_train]),
        "val": sorted(shuffled[n_train : n_train + n_val]),
        "test": sorted(shuffled[n_train + n_val :]),
    }


def _make_ffpp_pair(cfg: DemoConfig, root: Path, pair: tuple[str, str]) -> dict[str, int]:
    """Both originals of ``pair`` and, per method, the fakes ``a_b`` and ``b_a`` with their masks."""
    comp = cfg.ffpp_compression
    orig_dir = root / "original_sequences" / "youtube" / comp / "videos"
    counts: dict[str, int] = {"original": 0, **{m: 0 for m in cfg.ffpp_methods}}
    clips = {}
    for vid in pair:
        clips[vid] = render_original(
            sample_identity(_rng(cfg.seed, _FFPP_VIDEO, int(vid), 0)),
            _rng(cfg.seed, _FFPP_VIDEO, int(vid), 1),
            cfg.ffpp_frames,
            cfg.ffpp_fps,
            cfg.ffpp_height,
            cfg.ffpp_width,
            cfg.noise_sigma,
        )
        encode_video(orig_dir / f"{vid}.mp4", clips[vid].frames, cfg.ffpp_fps, cfg.ffpp_crf)
        counts["original"] += 1
    a, b = pair
    for target, source in ((a, b), (b, a)):
        swapped = None
        if {"FaceSwap", "DeepFakeDetection"} & set(cfg.ffpp_methods):
            swapped = swap_renders(clips[target], clips[source])
        for method in cfg.ffpp_methods:
            rng = _rng(cfg.seed, _FFPP_FAKE, int(target), int(source), METHODS.index(method))
            frames, masks = manipulate(method, clips[target], clips[source], rng, cfg.noise_sigma, swapped=swapped)
            base = root / "manipulated_sequences" / method
            name = f"{target}_{source}.mp4"
            encode_video(base / comp / "videos" / name, frames, cfg.ffpp_fps, cfg.ffpp_crf)
            encode_video(
                base / "masks" / "videos" / name, np.repeat(masks[..., None], 3, axis=-1), cfg.ffpp_fps, cfg.ffpp_crf
            )
            counts[method] += 1
    return counts
