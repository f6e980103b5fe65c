"""Runs never mix: --overwrite archives the old run, one writer per run directory, readers survive a torn
metrics line, checkpoints carry absolute paths, and evaluation starts chains the way training did."""
import csv
import glob
import os
import shutil
import subprocess
import sys

from PIL import Image
from conftest import ROOT, TINY, error_line, run_script
import numpy as np
import pytest
import torch

from eval_maebm import build_parser as eval_parser
import train_maebm
from utils.checkpoint import load_checkpoint
from utils.errors import UserError
from utils.evaluation import context
from utils.evaluation.context import Evaluation, checkpoint_model, load_model
from utils.evaluation.generative import random_grid
from utils.run_dir import RunLock, read_metrics
from utils.sampling.frozen import frozen_model_state
from utils.training import reporting, step


def train(save, fmnist_root, fmnist_centers, *extra, check=True):
    return run_script("train_maebm.py", "--data_root", fmnist_root, "--center_dir", fmnist_centers, "--save_dir", save,
                      *TINY, "--n_steps", "1", "--ckpt_every_iters", "2", *extra, check=check)


def test_overwrite_archives_the_old_run_and_resume_reads_only_the_new(tmp_path, fmnist_root, fmnist_centers):
    save = tmp_path / "run"
    train(save, fmnist_root, fmnist_centers, "--max_iters", "8")
    train(save, fmnist_root, fmnist_centers, "--max_iters", "2", "--overwrite", "--seed", "2")
    assert sorted(os.path.basename(p) for p in glob.glob(str(save / "ckpt_iter_*.pt"))) == \
        ["ckpt_iter_00000000.pt", "ckpt_iter_00000002.pt"]
    archive, = glob.glob(str(save / "overwritten_*"))
    assert load_checkpoint(os.path.join(archive, "ckpt_iter_00000008.pt"))["iteration"] == 8
    assert f"previous run's files were moved to {archive}" in open(save / "log.txt").read()
    assert max(r["iteration"] for r in read_metrics(str(save / "metrics.jsonl"))) == 1
    train(save, fmnist_root, fmnist_centers, "--max_iters", "4", "--seed", "2", "--resume", save)
    ckpt = load_checkpoint(str(save / "last_ckpt.pt"))
    assert ckpt["iteration"] == 4 and ckpt["args"]["seed"] == 2
    assert "resumed from" in open(save / "log.txt").read() and "at iteration 2 " in open(save / "log.txt").read()


def test_a_second_writer_stops_naming_the_holder(tmp_path, fmnist_root, fmnist_centers):
    save = tmp_path / "run"
    train(save, fmnist_root, fmnist_centers, "--max_iters", "2")
    before = {p: os.path.getmtime(p) for p in glob.glob(str(save / "*"))}
    lock = RunLock(str(save))  # another process holding the run (here: this test)
    proc = train(save, fmnist_root, fmnist_centers, "--max_iters", "4", "--resume", save, check=False)
    assert f"is being written by process {os.getpid()}" in error_line(proc)
    assert {p: os.path.getmtime(p) for p in glob.glob(str(save / "*"))} == before
    lock.release()  # as the kernel does when the holder exits, however it exits
    train(save, fmnist_root, fmnist_centers, "--max_iters", "4", "--resume", save)
    assert load_checkpoint(str(save / "last_ckpt.pt"))["iteration"] == 4


def test_metrics_reader_leaves_out_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iteration": 0}\n{"iteration": 1}\n{"iterat')
    assert read_metrics(str(path)) == [{"iteration": 0}, {"iteration": 1}]
    path.write_text('{"iteration": 0}\n{"iterat\n{"iteration": 2}\n')
    with pytest.raises(UserError, match="line 2 is not JSON"):
        read_metrics(str(path))


def test_diagnostics_reads_a_run_killed_mid_row(tmp_path, fmnist_root, fmnist_centers):
    save = tmp_path / "run"
    train(save, fmnist_root, fmnist_centers, "--max_iters", "5")
    with open(save / "metrics.jsonl", "a") as fh:
        fh.write('{"iteration": 5, "loss/to')
    run_script("eval_maebm.py", "--load_path", save / "last_ckpt.pt", "--eval", "diagnostics", check=True)


