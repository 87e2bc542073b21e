"""Embedded demo data: small, deterministic stand-ins for FFHQ, three GAN families and FaceForensics++.

``make_demo(cfg)`` writes, under ``cfg.out_dir``, the same folder layouts as the real data sets
(see docs/ARCHITECTURE.md, "Raw data layouts"), so every later stage runs unchanged on real data:

- ``ffhq/idNNNN_KK.png``: procedurally drawn portraits, ``ffhq_images_per_identity`` per identity;
- ``gan/<generator>/<generator>_NNNNN.png``: faces whose coarse band (``gan_base_size``) is
  up-sampled by the generator's fixed chain (:mod:`dfpipe.demo.gan`), leaving its spectral
  fingerprint, with full-size detail and noise added after the chain;
- ``ffpp/``: FaceForensics++ tree of H.264 originals, manipulated videos, mask videos and the
  official-format ``splits/{train,val,test}.json``;
- ``celebdf/``, ``dfdc/``: Celeb-DF v2 and DFDC trees with their exact names and label files
  (:mod:`dfpipe.demo.datasets`), the cross-dataset test sets of the demo.
- ``ctl_leak/{real,fake}/NNN.mp4``: the planted-leak control (:mod:`dfpipe.demo.leakctl`), short
  clips whose class is drawn per video and whose every frame carries the video's signature.

Same ``DemoConfig`` => byte-identical files.
"""

from dfpipe.demo.build import make_demo
from dfpipe.demo.config import DemoConfig
from dfpipe.demo.faces import Identity, Pose, draw_face, render_face, sample_identity, sample_pose

__all__ = ["DemoConfig", "Identity", "Pose", "draw_face", "make_demo", "render_face", "sample_identity", "sample_pose"]
