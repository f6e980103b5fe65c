"""Crash safety: corrupt checkpoints, divergence rollback, full disks, unreadable images."""
import glob
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, TINY, error_line, run_script
from test_train_e2e import RESUME_FLAGS, assert_same_run, train
from utils.checkpoint import load_checkpoint


def digest(folder):
    return {p: hashlib.md5(open(p, "rb").read()).hexdigest() for p in sorted(glob.glob(os.path.join(folder, "**"), recursive=True))
            if os.path.isfile(p)}


def test_resume_falls_back_past_a_truncated_checkpoint(tmp_path, fmnist_root, fmnist_centers):
    full, _ = train(tmp_path, fmnist_root, fmnist_centers, "full", *RESUME_FLAGS)
    part, _ = train(tmp_path, fmnist_root, fmnist_centers, "part", *RESUME_FLAGS, "--max_iters", "13")
    newest = os.path.join(part, "ckpt_iter_00000013.pt")
    data = open(newest, "rb").read()
    with open(newest, "wb") as fh:  # a crash mid-write without the atomic rename would leave this
        fh.write(data[: len(data) // 3])
    run_script("train_maebm.py", "--dataset", "fashionmnist", "--data_root", fmnist_root, "--center_dir",
               fmnist_centers, *TINY, *RESUME_FLAGS, "--resume", part, check=True)
    log = open(os.path.join(part, "log.txt")).read()
    assert "skipped unreadable checkpoint" in log and "ckpt_iter_00000012.pt at iteration 12" in log
    assert_same_run(full, part)
    rows = [line for line in open(os.path.join(part, "metrics.jsonl")) if '"loss/total"' in line]
    assert len(rows) == 30  # iterations 12 and 13 were rolled back and logged once each


def test_divergence_rolls_back_with_smaller_lr_and_recovers(tmp_path, fmnist_root, fmnist_centers):
    save, _ = train(tmp_path, fmnist_root, fmnist_centers, "div", "--n_epochs", "2", "--lr", "50", "--warmup_iters",
                    "0", "--diverge_threshold", "1e3", "--rollback_lr_factor", "0.0002", "--ckpt_every_iters", "5")
    log = open(os.path.join(save, "log.txt")).read()
    assert "divergence at iteration" in log and "lr scaled to x0.0002" in log
    assert glob.glob(os.path.join(save, "diverge_*.png"))
    ckpt = load_checkpoint(os.path.join(save, "last_ckpt.pt"))
    assert ckpt["iteration"] == 20 and ckpt["rollbacks"] >= 1 and ckpt["lr_scale"] <= 0.0002
    assert all(torch.isfinite(v).all() for v in ckpt["model_state_dict"].values() if v.is_floating_point())
    steps = [json.loads(line)["iteration"] for line in open(os.path.join(save, "metrics.jsonl"))
             if '"loss/total"' in line]
    assert steps == list(range(20))  # the rolled-back stretch is not left in the metrics


def test_divergence_gives_up_after_max_rollbacks(tmp_path, fmnist_root, fmnist_centers):
    save, proc = train(tmp_path, fmnist_root, fmnist_centers, "giveup", "--n_epochs", "2", "--lr", "1000",
                       "--warmup_iters", "0", "--diverge_threshold", "10", "--rollback_lr_factor", "1",
                       "--max_rollbacks", "2", check=False)
    assert proc.returncode == 2 and "after 2 rollbacks" in error_line(proc)
    assert glob.glob(os.path.join(save, "diverge_*.png"))
    ckpt = load_checkpoint(os.path.join(save, "last_ckpt.pt"))  # the last good state is still loadable
    assert ckpt["iteration"] == 0


def test_full_disk_leaves_the_run_untouched(tmp_path, fmnist_root, fmnist_centers):
    save, _ = train(tmp_path, fmnist_root, fmnist_centers, "disk", "--max_iters", "2")
    before = digest(save)
    inject = ("import errno, os, runpy, sys\n"
              "def full(fd): raise OSError(errno.ENOSPC, 'No space left on device')\n"
              "os.fsync = full\n"
              "sys.argv = sys.argv[1:]\n"
              "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    cmd = [sys.executable, "-c", inject, os.path.join(ROOT, "train_maebm.py"), "--data_root", fmnist_root,
           "--center_dir", fmnist_centers, *TINY, "--max_iters", "4", "--resume", save]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "No space left on device" in error_line(proc)
    assert digest(save) == before
    assert not [f for f in os.listdir(save) if f.endswith(".tmp")]


FAIL_NTH_FSYNC = ("import errno, os, runpy, sys\n"
                  "real, seen = os.fsync, [0]\n"
                  "def fsync(fd):\n"
                  "    if os.environ['FAIL_ON'] in os.path.basename(os.readlink(f'/proc/self/fd/{fd}')):\n"
                  "        seen[0] += 1\n"
                  "        if seen[0] == int(os.environ['FAIL_AT']):\n"
                  "            raise OSError(errno.ENOSPC, 'No space left on device')\n"
                  "    return real(fd)\n"
                  "os.fsync = fsync\n"
                  "sys.argv = sys.argv[1:]\n"
                  "runpy.run_path(sys.argv[0], run_name='__main__')\n")


@pytest.mark.parametrize("fail_on,fail_at,last_good", [("ckpt_iter_00000004", 1, 2), ("metrics.jsonl", 6, 4)])
def test_disk_full_mid_run_keeps_earlier_files_and_resumes(fail_on, fail_at, last_good, tmp_path, fmnist_root,
                                                           fmnist_centers):
    save = str(tmp_path / "run")
    flags = ["--data_root", fmnist_root, "--center_dir", fmnist_centers, *TINY, "--n_steps", "1",
             "--ckpt_every_iters", "2", "--save_dir", save]
    proc = subprocess.run([sys.executable, "-c", FAIL_NTH_FSYNC, os.path.join(ROOT, "train_maebm.py"), *flags,
                           "--max_iters", "8"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "FAIL_ON": fail_on, "FAIL_AT": str(fail_at)})
    assert proc.returncode == 2 and "No space left on device" in error_line(proc)
    assert load_checkpoint(os.path.join(save, "last_ckpt.pt"))["iteration"] == last_good
    assert not [f for f in os.listdir(save) if f.endswith(".tmp")]
    run_script("train_maebm.py", *flags, "--max_iters", "8", "--resume", save, check=True)
    assert load_checkpoint(os.path.join(save, "last_ckpt.pt"))["iteration"] == 8
    rows = [json.loads(line) for line in open(os.path.join(save, "metrics.jsonl"))]
    assert [r["iteration"] for r in rows if "loss/total" in r] == list(range(8))


def write_image_folder(root, n_per_class=4, corrupt=False):
    from PIL import Image
    for c in range(2):
        d = os.path.join(root, "img32", "train", f"c{c}")
        os.makedirs(d, exist_ok=True)
        for i in range(n_per_class):
            Image.fromarray(np.full((32, 32, 3), 30 * i + 100 * c, np.uint8)).save(os.path.join(d, f"{i}.png"))
    if corrupt:
        with open(os.path.join(root, "img32", "train", "c1", "broken.png"), "wb") as fh:
            fh.write(b"\x89PNG not really")


def test_corrupt_image_in_image_folder_is_named(tmp_path):
    write_image_folder(str(tmp_path), corrupt=True)
    proc = run_script("one_center.py", "--dataset", "img32", "--data_root", str(tmp_path), "--save_dir", str(tmp_path / "c"))
    assert proc.returncode == 2 and "broken.png cannot be read" in error_line(proc)
    assert not os.path.exists(tmp_path / "c" / "img32_mean_one.pt")


def test_empty_image_folder(tmp_path):
    os.makedirs(tmp_path / "img32" / "train" / "c0")
    proc = run_script("one_center.py", "--dataset", "img32", "--data_root", str(tmp_path), "--save_dir", str(tmp_path / "c"))
    assert proc.returncode == 2 and "--data_root" in error_line(proc)


def test_nan_buffer_in_loaded_checkpoint_is_refused(tmp_path, fmnist_root, fmnist_centers):
    save, _ = train(tmp_path, fmnist_root, fmnist_centers, "nan", "--max_iters", "1")
    ckpt = torch.load(os.path.join(save, "last_ckpt.pt"), weights_only=True)
    ckpt["replay_buffer"][0] = float("nan")
    bad = str(tmp_path / "nan_buffer.pt")
    torch.save(ckpt, bad)
    _, proc = train(tmp_path, fmnist_root, fmnist_centers, "from_nan", "--load_path", bad, "--max_iters", "1", check=False)
    assert proc.returncode == 2 and "NaN or inf in its replay buffer" in error_line(proc)
    assert not os.path.exists(tmp_path / "from_nan")