def test_sweep_rerun_never_mixes_runs(tmp_path, fmnist_root, fmnist_centers):
    save = tmp_path / "sweep"
    common = ["--n_steps", "1", "--spectral_norm", "off", "--dataset", "fashionmnist", "--data_root", fmnist_root,
              "--center_dir", fmnist_centers, *TINY, "--max_iters", "2", "--ckpt_every_iters", "1", "--save_dir", save]
    run_script("sweep.py", "--lr", "0.05", *common, check=True)
    # a setting left half-done by a killed sweep, holding a longer run's checkpoints, is run again on --resume
    stale = save / "K1_slr1_lr0.1_snoff"
    shutil.copytree(save / "K1_slr1_lr0.05_snoff", stale)
    os.rename(stale / "ckpt_iter_00000002.pt", stale / "ckpt_iter_00000009.pt")
    run_script("sweep.py", "--lr", "0.05", "0.1", *common, "--resume", check=True)
    rows = {r["setting"]: r for r in csv.DictReader(open(save / "sweep.csv"))}
    assert rows["K1_slr1_lr0.1_snoff"]["iterations"] == "2" and rows["K1_slr1_lr0.1_snoff"]["status"] == "ok"
    for setting, lr in (("K1_slr1_lr0.05_snoff", 0.05), ("K1_slr1_lr0.1_snoff", 0.1)):
        names = sorted(os.path.basename(p) for p in glob.glob(str(save / setting / "ckpt_iter_*.pt")))
        assert names == ["ckpt_iter_00000000.pt", "ckpt_iter_00000001.pt", "ckpt_iter_00000002.pt"]
        for p in glob.glob(str(save / setting / "ckpt_iter_*.pt")):
            assert load_checkpoint(p)["args"]["lr"] == lr
    assert glob.glob(str(stale / "overwritten_*" / "ckpt_iter_00000009.pt"))


def test_checkpoint_paths_are_absolute_so_eval_runs_from_anywhere(tmp_path, fmnist_root, fmnist_centers):
    work = tmp_path / "work"
    work.mkdir()
    os.symlink(fmnist_root, work / "data")
    os.symlink(fmnist_centers, work / "centers")
    subprocess.run([sys.executable, os.path.join(ROOT, "train_maebm.py"), "--data_root", "data", "--center_dir",
                    "centers", "--save_dir", "run", *TINY, "--max_iters", "2", "--n_steps", "1"], cwd=work, check=True,
                   capture_output=True)
    ckpt = load_checkpoint(str(work / "run" / "last_ckpt.pt"))
    assert ckpt["args"]["data_root"] == str(work / "data") and ckpt["args"]["center_dir"] == str(work / "centers")
    # evaluated from the repository root: the data and the Gaussian are found through the stored paths
    run_script("eval_maebm.py", "--load_path", work / "run" / "last_ckpt.pt", "--eval", "uncond_samples",
               "--n_steps", "1", "--n_sample_steps", "1", "--buffer_size", "20", check=True)


@pytest.mark.parametrize("init", ["n", "data"])
def test_eval_chains_start_as_training_did(init, tmp_path, fmnist_root):
    save = tmp_path / "run"
    run_script("train_maebm.py", "--data_root", fmnist_root, "--center_dir", tmp_path / "no_gaussian_here",
               "--save_dir", save, *TINY, "--max_iters", "1", "--n_steps", "1", "--init", init, check=True)
    args = eval_parser().parse_args(["--load_path", str(save / "last_ckpt.pt"), "--eval", "gen"])
    ckpt = load_checkpoint(args.load_path, allow_upstream=True)
    arch, train_args = checkpoint_model(args, ckpt, args.load_path)
    model = load_model(ckpt, arch, train_args, args.load_path, torch.device("cpu"))
    x = Evaluation(args, ckpt, arch, train_args, model, torch.device("cpu")).start_fn()(2000)
    at_bounds = (x.abs() == 1).float().mean().item()
    if init == "n":  # clamped N(0, 1): 31.7% of the pixels sit at +-1
        assert abs(x.mean().item()) < 0.01 and at_bounds == pytest.approx(0.317, abs=0.01)
    else:  # training images (pixels within [-0.93, 0.96]) plus N(0, 0.1): almost nothing clamped, the data's spread
        assert at_bounds < 0.02 and 0.4 < x.std().item() < 0.6


def test_class_conditional_grids_use_the_runs_sampler(monkeypatch, tmp_path, fmnist_root, fmnist_centers):
    calls, real = [], step.run_sampler
    spy = lambda name, model, x, n_steps, *a, **k: calls.append((name, n_steps)) or real(name, model, x, n_steps, *a, **k)
    monkeypatch.setattr(step, "run_sampler", spy)  # the training chains
    monkeypatch.setattr(reporting, "run_sampler", spy)  # the class-conditional grids
    assert train_maebm.main(["--data_root", fmnist_root, "--center_dir", fmnist_centers, "--save_dir",
                             str(tmp_path / "run"), *TINY, "--n_steps", "1", "--max_iters", "10", "--sampler",
                             "langevin", "--plot_cond"]) == 0
    assert ("langevin", 10) in calls and {name for name, _ in calls} == {"langevin"}  # the grid's 10 x K steps
    assert (tmp_path / "run" / "samples" / "cond_0.png").is_file()


