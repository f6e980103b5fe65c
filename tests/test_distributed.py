"""torchrun with 2 CPU processes (gloo): DistributedDataParallel keeps ranks identical; resume is exact."""
import os
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from test_train_e2e import assert_same_run
from utils.checkpoint import load_checkpoint

TORCHRUN = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
FLAGS = ["--model", "cnn", "--width", "1", "--batch_size", "16", "--pyx_batch_size", "16", "--buffer_size", "100",
         "--print_every", "1", "--workers", "0", "--warmup_iters", "2", "--n_epochs", "2", "--n_steps", "2",
         "--device", "cpu", "--ckpt_every_iters", "3"]


def torchrun(*args):
    cmd = [TORCHRUN, "--standalone", "--nproc_per_node=2", os.path.join(ROOT, "train_maebm.py"), *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not found")
def test_two_process_run_keeps_ranks_identical_and_resumes_exactly(tmp_path, fmnist_root, fmnist_centers):
    common = ["--data_root", fmnist_root, "--center_dir", fmnist_centers, *FLAGS]
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    torchrun(*common, "--save_dir", full)
    log = open(os.path.join(full, "log.txt")).read()
    assert "2 processes agree on the parameters: max |difference from rank 0| = 0" in log
    ckpt = load_checkpoint(os.path.join(full, "last_ckpt.pt"))
    assert ckpt["iteration"] == 20 and len(ckpt["rng"]) == 2  # 320 images / (2 ranks x 16) per epoch
    assert ckpt["replay_buffer"].shape == (100, 1, 28, 28)  # both ranks' shards
    assert not torch.equal(ckpt["replay_buffer"][:50], ckpt["replay_buffer"][50:])
    torchrun(*common, "--save_dir", part, "--max_iters", "7")
    torchrun(*common, "--resume", part)
    assert_same_run(full, part)
