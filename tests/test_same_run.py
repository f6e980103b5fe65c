"""A fixed-seed CPU run of the quickstart recipe (30 iterations) gives bit-identical weights, buffer and metrics
rows to the ones recorded from the code before the redesign (tests/data/quickstart_30_iters.json)."""
import hashlib
import json
import os

import numpy as np

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
    run_script("one_center.py", "--dataset", "fashionmnist", "--data_root", root, "--save_dir", centers, check=True)
    save = os.path.join(tmp, "run")
    run_script("train_maebm.py", *QUICKSTART, "--data_root", root, "--center_dir", centers, "--save_dir", save,
               check=True)
    return run_digest(save)


def test_quickstart_run_is_bit_identical_to_the_recorded_one(tmp_path):
    got = quickstart_run(str(tmp_path))
    want = json.load(open(RECORDED))
    assert got["iteration"] == want["iteration"] == 30
    assert got["metrics"] == want["metrics"]
    assert got["weights"] == want["weights"] and got["buffer"] == want["buffer"]
