"""The data route: local files and offline packages first, torchvision's download only when none has the dataset,
and one error line naming every route when nothing works. torchvision's download is patched (no network here)."""
import os
import re
import shlex
import urllib.error

import pytest
import torchvision

from conftest import ROOT, TINY, error_line, run_script, write_cifar10, write_debian_fashion_mnist, write_fashion_mnist
from utils.data import IDX_FILES, load_dataset
from utils.errors import UserError
from utils.offline import OFFLINE_ENV


def quickstart_data_step(data_root, save_dir):
    """The arguments of the quickstart's one_center.py line, its data and save folders moved to `data_root`, `save_dir`."""
    script = open(os.path.join(ROOT, "scripts", "quickstart.sh")).read().replace("\\\n", " ")
    line = next(line for line in script.splitlines() if "one_center.py" in line)
    args = shlex.split(line.split("one_center.py", 1)[1])
    args[args.index("--data_root") + 1], args[args.index("--save_dir") + 1] = data_root, save_dir
    return args


@pytest.fixture
def downloads(monkeypatch, tmp_path):
    """A network for torchvision that writes small datasets and counts its downloads; no Debian package."""
    monkeypatch.delenv(OFFLINE_ENV, raising=False)
    monkeypatch.setattr("utils.data.DEBIAN_FASHION_MNIST", str(tmp_path / "no_debian_package"))
    calls = []

    def fashion(self):
        calls.append(type(self).__name__)
        write_fashion_mnist(self.root)

    def cifar(self):
        calls.append(type(self).__name__)
        write_cifar10(self.root)

    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "download", fashion)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", cifar)
    # the files written here are not the real ones: only their presence, not their md5, is checked
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity",
                        lambda self: os.path.exists(os.path.join(self.root, self.base_folder, "test_batch")))
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    return calls


@pytest.fixture
def no_network(downloads, monkeypatch):
    def refuse(self):
        downloads.append(type(self).__name__)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "download", refuse)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", refuse)
    return downloads


def train_cifar10(tmp_path):
    return run_script("train_maebm.py", "--dataset", "cifar10", "--data_root", tmp_path / "data", "--init", "u",
                      *TINY, "--max_iters", "2", "--novis", "--save_dir", tmp_path / "run")


def test_quickstart_data_step_downloads_fashion_mnist_when_no_route_has_it(tmp_path, downloads):
    proc = run_script("one_center.py", *quickstart_data_step(tmp_path / "data", tmp_path / "centers"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert downloads == ["FashionMNIST"]
    assert os.path.exists(tmp_path / "centers" / "fashionmnist_mean_class.pt")
    # the files are there now: a second fit reads them and downloads nothing
    assert run_script("one_center.py", *quickstart_data_step(tmp_path / "data", tmp_path / "c2")).returncode == 0
    assert downloads == ["FashionMNIST"]


def test_debian_package_is_used_before_any_download(tmp_path, downloads, monkeypatch):
    monkeypatch.setattr("utils.data.DEBIAN_FASHION_MNIST", write_debian_fashion_mnist(str(tmp_path)))
    assert len(load_dataset("fashionmnist", str(tmp_path / "data"), True, None)) == 30
    assert downloads == []


def test_one_center_and_train_download_cifar10_once(tmp_path, downloads):
    proc = run_script("one_center.py", "--dataset", "cifar10", "--data_root", tmp_path / "data", "--save_dir", tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert downloads == ["CIFAR10"] and os.path.exists(tmp_path / "cifar10_mean_one.pt")
    downloads.clear()
    (tmp_path / "data").rename(tmp_path / "old")
    proc = train_cifar10(tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # train, augmented train and test sets: the first load fetches, the other two read its files
    assert downloads == ["CIFAR10"]


def test_download_never_and_the_offline_switch_do_not_download(tmp_path, downloads, monkeypatch):
    with pytest.raises(UserError, match=r"not tried: --download never"):
        load_dataset("cifar10", str(tmp_path), True, None, download="never")
    monkeypatch.setenv(OFFLINE_ENV, "1")
    with pytest.raises(UserError, match=rf"not tried: {OFFLINE_ENV} is set"):
        load_dataset("fashionmnist", str(tmp_path), True, None)
    assert downloads == []


@pytest.mark.parametrize("command", ["quickstart", "one_center_cifar10", "train_cifar10"])
def test_failed_download_is_one_line_naming_every_route(tmp_path, no_network, command):
    if command == "quickstart":
        proc = run_script("one_center.py", *quickstart_data_step(tmp_path / "data", tmp_path / "centers"))
        routes = ["files FashionMNIST/raw/*-ubyte under --data_root", "Debian's dataset-fashion-mnist package"]
    elif command == "one_center_cifar10":
        proc = run_script("one_center.py", "--dataset", "cifar10", "--data_root", tmp_path / "data")
        routes = ["files cifar-10-batches-py/ under --data_root"]
    else:
        proc = train_cifar10(tmp_path)
        routes = ["files cifar-10-batches-py/ under --data_root"]
    line = error_line(proc)
    assert line.startswith("error: --data_root:") and "routes tried:" in line, line
    for route in routes + ["torchvision's download (failed:", "name resolution"]:
        assert route in line, (route, line)
    assert len(no_network) == 1
    assert not os.path.exists(tmp_path / "centers") and not os.path.exists(tmp_path / "run" / "last_ckpt.pt")


def test_unreadable_local_files_are_reported_not_downloaded_over(tmp_path, downloads):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in IDX_FILES:
        (raw / name).write_bytes(b"\x00\x00\x08\x03garbage")
    with pytest.raises(UserError, match="cannot be read"):
        load_dataset("fashionmnist", str(tmp_path), True, None)
    assert downloads == []


def test_every_dataset_script_has_the_same_download_flag():
    for script in ("one_center.py", "train_maebm.py", "eval_maebm.py"):
        text = run_script(script, "--help").stdout
        assert re.search(r"--download \[\{auto,never\}\]", text), (script, text[:500])
