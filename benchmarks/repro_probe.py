"""Which libraries give this machine other bytes: one digest per component, against recorded machines.

    python benchmarks/repro_probe.py [--faces 24] [--record NAME]

The pipeline promises byte-identical outputs on any x86-64 machine with AVX2
(:mod:`dfpipe.core.numerics` pins the kernels it can). When a fresh clone's ``make run`` leaves
``git status`` dirty on a new machine, ``dvc status`` says which stages differ but not which
library made them differ; this script does. It computes, under the package's pins, a sha256
(first 16 hex digits) per component on inputs generated here from fixed seeds (the demo's drawn
faces), and compares each with the digests recorded in ``benchmarks/repro_reference.json`` for
other machines:

- ``numpy ufuncs``: float32 and float64 exp, log, sin, tanh (numpy's SIMD dispatch);
- ``opencv resize``: INTER_AREA, INTER_CUBIC and INTER_LINEAR of the faces to 7 sizes;
- ``opencv colour``: YUV I420 -> RGB and RGB -> grey;
- ``png/jpeg codecs``: ``cv2.imencode`` PNG and JPEG (quality 90), then decoded;
- ``pyav rgb24``: an H.264 clip of the faces encoded and decoded by PyAV, frames converted by
  swscale (``to_ndarray("rgb24")``, what the video reader does);
- ``mediapipe boxes`` / ``mediapipe scores``: the Tasks face detector (the demo's ``whole``
  policy): integer boxes, and the float32 scores the manifests store;
- ``litert xnnpack logits``: BlazeFace short-range raw outputs in LiteRT's default XNNPACK;
- ``preprocess crops`` / ``preprocess manifest``: the preprocess worker end to end on the faces
  as PNG files (crops' bytes; manifest fields: box, score, resize kernel, face rule);
- ``torch train``: three Adam steps of a small conv net on the CPU, one thread (ATen, oneDNN,
  MKL under the pins): the weights.

Prints one line per component: its digest and, per recorded machine, ``same`` or ``DIFFERS``;
the last line counts them. ``--record NAME`` adds this machine's digests (with its CPU model and
vector flags) to the reference file. The first component that differs is where to look: e.g.
``mediapipe scores`` differing alone changes every manifest but no crop.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import dfpipe  # noqa: F401 - first: the package's CPU pins, before numpy, OpenCV and torch load

import cv2  # noqa: E402
import numpy as np  # noqa: E402

REFERENCE = Path(__file__).with_name("repro_reference.json")
ROOT = Path(__file__).resolve().parents[1]
DETECTOR = "models/mediapipe/face_detection_short_range.tflite"  # relative to ROOT, where main() runs


#: How many detections and crops the components saw (a probe that finds no face tests little).
PROBE_COUNTS: dict[str, int] = {}


def digest(parts: Iterable[bytes | np.ndarray | str]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.tobytes() if isinstance(p, np.ndarray) else p.encode() if isinstance(p, str) else p)
    return h.hexdigest()[:16]


def faces(n: int) -> list[np.ndarray]:
    """``n`` demo faces, ``(160, 160, 3)`` uint8 RGB, from fixed seeds."""
    from dfpipe.demo.faces import draw_face, sample_identity, sample_pose

    rng = np.random.default_rng(20241204)
    return [draw_face(sample_identity(rng), sample_pose(rng), rng, 160) for _ in range(n)]


def numpy_ufuncs(_: list[np.ndarray]) -> str:
    x = np.random.default_rng(0).random(65536) * 20 - 10
    parts = []
    for dtype in (np.float32, np.float64):
        v = x.astype(dtype)
        parts += [np.exp(v), np.log(np.abs(v) + 1e-3), np.sin(v), np.tanh(v)]
    return digest(parts)


def opencv_resize(imgs: list[np.ndarray]) -> str:
    kernels = (cv2.INTER_AREA, cv2.INTER_CUBIC, cv2.INTER_LINEAR)
    return digest(cv2.resize(im, (s, s), interpolation=k) for im in imgs for k in kernels
                  for s in (37, 64, 101, 128, 150, 224, 299))


def opencv_colour(imgs: list[np.ndarray]) -> str:
    yuv = [cv2.cvtColor(im, cv2.COLOR_RGB2YUV_I420) for im in imgs]
    return digest([*yuv, *(cv2.cvtColor(y, cv2.COLOR_YUV2RGB_I420) for y in yuv),
                   *(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) for im in imgs)])


def codecs(imgs: list[np.ndarray]) -> str:
    parts = []
    for im in imgs:
        for ext, opts in ((".png", []), (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90])):
            ok, enc = cv2.imencode(ext, im, opts)
            parts += [enc, cv2.imdecode(enc, cv2.IMREAD_COLOR)]
    return digest(parts)


def pyav_rgb24(imgs: list[np.ndarray]) -> str:
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=25, options={"crf": "23", "g": "12", "threads": "1"})
        stream.width = stream.height = 160
        stream.pix_fmt = "yuv420p"
        for im in imgs:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(im, format="rgb24")))
        out.mux(stream.encode())
    buf.seek(0)
    with av.open(buf) as src:
        return digest(frame.to_ndarray(format="rgb24") for frame in src.decode(video=0))


def mediapipe_detections(imgs: list[np.ndarray]) -> tuple[str, str]:
    from dfpipe.ingest.faces import FaceDetector

    det = FaceDetector(DETECTOR, 0.5)
    try:
        found = [det.detect_all(im) for im in imgs]
    finally:
        det.close()
    PROBE_COUNTS["detections"] = sum(map(len, found))
    boxes = digest(f"{[(f.x, f.y, f.w, f.h) for f in fs]}" for fs in found)
    scores = digest(np.array([f.score for fs in found for f in fs], np.float32))
    return boxes, scores


def litert_logits(imgs: list[np.ndarray]) -> str:
    from dfpipe.ingest.blazeface import BlazeFaceLite

    model = BlazeFaceLite(DETECTOR, 0.5)
    parts = []
    for im in imgs:
        model.detect(cv2.resize(im, (128, 128), interpolation=cv2.INTER_AREA))
        parts.append(model.interpreter.get_tensor(model._logits))
    model.close()
    return digest(parts)


def preprocess(imgs: list[np.ndarray]) -> tuple[str, str]:
    from dfpipe.core.config import build
    from dfpipe.ingest.preprocess import PreprocessConfig
    from dfpipe.ingest.sources import SourceConfig, list_items
    from dfpipe.ingest.worker import Worker

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "img"
        folder.mkdir()
        for i, im in enumerate(imgs):
            cv2.imwrite(str(folder / f"{i:03d}.png"), im[:, :, ::-1])
        spec = build(SourceConfig, dict(kind="image_folder", path="img", label=0, method="probe", mode="crop"))
        cfg = build(PreprocessConfig, dict(
            detector_model=DETECTOR, segmenter_model="models/mediapipe/selfie_segmentation.tflite",
            margin=1.3, size=128, min_score=0.5, min_face=24, every_n=10, frames_per_video=8, seg_threshold=0.5,
            seg_background="blank", min_person=0.05, max_pixels=40_000_000, shard_size=4096, workers=1))
        items, _ = list_items("probe", spec, folder)
        worker = Worker(cfg, spec, folder)
        try:
            results = [worker.process(item) for item in items]
        finally:
            worker.close()
    crops = [c for r in results for c in r.crops]
    PROBE_COUNTS["crops"] = len(crops)
    rows = [f"{c.box} {c.det_score!r} {c.resize_kernel} {c.face_rule}" for c in crops]
    return digest(c.image for c in crops), digest(rows)


def torch_train(_: list[np.ndarray]) -> str:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 3),
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(16, 3, 32, 32, generator=g), torch.randint(0, 3, (16,), generator=g)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return digest(t.detach().numpy() for t in net.state_dict().values())


COMPONENTS: dict[str, Callable[[list[np.ndarray]], str | tuple[str, ...]]] = {
    "numpy ufuncs": numpy_ufuncs,
    "opencv resize": opencv_resize,
    "opencv colour": opencv_colour,
    "png/jpeg codecs": codecs,
    "pyav rgb24": pyav_rgb24,
    "mediapipe boxes|mediapipe scores": mediapipe_detections,
    "litert xnnpack logits": litert_logits,
    "preprocess crops|preprocess manifest": preprocess,
    "torch train": torch_train,
}


def machine() -> dict[str, str]:
    """CPU model and vector-extension flags (Linux ``/proc/cpuinfo``)."""
    model, flags = platform.processor() or platform.machine(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = sorted(f for f in value.split() if f.startswith(("avx", "fma", "sse4", "amx")))
                break
    except OSError:
        pass
    return {"cpu": model, "flags": " ".join(flags)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--faces", type=int, default=24, help="drawn faces the components run on")
    ap.add_argument("--record", metavar="NAME", help="add this machine's digests to the reference file")
    args = ap.parse_args()
    os.chdir(ROOT)  # the model paths are the repository's, as in params.yaml
    imgs = faces(args.faces)
    digests: dict[str, str] = {}
    for names, fn in COMPONENTS.items():
        got = fn(imgs)
        digests.update(zip(names.split("|"), (got,) if isinstance(got, str) else got))
    found = f"{PROBE_COUNTS['detections']} detections, {PROBE_COUNTS['crops']} crops"
    reference = json.loads(REFERENCE.read_text()) if REFERENCE.exists() else {"faces": args.faces, "machines": {}}
    here = machine()
    print(f"this machine: {here['cpu']} ({here['flags']}); {args.faces} faces, {found}")
    known = reference["machines"] if reference["faces"] == args.faces else {}
    if reference["faces"] != args.faces:
        print(f"(the reference digests are of {reference['faces']} faces: no comparison)")
    differ = 0
    for name, value in digests.items():
        verdicts = [f"{m}: {'same' if rec['digests'].get(name) == value else 'DIFFERS'}" for m, rec in known.items()]
        differ += any(v.endswith("DIFFERS") for v in verdicts)
        print(f"{name:24s} {value}  " + "; ".join(verdicts))
    print(f"{differ} of {len(digests)} components differ from a recorded machine")
    if args.record:
        if reference["faces"] != args.faces:
            raise SystemExit(f"--record needs --faces {reference['faces']} (the reference file's)")
        reference["machines"][args.record] = {**here, "digests": digests}
        REFERENCE.write_text(json.dumps(reference, indent=2, sort_keys=True) + "\n")
        print(f"recorded as {args.record!r} in {REFERENCE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
