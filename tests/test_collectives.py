"""Every collective is entered by every rank, in the same order: training features under torchrun with 2 CPU
processes (gloo), each rank's collectives recorded by tests/record_collectives.py; and the rank-0-only rule."""
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from conftest import ROOT
from utils.checkpoint import load_checkpoint
from utils.distributed import DistInfo, main_only, on_main

SMALL = ["--model", "cnn", "--width", "1", "--batch_size", "16", "--pyx_batch_size", "16", "--buffer_size", "40",
         "--print_every", "1", "--workers", "0", "--warmup_iters", "2", "--n_steps", "2", "--device", "cpu"]


def recorded_torchrun(log_dir, *args, env=None):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           os.path.join(ROOT, "tests", "record_collectives.py"), str(log_dir), os.path.join(ROOT, "train_maebm.py"),
           *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def assert_ranks_in_step(log_dir, proc):
    """Both ranks issued the same collectives in the same order (and some: the recorder ran)."""
    ranks = [[json.loads(line) for line in open(os.path.join(log_dir, f"rank{r}.jsonl"))] for r in (0, 1)]
    assert len(ranks[0]) > 20, proc.stderr[-3000:]
    for i, (a, b) in enumerate(zip(*ranks)):
        assert a == b, f"collective {i}: rank 0 {a}, rank 1 {b}"
    assert len(ranks[0]) == len(ranks[1]), proc.stderr[-3000:]
    return ranks[0]


def assert_parameters_agree(run_dir):
    assert "2 processes agree on the parameters: max |difference from rank 0| = 0\n" in \
        open(os.path.join(run_dir, "log.txt")).read()


def test_every_feature_issues_the_same_collectives_on_every_rank_through_a_stop_and_resume(
        tmp_path, fmnist_root, fmnist_centers, fid_weights):
    """SyncBatchNorm (modelled), EMA, SAM, class-conditional and buffer grids, long-run probes, --fid_every,
    --eval_every with a validation split, rolling checkpoints, SIGTERM on rank 1 alone, and the resume."""
    run = str(tmp_path / "run")
    flags = ["--data_root", fmnist_root, "--center_dir", fmnist_centers, *SMALL, "--n_epochs", "2", "--n_valid", "32",
             "--sync_bn", "--ema", "0.9", "--optimizer", "sam", "--plot_cond", "--plot_uncond", "--plot_every", "3",
             "--long_run_every", "4", "--long_run_n", "4", "--long_run_steps", "2", "--fid_every", "1", "--fid_n", "8",
             "--fid_ref_n", "8", "--eval_every", "1", "--ckpt_every_iters", "4", "--save_dir", run]
    stopped = recorded_torchrun(tmp_path / "stopped", *flags, env={"RECORD_SIGTERM_AT": "1:120"})
    ops = assert_ranks_in_step(tmp_path / "stopped", stopped)
    assert stopped.returncode != 0 and "stopped by signal 15 at iteration" in open(os.path.join(run, "log.txt")).read()
    assert {"all_gather", "_broadcast_coalesced", "all_reduce", "broadcast_object_list"} <= {op["op"] for op in ops}
    at = load_checkpoint(os.path.join(run, "last_ckpt.pt"))["iteration"]
    assert 0 < at < 18  # (320 - 32) images / (2 ranks x 16) = 9 iterations per epoch
    resumed = recorded_torchrun(tmp_path / "resumed", *flags[:-2], "--resume", run)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_ranks_in_step(tmp_path / "resumed", resumed)
    assert load_checkpoint(os.path.join(run, "last_ckpt.pt"))["iteration"] == 18
    assert_parameters_agree(run)
    samples = os.listdir(os.path.join(run, "samples"))
    assert "cond_1.png" in samples and "buffer_1.png" in samples


@pytest.mark.parametrize("name,extra", [
    ("rollback", ["--pyx", "0", "--uncond", "--plot_uncond", "--lr", "50", "--warmup_iters", "0", "--diverge_threshold",
                  "1e3", "--rollback_lr_factor", "0.0002", "--ckpt_every_iters", "3"]),
    ("dsm", ["--objective", "dsm", "--optimizer", "adam", "--lr", "1e-3"]),
    ("energy_matching", ["--objective", "energy_matching", "--sampler", "flow", "--n_steps", "3", "--sgld_lr", "0.3",
                         "--cd_start_iter", "4", "--optimizer", "adam", "--lr", "1e-3"]),
])
def test_rollbacks_and_chain_free_objectives_issue_the_same_collectives_on_every_rank(
        name, extra, tmp_path, fmnist_root, fmnist_centers):
    run = str(tmp_path / "run")
    proc = recorded_torchrun(tmp_path / "log", "--data_root", fmnist_root, "--center_dir", fmnist_centers, *SMALL,
                             "--n_epochs", "1", *extra, "--save_dir", run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_ranks_in_step(tmp_path / "log", proc)
    assert_parameters_agree(run)
    if name == "rollback":
        assert "divergence at iteration" in open(os.path.join(run, "log.txt")).read()


@pytest.fixture
def one_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_a_collective_in_a_rank_0_only_block_raises_instead_of_hanging(one_process_group):
    two_ranks = DistInfo(rank=0, world=2)
    with pytest.raises(RuntimeError, match=r"the grid: torch.distributed.all_gather_into_tensor on rank 0 alone"):
        with main_only(two_ranks, "the grid"):
            dist.all_gather_into_tensor(torch.empty(3), torch.ones(3))
    value = torch.ones(3)
    with pytest.raises(RuntimeError, match="a step rank 0 runs alone: torch.distributed.all_reduce"):
        on_main(lambda: dist.all_reduce(value), two_ranks)
    dist.all_reduce(value)  # outside the blocks (and after an error in one) collectives work again
    with main_only(DistInfo(), "a single process"):  # nothing to guard without other ranks
        dist.all_reduce(value)
    assert torch.equal(value, torch.ones(3))
