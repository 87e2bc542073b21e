"""Shard storage, atomic writes and path confinement."""

from __future__ import annotations

import numpy as np
import pytest

from dfpipe.core.io import array_hash, atomic_path, resolve_inside, sha256_file, write_json
from dfpipe.core.shards import ShardReader, ShardWriter


def _items(n, shape=(4, 4, 3), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]


def test_round_trip_across_shard_boundaries(tmp_path):
    items = _items(7)
    with ShardWriter(tmp_path, "images", shard_size=3) as w:
        refs = [w.add(a) for a in items]
    assert sorted(p.name for p in tmp_path.glob("*.npy")) == [
        "images-00000.npy", "images-00001.npy", "images-00002.npy"]
    assert refs[3] == ("images-00001.npy", 0) and refs[6] == ("images-00002.npy", 0)
    reader = ShardReader(tmp_path)
    for a, (name, off) in zip(items, refs):
        np.testing.assert_array_equal(reader.get(name, off), a)
    order = [5, 0, 3, 3, 6]
    got = reader.gather([refs[i][0] for i in order], [refs[i][1] for i in order])
    np.testing.assert_array_equal(got, np.stack([items[i] for i in order]))


def test_shards_are_byte_deterministic(tmp_path):
    for sub in ("a", "b"):
        with ShardWriter(tmp_path / sub, "images", shard_size=4) as w:
            for a in _items(5):
                w.add(a)
    for name in ("images-00000.npy", "images-00001.npy"):
        assert sha256_file(tmp_path / "a" / name) == sha256_file(tmp_path / "b" / name)


def test_shape_mismatch_is_an_error(tmp_path):
    w = ShardWriter(tmp_path, "images")
    w.add(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="differs"):
        w.add(np.zeros((5, 4, 3), np.uint8))


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    write_json(target, {"b": 1, "a": np.int64(2)})
    assert target.read_text() == '{\n  "a": 2,\n  "b": 1\n}\n'


def test_resolve_inside_refuses_escapes(tmp_path):
    assert resolve_inside(tmp_path, "a/b.png") == (tmp_path / "a/b.png").resolve()
    for bad in ("../x", "a/../../x", "/etc/passwd"):
        with pytest.raises(ValueError):
            resolve_inside(tmp_path, bad)


def test_array_hash_sees_dtype_and_shape():
    a = np.zeros((2, 3), np.uint8)
    assert array_hash(a) != array_hash(a.reshape(3, 2))
    assert array_hash(a) != array_hash(a.astype(np.int8))
    assert array_hash(a) == array_hash(a.copy())
