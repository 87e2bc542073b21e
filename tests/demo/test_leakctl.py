"""The demo's planted-leak control clips (dfpipe.demo.leakctl): classes drawn per clip, balanced and
independent of the clip's content; every frame of a clip carries the clip's signature."""

from __future__ import annotations

import numpy as np

from dfpipe.core.config import build
from dfpipe.demo import DemoConfig, leakctl

PARAMS = dict(
    seed=7, out_dir="data/raw/demo", workers=1, image_size=128, noise_sigma=2.0, ffhq_identities=1,
    ffhq_images_per_identity=1, gan_images=1, gan_base_size=32, gan_generators={"wgan_gp": "transposed"},
    ffpp_videos=2, ffpp_frames=2, ffpp_fps=25, ffpp_width=192, ffpp_height=144, ffpp_compression="c23", ffpp_crf=23,
    ffpp_methods=["FaceSwap"], split_fractions=[0.72, 0.14, 0.14], cross_videos=1, cross_frames=2,
    leak_videos=16, leak_frames=3,
)


def cfg(**over) -> DemoConfig:
    return build(DemoConfig, {**PARAMS, **over}, "demo")


def test_plan_is_balanced_unique_and_seeded():
    paths = leakctl.plan(cfg())
    assert len({p.rsplit("/", 1)[1] for p in paths}) == 16  # clip ids are unique across both classes
    assert sum("/real/" in p for p in paths) == sum("/fake/" in p for p in paths) == 8
    assert all(p == f"ctl_leak/{p.split('/')[1]}/{k:03d}.mp4" for k, p in enumerate(paths))
    assert leakctl.plan(cfg()) == paths and leakctl.plan(cfg(seed=8)) != paths


def test_the_class_is_no_input_of_the_frames():
    """More clips re-deal the classes, but a clip's frames depend on its index alone."""
    few, more = cfg(), cfg(leak_videos=18)
    moved = [k for k in range(16) if leakctl.plan(few)[k].split("/")[1] != leakctl.plan(more)[k].split("/")[1]]
    assert moved  # some clip changed class ...
    assert np.array_equal(leakctl.render_clip(few, moved[0]), leakctl.render_clip(more, moved[0]))  # ... not pixels


def test_every_frame_carries_its_clips_signature():
    """Nearest neighbour over all frames of 6 clips: always a frame of the same clip (what a
    network can memorise), while no two frames are copies (motion, noise)."""
    c = cfg()
    frames = np.concatenate([leakctl.render_clip(c, k) for k in range(6)]).reshape(18, -1).astype(np.float32)
    owner = np.repeat(np.arange(6), 3)
    d = ((frames[:, None] - frames[None]) ** 2).mean(-1)
    np.fill_diagonal(d, np.inf)
    assert (owner[d.argmin(1)] == owner).all()
    assert d.min() > 1.0
