"""Preprocessing executors: a real two-node Ray cluster, parts + merge and decode-once give the
bytes of the plain local run (real MediaPipe, PyAV, Parquet)."""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from dfpipe.core.config import build
from dfpipe.ingest.parts import merge_parts
from dfpipe.ingest.preprocess import PreprocessConfig, run_source, run_sources
from dfpipe.ingest.sources import SourceConfig

from helpers import preprocess_params
from synthetic import draw_synthetic_face, write_video

CFG = preprocess_params()
IMG = dict(kind="image_folder", path="ffhq", label=0, method="ffhq", mode="crop", group_pattern=r"^(id\d+)_")
FF = dict(kind="ffpp", path="f2f", label=2, method="Face2Face", mode="crop", sampling="every_nth", masks=True)
N_FRAMES, H, W = 20, 120, 160


def cfg(**over):
    return build(PreprocessConfig, {**CFG, **over}, where="preprocess")


def spec(base, **over):
    return build(SourceConfig, {**base, **over}, where="sources.test")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    imgs = root / "ffhq"
    imgs.mkdir()
    for i in range(7):
        img = draw_synthetic_face(160, 160, 70 + 3 * i, 75, 36)[:, :, ::-1]
        assert cv2.imwrite(str(imgs / f"id{i // 2:04d}_{i % 2:02d}.png"), img)
    assert cv2.imwrite(str(imgs / "id0009_00.png"), np.full((160, 160, 3), 128, np.uint8))  # no face
    (imgs / "notes.txt").write_text("not an image")
    vids, masks = root / "Face2Face" / "c23" / "videos", root / "Face2Face" / "masks" / "videos"
    for v in range(3):
        frames = [draw_synthetic_face(H, W, 60 + 2 * i + v, 50, 38) for i in range(N_FRAMES)]
        mframes = [np.pad(np.full((40, 30 + i), 255, np.uint8), ((30, H - 70), (40, W - 70 - i))) for i in range(N_FRAMES)]
        write_video(vids / f"00{2 * v}_00{2 * v + 1}.mp4", frames, gop=5)
        write_video(masks / f"00{2 * v}_00{2 * v + 1}.mp4", mframes, gop=5, crf=0, gray=True)
    write_video(vids / "010_011.mp4", frames, gop=5)  # mask missing: a reject
    return root


def _bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}


