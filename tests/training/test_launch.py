"""train.gpus > 1: the train stage re-runs itself under torchrun; 2 gloo processes on CPU train the
tiny variant, keep the global batch and write the checkpoints and metrics once."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dfpipe.training.launch import torchrun_argv
from dfpipe.training.checkpoint import load_model

from helpers import RUN_DEFAULTS, approve_variant, make_variant

ROOT = Path(__file__).resolve().parents[2]


def test_torchrun_command_for_one_and_several_nodes():
    one = torchrun_argv(2, 1, None, "r", "stages/train.py", ["r"])
    assert one[1:] == ["-m", "torch.distributed.run", "--nproc-per-node", "2", "--nnodes", "1",
                       "--standalone", "stages/train.py", "r"]
    many = torchrun_argv(4, 2, "10.0.0.1:29400", "r", "stages/train.py", ["r"])
    assert many[-8:] == ["--rdzv-backend", "c10d", "--rdzv-endpoint", "10.0.0.1:29400", "--rdzv-id", "r",
                         "stages/train.py", "r"]
    with pytest.raises(ValueError, match="rdzv_endpoint"):
        torchrun_argv(1, 2, None, "r", "stages/train.py", ["r"])


def test_two_gloo_processes_train_with_the_global_batch(tmp_path):
    make_variant(tmp_path / "data" / "variants" / "toy")  # 24 train items, 12 val
    approve_variant(tmp_path / "data" / "variants" / "toy", tmp_path / "metrics" / "audit" / "toy" / "gate.json")
    params = {
        "audit": {"out_dir": "metrics/audit"},
        "train": {"device": "cpu", "num_workers": 0, "amp": "off", "threads": 1, "log_every": 0,
                  "progress": False, "gpus": 2, "nodes": 1, "rdzv_endpoint": None},
        "run_defaults": RUN_DEFAULTS,
        "runs": {"ddp": {"model": {"name": "resnet18", "image_size": 32}, "variant": "toy", "lr": 0.001,
                         "batch_size": 8, "epochs": 1, "seeds": [5], "max_steps_per_epoch": 0,
                         "bn_recalibration_images": 0}},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    env.pop("LOCAL_RANK", None)
    env.pop("TORCHELASTIC_RUN_ID", None)
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "train.py"), "ddp"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "launching 2 processes" in log
    # global batch 8 = 2 ranks x 4; 24 items -> 3 steps per epoch, as one process with batch 8
    assert "3 steps/epoch" in log and "world 2, batch 4 per rank" in log
    assert log.count("ddp seed 5 epoch 1/1") == 1  # rank 0 alone validates and logs
    model, cfg = load_model(tmp_path / "models" / "ddp" / "seed5.pt")
    assert cfg.batch_size == 8 and sum(p.numel() for p in model.parameters()) > 0
    assert (tmp_path / "metrics" / "train" / "ddp" / "curves" / "seed5.tsv").is_file()
    assert (tmp_path / "metrics" / "train" / "ddp" / "metrics.json").is_file()
