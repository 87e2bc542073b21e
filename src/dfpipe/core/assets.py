"""MediaPipe model assets (``.tflite``): produced by the DVC stage ``assets``, pinned by sha256.

mediapipe 1.x has only the Tasks API and ships no model files. We use three models that the
``mediapipe==0.10.21`` wheel bundles (the same bytes as the mediapipe repository at tag v0.10.21):
BlazeFace short-range and full-range face detection, the selfie segmenter and the 468-point face
landmark model. Sources, tried in order:

1. a local folder named by ``$DFPIPE_ASSETS_FROM`` (offline machines: copy the files there);
2. the set-up prefetch folder ``.scratch/assets`` (``make setup`` fills it; git- and dvc-ignored):
   DVC deletes a stage's outputs before running it, so the stage needs a copy outside its outs;
3. the mediapipe repository at tag v0.10.21 (raw file URLs);
4. the ``mediapipe==0.10.21`` wheel from the package index, downloaded (never installed) with pip
   and opened as a zip.

Whatever the source, a file is only accepted if its sha256 matches the pin below.

The DVC stage ``assets`` (``python -m dfpipe.core.assets``) writes them to models/mediapipe/ as
cached DVC outs, so ``dvc exp run --queue`` workspaces and clones get them by checkout / pull /
run-cache like any other output; preprocess@ depends on them.

Usage: ``python -m dfpipe.core.assets [--dest models/mediapipe]`` (``--dest .scratch/assets``: prefetch).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from dfpipe.core.io import sha256_bytes, sha256_file, write_bytes

DEFAULT_DEST = Path("models/mediapipe")
PREFETCH_DIR = Path(".scratch/assets")  # relative to the repository root (the stage's cwd)
WHEEL_SPEC = "mediapipe==0.10.21"
REPO_RAW = "https://raw.githubusercontent.com/google-ai-edge/mediapipe/v0.10.21/"


@dataclass(frozen=True)
class Asset:
    name: str  # file name under the destination folder
    member: str  # path inside the wheel / repository
    sha256: str


ASSETS = (
    Asset(
        "face_detection_short_range.tflite",
        "mediapipe/modules/face_detection/face_detection_short_range.tflite",
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    ),
    # BlazeFace full-range (faces up to about 5 m from the camera; 192 px input, sparse weights):
    # the Tasks FaceDetector runs it as is (boxes checked against the short-range model on real
    # photos, benchmarks/bench_face_recall.py); preprocess.detector full_range / full_range_tiled
    Asset(
        "face_detection_full_range_sparse.tflite",
        "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
        "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
    ),
    Asset(
        "selfie_segmentation.tflite",
        "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
        "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c",
    ),
    # MediaPipe's face landmark model (Face Mesh v1: 192x192 RGB in [0, 1] -> 468 x (x, y, z) in
    # input pixels + a face-presence logit). The Tasks FaceLandmarker cannot run a bare .tflite (it
    # wants a .task bundle), so features@ runs it with the LiteRT interpreter (dfpipe.features.landmarks)
    Asset(
        "face_landmark.tflite",
        "mediapipe/modules/face_landmark/face_landmark.tflite",
        "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
    ),
)


class AssetError(RuntimeError):
    """A model asset could not be obtained, or its bytes do not match the pinned sha256."""


def asset_path(name: str, dest: str | Path = DEFAULT_DEST) -> Path:
    """Path of a verified asset; a clear error tells how to fetch it when it is absent."""
    path = Path(dest) / name
    if not path.is_file():
        raise AssetError(f"{path} is missing: run `make setup` (or `python -m dfpipe.core.assets`) first")
    return path


def verify(path: Path, asset: Asset) -> None:
    digest = sha256_file(path)
    if digest != asset.sha256:
        raise AssetError(
            f"{path}: sha256 {digest} does not match the pinned {asset.sha256} for {asset.name}; "
            "delete the file and fetch it again from a trusted source"
        )


def _accept(data: bytes, asset: Asset, origin: str) -> bytes:
    digest = sha256_bytes(data)
    if digest != asset.sha256:
        raise AssetError(f"{origin}: sha256 {digest} != pinned {asset.sha256} for {asset.name}")
    return data


def _from_folder(asset: Asset, folder: Path) -> bytes:
    path = folder / asset.name
    if not path.is_file():
        raise AssetError(f"{path}: not found")
    return _accept(path.read_bytes(), asset, str(path))


def download(url: str, path: Path, timeout: float, chunk: int = 1 << 20) -> None:
    """Stream ``url`` into ``path`` (set-up downloads: also the pinned pretrained backbones of
    :mod:`dfpipe.models.pretrained`); the caller checks the bytes against its pin."""
    with urllib.request.urlopen(url, timeout=timeout) as resp, Path(path).open("wb") as fh:  # noqa: S310
        shutil.copyfileobj(resp, fh, chunk)


def _from_url(asset: Asset, timeout: float) -> bytes:
    url = REPO_RAW + asset.member
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - fixed https URL
        return _accept(resp.read(), asset, url)


def _download_wheel(workdir: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        WHEEL_SPEC,
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
        "--platform",
        "manylinux_2_28_x86_64",
        "-d",
        str(workdir),
        "-q",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(workdir.glob("mediapipe-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise AssetError(f"pip download {WHEEL_SPEC} failed: {proc.stderr.strip()[-500:]}")
    return wheels[0]


def _from_wheel(asset: Asset, wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        try:
            data = zf.read(asset.member)
        except KeyError as exc:
            raise AssetError(f"{wheel.name} has no {asset.member}") from exc
    return _accept(data, asset, f"{wheel.name}:{asset.member}")


def fetch_assets(dest: str | Path = DEFAULT_DEST, try_urls: bool = True, timeout: float = 10.0) -> list[Path]:
    """Make every asset present and verified under ``dest``; return their paths.

    Files already present are verified (a mismatch is an error, never silently replaced).
    """
    dest = Path(dest)
    todo = []
    for asset in ASSETS:
        path = dest / asset.name
        if path.is_file():
            verify(path, asset)
        else:
            todo.append(asset)
    errors: dict[str, list[str]] = {a.name: [] for a in todo}
    pending = list(todo)

    def attempt(getter, label):
        for asset in list(pending):
            try:
                write_bytes(dest / asset.name, getter(asset))
                pending.remove(asset)
                print(f"[assets] {asset.name} <- {label}")
            except Exception as exc:  # noqa: BLE001 - every failure is reported below
                errors[asset.name].append(f"{label}: {exc}")

    local = os.environ.get("DFPIPE_ASSETS_FROM")
    if pending and local:
        attempt(lambda a: _from_folder(a, Path(local)), f"folder {local}")
    if pending and PREFETCH_DIR.is_dir() and PREFETCH_DIR.resolve() != dest.resolve():
        attempt(lambda a: _from_folder(a, PREFETCH_DIR), f"prefetch {PREFETCH_DIR.as_posix()}")
    if pending and try_urls:
        attempt(lambda a: _from_url(a, timeout), "mediapipe repository")
    if pending:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                wheel = _download_wheel(Path(tmp))
                attempt(lambda a: _from_wheel(a, wheel), f"wheel {wheel.name}")
            except AssetError as exc:
                for a in pending:
                    errors[a.name].append(str(exc))
    if pending:
        lines = "\n".join(f"  {n}:\n    " + "\n    ".join(errors[n]) for n in (a.name for a in pending))
        raise AssetError(
            "could not obtain MediaPipe model assets from any source:\n"
            + lines
            + "\nSet DFPIPE_ASSETS_FROM to a folder holding the .tflite files to install them offline."
        )
    return [dest / a.name for a in ASSETS]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST)
    parser.add_argument("--no-urls", action="store_true", help="skip the URL source (offline)")
    args = parser.parse_args(argv)
    try:
        for path in fetch_assets(args.dest, try_urls=not args.no_urls):
            print(f"[assets] ok {path}")
    except AssetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
