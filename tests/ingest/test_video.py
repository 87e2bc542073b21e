"""Frame sampling: exact indices of both policies, exact decoded frames with and without seeking,
and clear errors for files that are not (complete) videos."""

import av
import numpy as np
import pytest

from synthetic import write_video
from dfpipe.ingest.video import (
    VideoError, VideoFile, every_nth_indices, per_video_indices, probe, read_frames, sample_indices,
)


def test_every_nth_indices():
    assert every_nth_indices(80, 20) == [0, 20, 40, 60]
    assert every_nth_indices(81, 20) == [0, 20, 40, 60, 80]
    assert every_nth_indices(1, 20) == [0]
    assert every_nth_indices(0, 20) == []
    with pytest.raises(ValueError):
        every_nth_indices(10, 0)


def test_per_video_indices_formula():
    assert per_video_indices(80, 10) == [4, 12, 20, 28, 36, 44, 52, 60, 68, 76]
    assert per_video_indices(300, 30) == list(range(5, 300, 10))
    assert per_video_indices(5, 10) == [0, 1, 2, 3, 4]  # fewer frames than K: all of them
    for n in range(30, 400, 7):
        idx = per_video_indices(n, 30)
        assert idx == [int(np.floor((i + 0.5) * n / 30)) for i in range(30)]
        assert all(b > a for a, b in zip(idx, idx[1:])) and 0 <= idx[0] and idx[-1] < n
    assert sample_indices(80, "per_video", 20, 10) == per_video_indices(80, 10)
    assert sample_indices(80, "every_nth", 20, 10) == every_nth_indices(80, 20)


def _frames(n, h=48, w=64):
    """Frames whose content encodes their index (a moving bar and a grey level)."""
    out = []
    for i in range(n):
        f = np.full((h, w, 3), (i * 5) % 256, np.uint8)
        f[:, (i * 3) % w: (i * 3) % w + 6] = (255, 0, 0)
        out.append(f)
    return out


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("v") / "clip.mp4"
    write_video(path, _frames(90), gop=10)
    return path


def test_probe_counts_demuxed_frames(video):
    info = probe(video)
    assert info.n_frames == 90
    assert info.keyframes[:3] == (0, 10, 20)
    assert (info.width, info.height) == (64, 48)


@pytest.mark.parametrize("indices", [[3, 47, 88], per_video_indices(90, 10), every_nth_indices(90, 20), [0, 1, 2, 89]])
def test_sampled_frames_equal_sequential_decode(video, indices):
    """Frames reached by seeking are byte-identical to the same frames of a full sequential decode."""
    with av.open(str(video)) as c:
        full = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    got, err = read_frames(video, indices)
    assert err == ""
    assert sorted(got) == indices
    for i in indices:
        np.testing.assert_array_equal(got[i], full[i])
        # and it is the right frame: the grey level encodes the index (lossy codec: tolerance)
        assert abs(int(np.median(got[i][:, 40:, 1])) - (i * 5) % 256) <= 6 or (i * 3) % 64 >= 34


def test_gray_read(video):
    got, _ = read_frames(video, [10], gray=True)
    assert got[10].shape == (48, 64) and got[10].dtype == np.uint8


def test_indices_must_be_sorted(video):
    with pytest.raises(ValueError):
        read_frames(video, [5, 3])


def test_bad_files_raise_clear_errors(tmp_path, video):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "text.mp4"
    text.write_bytes(b"not a video at all " * 50)
    cut = tmp_path / "cut.mp4"  # moov atom at the end: a cut file has no index at all
    data = video.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    for path, words in [(empty, "zero-byte"), (text, "not a readable video"), (cut, "not a readable video")]:
        with pytest.raises(VideoError, match=words) as exc:
            probe(path)
        assert str(path) in str(exc.value)


def test_truncated_faststart_file_is_not_trusted(tmp_path):
    """Index at the front, data cut: the header's frame count is not believed."""
    path = tmp_path / "fs.mp4"
    with av.open(str(path), "w", options={"movflags": "faststart"}) as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(60):  # noisy frames: packets of similar size, so a cut drops real frames
            for p in s.encode(av.VideoFrame.from_ndarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    data = path.read_bytes()
    cut = tmp_path / "fs_cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.5)])
    info = probe(cut)
    assert info.declared_frames == 60
    assert info.n_frames < 60
    got, _ = read_frames(cut, [0, 59], info)
    assert 59 not in got


def test_video_file_opens_the_container_once(video, tmp_path, monkeypatch):
    """Probe, sampling and decoding of one file share one container, and give what the separate
    calls (a fresh container each) give, frame for frame; no-timestamp streams included."""
    indices = per_video_indices(90, 10)
    want_info = probe(video)
    want, want_err = read_frames(video, indices, want_info)
    opens = []
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *a, **k: opens.append(a[0]) or real_open(*a, **k))
    with VideoFile(video) as vf:
        assert vf.info == want_info
        got, err = vf.read_frames(indices)
        gray, _ = vf.read_frames([10, 50], gray=True)  # a second read on the same container
    assert len(opens) == 1 and err == want_err == "" and sorted(got) == indices
    for i in indices:
        np.testing.assert_array_equal(got[i], want[i])
    np.testing.assert_array_equal(gray[50], read_frames(video, [50], want_info, gray=True)[0][50])
    # control: the separate functions open the file for the probe and again for the decoding
    opens.clear()
    read_frames(video, indices, probe(video))
    assert len(opens) == 2
    with pytest.raises(ValueError, match="closed"):
        vf.read_frames([0])


def test_video_file_raises_like_probe(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoError, match="zero-byte"):
        VideoFile(empty)
