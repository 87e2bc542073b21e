"""Small I/O helpers shared by all stages: atomic writes, hashing, JSON, safe relative paths.

Also the two rules that keep outputs independent of where the checkout lives: stale temporary
files of a killed run are removed before a stage writes (:func:`clean_stale_temps`), and text
from outside (exception messages of Pillow, PyAV, OpenCV, the OS) is stripped of absolute paths
before it is stored (:func:`relative_message`); odd file names are stored in an escaped,
printable form (:func:`printable_name`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A stage killed midway therefore never leaves a half-written file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)  # mkstemp creates 0600; outputs are ordinary files
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, obj: Any) -> None:
    """Deterministic JSON (sorted keys, fixed indent, trailing newline), written atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"
    write_bytes(path, text.encode("utf-8"))


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    return json.loads(path.read_text(encoding="utf-8"))


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """``np.save`` through :func:`atomic_path` (the .npy format is byte-deterministic)."""
    with atomic_path(path) as tmp:
        with tmp.open("wb") as fh:
            np.save(fh, np.ascontiguousarray(array), allow_pickle=False)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return obj.as_posix()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def array_hash(array: np.ndarray) -> str:
    """Content hash of an array: sha256 over dtype, shape and C-ordered bytes."""
    a = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def resolve_inside(root: str | Path, relative: str | Path) -> Path:
    """Join ``relative`` onto ``root`` and refuse any result that escapes ``root``.

    Manifests and split files are data from outside; a path such as ``../../etc/passwd`` or an
    absolute path in them must be an error, not a read outside the data root.
    """
    root = Path(root).resolve()
    rel = Path(relative)
    if rel.is_absolute():
        raise ValueError(f"absolute path {relative!s} not allowed inside {root}")
    full = (root / rel).resolve()
    if full != root and root not in full.parents:
        raise ValueError(f"path {relative!s} escapes the data root {root}")
    return full


def glob_escape(text: str) -> str:
    """``text`` with glob metacharacters escaped (``fnmatch`` style)."""
    return re.sub(r"([*?\[])", r"[\1]", text)


#: Names :func:`atomic_path` (and ``make_demo``'s temporary tree) give to unfinished outputs.
TEMP_GLOB = ".*.tmp"


def clean_stale_temps(out_dir: str | Path, recursive: bool = True, prefix: str = "") -> list[str]:
    """Remove ``.*.tmp`` files and folders left under ``out_dir`` by a run killed outside DVC.

    Every stage calls this on each of its output folders before writing: :func:`atomic_path`
    never leaves one behind on a normal exit, so any that exists is from a dead run (and makes
    ``dvc status`` report the output as modified). ``prefix`` limits the clean-up to temporaries
    of one file in a folder shared with other stages (``prefix="ffhq.json"`` removes
    ``.ffhq.json.*.tmp`` only). Returns the removed names, relative to ``out_dir`` and sorted.
    A missing ``out_dir`` is fine (nothing to clean).
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    pattern = f".{glob_escape(prefix)}.*.tmp" if prefix else TEMP_GLOB
    found = out_dir.rglob(pattern) if recursive else out_dir.glob(pattern)
    removed = []
    for p in sorted(found, key=lambda q: len(q.parts), reverse=False):
        if not (p.exists() or p.is_symlink()):
            continue  # inside a temporary folder removed just before
        removed.append(p.relative_to(out_dir).as_posix())
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    return sorted(removed)


# An absolute POSIX path inside a message: "/" at the start or after a space, quote, bracket or
# colon, followed by at least two path components.
_ABS_PATH = re.compile(r"(?:(?<=^)|(?<=[\s'\"(\[=:,]))/(?:[^\s'\"/]+/)+(?=[^\s'\"/]*)")


def relative_message(text: str, *roots: str | Path) -> str:
    """``text`` with every absolute path made relative: to the first of ``roots`` it lies under,
    else reduced to its last component.

    Exception messages of third-party libraries name files by absolute path; stored as they are,
    they make an output's bytes depend on the folder of the checkout. The current directory (the
    repository root for a DVC stage) is always tried after ``roots``.
    """
    prefixes: list[str] = []
    for r in (*roots, Path.cwd()):
        for form in (Path(r), Path(r).absolute(), Path(r).resolve()):
            s = form.as_posix().rstrip("/")
            if s.startswith("/") and len(s) > 1 and s not in prefixes:
                prefixes.append(s)
    prefixes.sort(key=len, reverse=True)  # the deepest root wins
    for s in prefixes:
        text = re.sub(re.escape(s) + "/", "", text)
        text = re.sub(re.escape(s) + r"(?=[\s'\":,)\]]|$)", ".", text)  # the root itself
    return _ABS_PATH.sub("", text)


def printable_name(name: str) -> str:
    """A file name as printable UTF-8 text: undecodable bytes as ``\\xNN``, control characters
    escaped; an ordinary name comes back unchanged. ``os.fsencode`` recovers the original bytes
    of a name that Python decoded with surrogate escapes."""
    raw = os.fsencode(name)
    text = raw.decode("utf-8", errors="backslashreplace")
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def is_representable(name: str) -> bool:
    """Whether ``name`` can be stored as is: valid UTF-8 and no control characters."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return all(ch.isprintable() for ch in name)