def _metrics_bytes(json_path):
    """The metrics JSON and its face-size plot (the folder beside it) as bytes."""
    json_path = Path(json_path)
    return {"metrics": json_path.read_bytes(), **_bytes(json_path.with_suffix(""))}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster():
    """A head node and one worker node (one CPU each) on 127.0.0.1, torn down by process group."""
    ray_bin = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
    port = _free_port()
    tmp = tempfile.mkdtemp(prefix="ray")  # short: Ray's Unix socket paths must stay < 108 chars
    # Ray >= 2.5x authenticates with a token by default (generated into ~/.ray/auth_token by a
    # local ray.init); give this cluster and the driver (this process) their own token instead.
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    saved = {k: os.environ.get(k) for k in auth}
    os.environ.update(auth)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    common = ["--num-cpus", "1", "--object-store-memory", str(100 * 2**20), "--block",
              "--disable-usage-stats"]
    procs = [subprocess.Popen([ray_bin, "start", "--head", "--port", str(port), "--node-ip-address",
                               "127.0.0.1", "--include-dashboard", "false", "--temp-dir", tmp] + common,
                              env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)]
    address = f"127.0.0.1:{port}"
    try:
        import ray

        # generous: on a loaded 2-core box the head takes from seconds to minutes to come up
        deadline = time.monotonic() + 300
        while True:  # wait for the head before adding the worker node
            probe = subprocess.run([ray_bin, "status", "--address", address], env=env,
                                   capture_output=True, text=True, timeout=60)
            if probe.returncode == 0:
                break
            if time.monotonic() > deadline or procs[0].poll() is not None:
                pytest.fail(f"ray head did not start: {probe.stdout[-500:]} {probe.stderr[-500:]}")
            time.sleep(1)
        procs.append(subprocess.Popen([ray_bin, "start", "--address", address, "--node-ip-address",
                                       "127.0.0.1"] + common, env=env, start_new_session=True,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        deadline = time.monotonic() + 300
        while len([n for n in ray.nodes() if n["Alive"]]) < 2:
            if time.monotonic() > deadline:
                pytest.fail("ray worker node did not join")
            time.sleep(1)
        ray.shutdown()
        yield address
    finally:
        try:
            import ray

            ray.shutdown()
        except ImportError:
            pass
        for p in reversed(procs):  # `ray start --block` stops its node's processes on SIGTERM
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def local_runs(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    run_source("img", spec(IMG), cfg(), out / "img", out / "m" / "img.json", root=tree / "ffhq")
    run_source("ff", spec(FF), cfg(), out / "ff", out / "m" / "ff.json", root=tree / "Face2Face")
    return out


@pytest.mark.parametrize("which", ["img", "ff"])
def test_ray_cluster_gives_local_bytes(tree, local_runs, ray_cluster, tmp_path, which):
    base, sub = (IMG, "ffhq") if which == "img" else (FF, "Face2Face")
    c = cfg(executor="ray", ray_address=ray_cluster, workers=2)
    run_source(which, spec(base), c, tmp_path / which, tmp_path / "m" / f"{which}.json", root=tree / sub)
    local, ray_out = _bytes(local_runs / which), _bytes(tmp_path / which)
    assert sorted(local) == sorted(ray_out) and sum(n.startswith("images-") for n in local) >= 2
    assert local == ray_out
    assert _metrics_bytes(tmp_path / "m" / f"{which}.json") == _metrics_bytes(local_runs / "m" / f"{which}.json")


def test_local_pool_gives_in_process_bytes(tree, local_runs, tmp_path):
    """2 pool workers, images in chunks of 8 (8 listed images cross a chunk edge): the bytes,
    metrics and plot of the in-process run."""
    run_source("img", spec(IMG), cfg(workers=2), tmp_path / "img", tmp_path / "m" / "img.json", root=tree / "ffhq")
    assert _bytes(tmp_path / "img") == _bytes(local_runs / "img")
    assert _metrics_bytes(tmp_path / "m" / "img.json") == _metrics_bytes(local_runs / "m" / "img.json")
    m = json.loads((tmp_path / "m" / "img.json").read_text())
    # 8 images + notes.txt offered; the grey square has no face
    assert m["files"] == {"offered": 9, "kept": 7, "rejected": 2,
                          "rejected_by_reason": {"no_face": 1, "not_image": 1}}


@pytest.mark.parametrize("n", [2, 3])
def test_parts_merge_to_one_run(tree, local_runs, tmp_path, n):
    parts = [tmp_path / f"part{i}" for i in range(n)]
    metrics = []
    for i, d in enumerate(parts):
        metrics.append(tmp_path / f"m{i}.json")
        run_source("ff", spec(FF), cfg(shard_size=2), d, metrics[-1], root=tree / "Face2Face", part=(i, n))
    assert len({_bytes(d)["manifest.parquet"] for d in parts}) == n  # the parts really differ
    m = merge_parts("ff", parts, tmp_path / "merged", 3, metrics, tmp_path / "m" / "ff.json")
    assert _bytes(tmp_path / "merged") == _bytes(local_runs / "ff")
    # metrics (accounting summed over parts) and the face-size plot: those of the one run
    assert _metrics_bytes(tmp_path / "m" / "ff.json") == _metrics_bytes(local_runs / "m" / "ff.json")
    assert m["items"] == 4 and m["files"]["rejected_by_reason"].get("mask_missing") == 1
    assert m["frames"]["sampled"] == 3 * len(range(0, N_FRAMES, 6))


def test_merge_refuses_parts_whose_metrics_disagree(tree, tmp_path):
    parts, metrics = [tmp_path / "p0", tmp_path / "p1"], [tmp_path / "m0.json", tmp_path / "m1.json"]
    for i in range(2):
        run_source("ff", spec(FF), cfg(), parts[i], metrics[i], root=tree / "Face2Face", part=(i, 2))
    m0 = json.loads(metrics[0].read_text())
    m0["files"]["kept"] += 1  # a file counted kept that no manifest row backs
    metrics[0].write_text(json.dumps(m0))
    with pytest.raises(RuntimeError, match="accounting"):
        merge_parts("ff", parts, tmp_path / "merged", 3, metrics)


def test_decode_once_gives_each_sources_bytes(tree, local_runs, tmp_path):
    k_spec = spec(FF, sampling="per_video")
    run_source("ffk", k_spec, cfg(), tmp_path / "k_alone", tmp_path / "alone" / "ffk.json", root=tree / "Face2Face")
    run_sources(["ff", "ffk"], [spec(FF), k_spec], cfg(), [tmp_path / "n", tmp_path / "k"],
                [tmp_path / "m" / "ff.json", tmp_path / "m" / "ffk.json"], root=tree / "Face2Face")
    assert _bytes(tmp_path / "n") == _bytes(local_runs / "ff")
    assert _bytes(tmp_path / "k") == _bytes(tmp_path / "k_alone")
    assert _metrics_bytes(tmp_path / "m" / "ff.json") == _metrics_bytes(local_runs / "m" / "ff.json")
    assert _metrics_bytes(tmp_path / "m" / "ffk.json") == _metrics_bytes(tmp_path / "alone" / "ffk.json")
    with pytest.raises(ValueError, match="differ in more than sampling"):
        run_sources(["ff", "x"], [spec(FF), spec(FF, label=1)], cfg(), [tmp_path / "a", tmp_path / "b"],
                    root=tree / "Face2Face")


class _ThreadProbe:
    """A worker that reports the thread settings it runs under (picklable: module level)."""

    def process(self, item):
        import time

        import torch  # imported after the pin, as a worker's later imports are
        from threadpoolctl import threadpool_info

        from dfpipe.ingest import video

        time.sleep(0.05)  # long enough that both pool processes take items
        native = sorted({pool["num_threads"] for pool in threadpool_info()})  # BLAS / OpenMP pools loaded
        return (os.getpid(), cv2.getNumThreads(), sorted(os.sched_getaffinity(0)),
                os.environ.get("OMP_NUM_THREADS"), video.decoder_threads(), torch.get_num_threads(), native)

    def close(self):
        pass


def test_worker_cores_split_evenly():
    from dfpipe.ingest.executor import worker_cores

    assert [worker_cores(i, 2, [0, 1, 2, 3]) for i in range(2)] == [[0, 1], [2, 3]]
    assert [worker_cores(i, 3, [0, 1, 2, 3]) for i in range(3)] == [[0], [1], [2]]
    assert worker_cores(1, 4, [0, 1]) == [0, 1]  # more workers than cores: shared, one thread each


def test_pool_workers_own_their_cores():
    """Each pool process runs on its own cores with that many threads for OpenCV, torch, OpenMP/BLAS
    and FFmpeg; the in-process worker gets one thread and the caller's settings come back afterwards.
    (Control: this process runs torch on 2 threads before and after, and an unpinned process reports
    every core and OpenCV's default thread count.)"""
    import torch

    from dfpipe.ingest.executor import available_cores, ordered_map

    cores = available_cores()
    saved_torch = torch.get_num_threads()
    torch.set_num_threads(2)  # the control: a pin to one thread must show
    try:
        before = (cv2.getNumThreads(), os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads())
        got = list(ordered_map(_ThreadProbe, range(6), 2))
        by_pid = {pid: rest for pid, *rest in got}
        share = len(cores) // 2
        for threads, affinity, omp, decoder, torch_threads, native in by_pid.values():
            if share >= 1:
                assert len(affinity) == share and set(affinity) <= set(cores), affinity
            assert threads == max(share, 1) and omp == str(max(share, 1)) and decoder == max(share, 1)
            assert torch_threads == max(share, 1) and native == [max(share, 1)], (torch_threads, native)
        if share >= 1 and len(by_pid) == 2:
            a, b = (set(v[1]) for v in by_pid.values())
            assert not a & b  # disjoint cores
        (_, threads, affinity, omp, decoder, torch_threads, native), = ordered_map(_ThreadProbe, [0], 1)
        assert threads == 1 and omp == "1" and decoder == 1 and torch_threads == 1 and native == [1]
        after = (cv2.getNumThreads(), os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads())
        assert after == before and before[2] == 2  # restored
        assert affinity == cores  # the in-process worker does not bind this process
    finally:
        torch.set_num_threads(saved_torch)


_BIND_PROBE = """
import os, sys, threading
from dfpipe.ingest.executor import bind_process
stop = threading.Event()
t = threading.Thread(target=stop.wait)  # started before the pin, as a Ray actor's gRPC threads are
t.start()
def threads():
    return {tid: sorted(os.sched_getaffinity(int(tid))) for tid in os.listdir("/proc/self/task")}
before = threads()
bind_process([int(sys.argv[1])])
print(repr((before, threads())))
stop.set()
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir() or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux /proc and two cores")
def test_bind_process_binds_threads_started_before():
    """Every thread of the process, also one started before the pin, ends on the worker's core.
    (Control: before the pin that thread runs on every core, which ``sched_setaffinity(0)`` alone
    would have left it on.)"""
    import ast

    core = sorted(os.sched_getaffinity(0))[-1]
    out = subprocess.run([sys.executable, "-c", _BIND_PROBE, str(core)], capture_output=True, text=True,
                         check=True).stdout
    before, after = ast.literal_eval(out.strip().splitlines()[-1])
    assert len(before) >= 2 and all(len(c) >= 2 for c in before.values()), before  # control
    assert set(after) >= set(before) and all(c == [core] for c in after.values()), after
