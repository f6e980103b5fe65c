"""A fixed-seed CPU run of the quickstart recipe (30 iterations) follows the recorded one
(tests/data/quickstart_30_iters.json): the same rows, the first iterations' values, and on the recording's CPU the
same weights, buffer and metrics bit for bit. Recorded again when the labelled stream's crops and flips moved to the
device (issue 32), which draws them differently; iteration 0 still equalled the earlier recording to 5e-3."""
import hashlib
import json
import os

import numpy as np
import pytest

from conftest import ROOT, run_script, write_fashion_mnist
from utils.checkpoint import load_checkpoint
from utils.run_dir import read_metrics

RECORDED = os.path.join(ROOT, "tests", "data", "quickstart_30_iters.json")
# scripts/quickstart.sh's training flags as recorded (before it moved to per-class starts, --init gm_class), with the
# test's data and 30 iterations
QUICKSTART = ["--dataset", "fashionmnist", "--model", "cnn", "--width", "1", "--norm", "batch", "--px", "1.0",
              "--pyx", "1.0", "--n_steps", "5", "--sgld_lr", "1", "--sgld_std", "0.001", "--l2_coeff", "0.5",
              "--lr", "0.05", "--warmup_iters", "200", "--n_epochs", "7", "--decay_epochs", "5", "6", "--n_valid", "40",
              "--plot_uncond", "--plot_every", "200", "--max_iters", "30", "--print_every", "1", "--workers", "0"]


def digest(tensor):
    return hashlib.sha256(np.ascontiguousarray(tensor.detach().cpu().numpy()).tobytes()).hexdigest()


def run_digest(save):
    ckpt = load_checkpoint(os.path.join(save, "last_ckpt.pt"))
    return {"iteration": ckpt["iteration"],
            "weights": {k: digest(v) for k, v in sorted(ckpt["model_state_dict"].items())},
            "buffer": digest(ckpt["replay_buffer"]),
            "metrics": read_metrics(os.path.join(save, "metrics.jsonl"))}


def quickstart_run(tmp):
    """30 iterations of the recipe on 3,880 test images (30 labelled batches of 128 after 40 held out)."""
    root = write_fashion_mnist(os.path.join(tmp, "data"), n_train=3880, n_test=200, seed=3)
    centers = os.path.join(tmp, "centers")
    run_script("one_center.py", "--dataset", "fashionmnist", "--data_root", root, "--save_dir", centers, check=True,
               process=True)
    save = os.path.join(tmp, "run")
    run_script("train_maebm.py", *QUICKSTART, "--data_root", root, "--center_dir", centers, "--save_dir", save,
               check=True)
    return run_digest(save)


EARLY_ROWS = 3  # iterations 0-2: before float rounding differences between CPUs have grown


def test_quickstart_run_follows_the_recorded_one(tmp_path):
    """The recorded run came from a 2-core AMD EPYC (Zen 5); another CPU's kernels round differently in the last
    bits, and over 30 iterations of SGLD and SGD those bits grow (up to 8% in some metrics between an Intel CPU with
    AMX and the EPYC). So: the same 31 rows with the same metrics, the first iterations equal to 5e-3, and
    bit-identical where the recording was made."""
    got = quickstart_run(str(tmp_path))
    want = json.load(open(RECORDED))
    assert got["iteration"] == want["iteration"] == 30
    assert [sorted(r) for r in got["metrics"]] == [sorted(r) for r in want["metrics"]]
    for a, b in zip(got["metrics"][:EARLY_ROWS], want["metrics"][:EARLY_ROWS]):
        for k, v in b.items():
            assert a[k] == pytest.approx(v, rel=5e-3, abs=1e-6), (a["iteration"], k)
    if got["metrics"] == want["metrics"]:  # the recording's machine: the whole run, bit for bit
        assert got["weights"] == want["weights"] and got["buffer"] == want["buffer"]
