"""torchrun with 2 CPU processes (gloo): DistributedDataParallel keeps ranks identical; resume is exact."""
import os
import subprocess
import sys

import torch

from conftest import ROOT, error_line, run_script
from test_train_e2e import assert_same_run
from utils.checkpoint import load_checkpoint

FLAGS = ["--model", "cnn", "--width", "1", "--batch_size", "16", "--pyx_batch_size", "16", "--buffer_size", "100",
         "--print_every", "1", "--workers", "0", "--warmup_iters", "2", "--n_epochs", "2", "--n_steps", "2",
         "--device", "cpu", "--ckpt_every_iters", "3"]


def torchrun(*args, check=True):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           os.path.join(ROOT, "train_maebm.py"), *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0 or not check, proc.stderr[-4000:]
    return proc


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
    # a run written by 2 processes resumes only with 2; nothing of it changes
    before = open(os.path.join(part, "metrics.jsonl")).read()
    proc = run_script("train_maebm.py", *common, "--resume", part)
    assert "written by 2 process(es); resume it with as many" in error_line(proc)
    assert open(os.path.join(part, "metrics.jsonl")).read() == before


def test_buffer_must_split_evenly_across_processes(tmp_path, fmnist_root, fmnist_centers):
    proc = torchrun("--data_root", fmnist_root, "--center_dir", fmnist_centers, *FLAGS, "--buffer_size", "101",
                    "--save_dir", tmp_path / "run", check=False)
    assert proc.returncode != 0 and "--buffer_size: 101 is not divisible by the 2 processes" in proc.stderr


def test_sync_bn_on_the_cpu_is_refused_in_one_line(tmp_path, fmnist_root, fmnist_centers):
    proc = torchrun("--data_root", fmnist_root, "--center_dir", fmnist_centers, *FLAGS, "--sync_bn",
                    "--save_dir", tmp_path / "run", check=False)
    assert proc.returncode != 0 and "error: --sync_bn: SyncBatchNorm runs on CUDA devices only" in proc.stderr
    assert "ValueError" not in proc.stderr  # torch's own refusal comes later, as a traceback (torchrun adds its own)
