"""End-to-end: one_center.py -> train_maebm.py in subprocesses on a small Fashion-MNIST written by the test."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import torch

from conftest import ROOT, TINY, error_line, run_script
from models import build_model
from utils.checkpoint import load_checkpoint


def train(tmp_path, fmnist_root, fmnist_centers, name, *extra, check=True, process=False):
    save = str(tmp_path / name)
    proc = run_script("train_maebm.py", "--dataset", "fashionmnist", "--data_root", fmnist_root,
                      "--center_dir", fmnist_centers, "--save_dir", save, *TINY, *extra, check=check, process=process)
    return save, proc


def test_majem_run_writes_everything_and_learns(tmp_path, fmnist_root, fmnist_centers):
    save, _ = train(tmp_path, fmnist_root, fmnist_centers, "run", "--n_epochs", "8", "--n_valid", "64",
                    "--n_steps", "5", "--l2_coeff", "0.5", "--sgld_std", "0.001", "--optimizer", "adam",
                    "--lr", "0.001", "--batch_size", "32", "--pyx_batch_size", "32", "--decay_epochs", "6",
                    "--plot_uncond", "--plot_cond", process=True)  # the real command line
    for f in ("args.json", "command.txt", "log.txt", "metrics.jsonl", "last_ckpt.pt", "best_valid_ckpt.pt", "ckpt_0.pt",
              "ckpt_iter_00000064.pt"):
        assert os.path.isfile(os.path.join(save, f)), f
    assert glob.glob(os.path.join(save, "tb", "events.out.tfevents.*"))
    assert glob.glob(os.path.join(save, "samples", "x_q_*.png"))
    assert glob.glob(os.path.join(save, "samples", "buffer_*.png")) and glob.glob(os.path.join(save, "samples", "cond_*.png"))
    assert json.load(open(os.path.join(save, "args.json")))["n_steps"] == 5
    rows = [json.loads(line) for line in open(os.path.join(save, "metrics.jsonl"))]
    train_rows = [r for r in rows if "loss/pyx" in r]
    first, last = train_rows[:5], train_rows[-5:]
    mean = lambda rs, k: sum(r[k] for r in rs) / len(rs)
    assert mean(last, "loss/pyx") < 0.7 * mean(first, "loss/pyx")
    test_acc = [r["test/acc"] for r in rows if "test/acc" in r]
    assert len(test_acc) == 8 and max(test_acc[-3:]) > 0.5  # 10 classes: chance is 0.1

    ckpt = load_checkpoint(os.path.join(save, "last_ckpt.pt"))
    assert ckpt["iteration"] == 8 * 8 and ckpt["replay_buffer"].shape == (100, 1, 28, 28)
    assert ckpt["replay_buffer"].min() >= -1 and ckpt["replay_buffer"].max() <= 1
    model = build_model("cnn", 10, 1, width=1, norm="batch", image_size=28)
    model.load_state_dict(ckpt["model_state_dict"])
    model.eval()
    from utils.data import image_transform, load_dataset
    ds = load_dataset("fashionmnist", fmnist_root, False, image_transform("fashionmnist", False))
    x = torch.stack([ds[i][0] for i in range(64)])
    with torch.no_grad():
        f_data = model(x)[0].mean()
        f_noise = model(torch.rand(64, 1, 28, 28) * 2 - 1)[0].mean()
    assert f_data > f_noise  # energy orders data above noise


def test_maebm_uncond_uniform_start_runs(tmp_path, fmnist_root, fmnist_centers):
    save, proc = train(tmp_path, fmnist_root, fmnist_centers, "maebm", "--pyx", "0", "--uncond", "--n_steps", "2",
                       "--l2_coeff", "0.1", "--init", "u", "--max_iters", "5")
    ckpt = load_checkpoint(os.path.join(save, "last_ckpt.pt"))
    assert ckpt["iteration"] == 5 and "energy_output.weight" in ckpt["model_state_dict"]
    # class-conditional grids need a classifier: refused in one line for a p(x)-only run
    _, proc = train(tmp_path, fmnist_root, fmnist_centers, "cond", "--pyx", "0", "--uncond", "--init", "u",
                    "--max_iters", "1", "--plot_cond", check=False)
    assert "--plot_cond: class-conditional grids need" in error_line(proc)


def test_majem_uncond_draws_class_conditional_grids(tmp_path, fmnist_root, fmnist_centers):
    """M-JEM's separate energy head: --plot_cond draws chains on f(x) + log p(y|x) at each epoch's end."""
    save, _ = train(tmp_path, fmnist_root, fmnist_centers, "majem", "--uncond", "--n_steps", "1", "--max_iters", "10",
                    "--plot_cond")
    assert os.path.isfile(os.path.join(save, "samples", "cond_0.png"))


def read_state(path):
    ckpt = load_checkpoint(path)
    return ckpt["model_state_dict"], ckpt["replay_buffer"], ckpt["iteration"]


def assert_same_run(a, b):
    sa, ba, ia = read_state(os.path.join(a, "last_ckpt.pt"))
    sb, bb, ib = read_state(os.path.join(b, "last_ckpt.pt"))
    assert ia == ib
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert torch.equal(ba, bb)


RESUME_FLAGS = ["--n_epochs", "3", "--n_steps", "3", "--sgld_std", "0.01", "--class_cond_p_x_sample",
                "--init", "gm_class", "--ckpt_every_iters", "4", "--lr", "0.05"]


def test_stopped_and_resumed_run_equals_uninterrupted(tmp_path, fmnist_root, fmnist_centers):
    full, _ = train(tmp_path, fmnist_root, fmnist_centers, "full", *RESUME_FLAGS)
    part, _ = train(tmp_path, fmnist_root, fmnist_centers, "part", *RESUME_FLAGS, "--max_iters", "13")
    assert read_state(os.path.join(part, "last_ckpt.pt"))[2] == 13  # mid-epoch (10 iterations per epoch)
    run_script("train_maebm.py", "--dataset", "fashionmnist", "--data_root", fmnist_root, "--center_dir",
               fmnist_centers, *TINY, *RESUME_FLAGS, "--resume", part, check=True)
    assert_same_run(full, part)


def test_sigkilled_run_resumes_from_last_checkpoint_to_the_same_result(tmp_path, fmnist_root, fmnist_centers):
    full, _ = train(tmp_path, fmnist_root, fmnist_centers, "full", *RESUME_FLAGS)
    killed = str(tmp_path / "killed")
    cmd = [sys.executable, os.path.join(ROOT, "train_maebm.py"), "--dataset", "fashionmnist", "--data_root",
           fmnist_root, "--center_dir", fmnist_centers, "--save_dir", killed, *TINY, *RESUME_FLAGS]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = os.path.join(killed, "metrics.jsonl")
    deadline = time.time() + 300
    while time.time() < deadline:
        if os.path.exists(metrics) and sum(1 for line in open(metrics) if '"loss/total"' in line) >= 17:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    it_killed = read_state(os.path.join(killed, "last_ckpt.pt"))[2]
    assert 0 < it_killed < 30
    run_script("train_maebm.py", "--dataset", "fashionmnist", "--data_root", fmnist_root, "--center_dir",
               fmnist_centers, *TINY, *RESUME_FLAGS, "--resume", killed, check=True)
    assert_same_run(full, killed)


def test_sigterm_checkpoints_and_exits(tmp_path, fmnist_root, fmnist_centers):
    save = str(tmp_path / "term")
    cmd = [sys.executable, os.path.join(ROOT, "train_maebm.py"), "--dataset", "fashionmnist", "--data_root",
           fmnist_root, "--center_dir", fmnist_centers, "--save_dir", save, *TINY, "--n_epochs", "50"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = os.path.join(save, "metrics.jsonl")
    while not (os.path.exists(metrics) and sum(1 for _ in open(metrics)) >= 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "--resume" in open(os.path.join(save, "log.txt")).read()
    assert read_state(os.path.join(save, "last_ckpt.pt"))[2] >= 3
    assert os.path.isdir(save)


def write_noise_image_folder(root, n_per_class=16):
    """img32 in ImageFolder layout (train and test splits), noise images whose brightness is set by the class."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in range(2):
            folder = os.path.join(root, "img32", split, f"c{c}")
            os.makedirs(folder)
            for i in range(n_per_class):
                pixels = np.clip(60 + 120 * c + rng.integers(0, 60, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(os.path.join(folder, f"{i}.png"))
    return root


def test_folder_dataset_with_workers_resumed_mid_epoch_equals_uninterrupted(tmp_path):
    """Folder datasets stay on the DataLoader: its workers' augmentation must not restart at a resume."""
    root = write_noise_image_folder(str(tmp_path / "data"))
    common = ["--dataset", "img32", "--data_root", root, *TINY, "--workers", "2", "--batch_size", "8",
              "--pyx_batch_size", "8", "--n_valid", "0", "--init", "u", "--n_steps", "2", "--n_epochs", "3",
              "--ckpt_every_iters", "3", "--novis"]
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    run_script("train_maebm.py", *common, "--save_dir", full, check=True)
    run_script("train_maebm.py", *common, "--save_dir", part, "--max_iters", "6", check=True)
    assert read_state(os.path.join(part, "last_ckpt.pt"))[2] == 6  # halfway through the second epoch of 4
    run_script("train_maebm.py", *common, "--resume", part, check=True)
    assert read_state(os.path.join(full, "last_ckpt.pt"))[2] == 12
    assert_same_run(full, part)