def test_fid_grid_shows_a_random_draw_of_the_scored_images(tmp_path):
    samples = torch.arange(10).repeat_interleave(100).float().view(-1, 1, 1, 1).expand(-1, 1, 4, 4) / 10
    random_grid(samples, str(tmp_path / "grid.png"), seed=0)
    values = np.unique(np.asarray(Image.open(tmp_path / "grid.png").convert("L")))
    assert len(values) >= 8  # the first 100 images would all be class 0: one grey level besides the padding


def test_project_chains_are_sampled_as_training_ran_them(monkeypatch, tmp_path, fmnist_root, fmnist_centers):
    """--variant project: chains run as long as training's had (here 2 iterations x 16 chains of a 100-image buffer:
    each barely drawn, so K), BatchNorm normalises with the chains' batch statistics (as training's chains did) and
    the running statistics come out unchanged."""
    save = tmp_path / "run"
    run_script("train_maebm.py", "--data_root", fmnist_root, "--center_dir", fmnist_centers, "--save_dir", save,
               *TINY, "--max_iters", "2", "--n_steps", "3", check=True)
    args = eval_parser().parse_args(["--load_path", str(save / "last_ckpt.pt"), "--eval", "gen", "--variant",
                                     "project", "--batch_size", "8"])
    ckpt = load_checkpoint(args.load_path, allow_upstream=True)
    arch, train_args = checkpoint_model(args, ckpt, args.load_path)
    model = load_model(ckpt, arch, train_args, args.load_path, torch.device("cpu"))
    ev = Evaluation(args, ckpt, arch, train_args, model, torch.device("cpu"))
    assert args.n_sample_steps == 3
    seen = []
    spy = lambda name, m, x, n_steps, *a, **k: seen.append((m.training, n_steps)) or (x, {})
    monkeypatch.setattr(context, "run_sampler", spy)
    running = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    ev.sample(8, args.n_sample_steps)
    assert seen == [(True, 3)] and not model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in running.items())
    with frozen_model_state(model):  # what the chains saw: outputs depend on the rest of the batch
        x = torch.rand(8, 1, 28, 28) * 2 - 1
        alone = model(x[:4])[0]
        mixed = model(torch.cat([x[:4], -torch.ones(4, 1, 28, 28)]))[0][:4]
        assert not torch.allclose(alone, mixed)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in running.items())
    upstream = eval_parser().parse_args(["--load_path", str(save / "last_ckpt.pt"), "--eval", "gen"])
    Evaluation(upstream, ckpt, arch, train_args, model, torch.device("cpu"))
    assert upstream.n_sample_steps == 100  # upstream's rounds


def test_chain_length_as_trained():
    quickstart = {"n_steps": 5, "batch_size": 64, "buffer_size": 10000, "reinit_freq": 0.05, "short_run": False}
    # 3003 iterations: 19.2 draws per buffer entry, restarts every 20 draws on average
    assert context.chain_steps_as_trained(quickstart, 3003) == 96
    assert context.chain_steps_as_trained(quickstart, 100000) == 100  # long runs: K / reinit_freq
    assert context.chain_steps_as_trained({**quickstart, "reinit_freq": 0.0}, 100000) == 5 * 640
    assert context.chain_steps_as_trained({**quickstart, "short_run": True}, 3003) == 5
    assert context.chain_steps_as_trained(quickstart, 10) == 5  # never fewer than K
    assert context.chain_steps_as_trained({"n_steps": 5}, 3003) == 5  # an upstream checkpoint records no buffer


def test_max_minutes_stops_with_a_checkpoint(tmp_path, fmnist_root, fmnist_centers):
    save = tmp_path / "run"
    proc = run_script("train_maebm.py", "--data_root", fmnist_root, "--center_dir", fmnist_centers, "--save_dir", save,
                      *TINY, "--n_epochs", "100", "--n_steps", "1", "--max_minutes", "0.002", check=True)
    ckpt = load_checkpoint(str(save / "last_ckpt.pt"))
    assert 1 <= ckpt["iteration"] < 100 * 20  # 320 images / 16 = 20 iterations an epoch
    assert "--max_minutes 0.002 spent at iteration" in open(save / "log.txt").read() and proc.returncode == 0
    proc = run_script("train_maebm.py", "--data_root", fmnist_root, "--save_dir", tmp_path / "x", "--max_minutes", "-1")
    assert proc.returncode == 2 and "--max_minutes" in proc.stderr.strip().splitlines()[-1]
