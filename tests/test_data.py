import os
import pickle

import numpy as np
import pytest
import torch
import torchvision

from conftest import write_cifar10, write_debian_fashion_mnist, write_fashion_mnist
from utils.data import (EpochSampler, IDX_FILES, dataset_labels, image_transform, labelled_subset, load_dataset,
                        prepare_fashion_mnist, split_train_valid)
from utils.errors import UserError


def test_fashion_mnist_idx_layout_is_read_by_torchvision(tmp_path):
    root = write_fashion_mnist(str(tmp_path), n_train=50, n_test=20)
    ds = load_dataset("fashionmnist", root, True, image_transform("fashionmnist", False))
    assert isinstance(ds, torchvision.datasets.FashionMNIST) and len(ds) == 50
    raw = np.frombuffer(open(os.path.join(root, "FashionMNIST", "raw", IDX_FILES[0]), "rb").read()[16:], np.uint8)
    labels = np.frombuffer(open(os.path.join(root, "FashionMNIST", "raw", IDX_FILES[1]), "rb").read()[8:], np.uint8)
    for i in (0, 7):
        x, y = ds[i]
        # exactly byte / 127.5 - 1: [0, 1] data or another scaling fails
        want = torch.tensor(raw[i * 784:(i + 1) * 784].reshape(1, 28, 28), dtype=torch.float32) / 127.5 - 1
        assert torch.allclose(x, want, atol=1e-6) and y == labels[i]
    assert len(load_dataset("fashionmnist", root, False, image_transform("fashionmnist", False))) == 20


def test_fashion_mnist_is_unpacked_from_a_debian_style_gz_folder(tmp_path):
    debian = write_debian_fashion_mnist(str(tmp_path))
    prepare_fashion_mnist(str(tmp_path / "root"), source=debian)
    ds = torchvision.datasets.FashionMNIST(str(tmp_path / "root"), train=True, download=False)
    assert len(ds) == 30


def test_cifar10_pickle_layout(tmp_path, monkeypatch):
    root = write_cifar10(str(tmp_path), n_per_batch=12)
    # torchvision checks the md5 of the real CIFAR files; these are made here, so skip only that check.
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    train = load_dataset("cifar10", root, True, image_transform("cifar10", False))
    test = load_dataset("cifar10", root, False, image_transform("cifar10", True))
    assert len(train) == 60 and len(test) == 12
    x, y = train[3]
    batch = pickle.load(open(os.path.join(root, "cifar-10-batches-py", "data_batch_1"), "rb"))
    want = torch.tensor(batch["data"][3].reshape(3, 32, 32), dtype=torch.float32) / 127.5 - 1
    assert torch.allclose(x, want, atol=1e-6) and y == batch["labels"][3]
    assert dataset_labels(train).tolist()[:12] == train.targets[:12]
    assert test[0][0].shape == (3, 32, 32)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn", "fashionmnist", "celeba"])
def test_missing_dataset_is_a_clear_error(tmp_path, name, monkeypatch):
    monkeypatch.setattr("utils.data.DEBIAN_FASHION_MNIST", str(tmp_path / "none"))
    monkeypatch.setattr("utils.data.prepare_fashion_mnist", lambda root: None)
    with pytest.raises(UserError, match="--data_root"):
        load_dataset(name, str(tmp_path), True, None)


def test_image_folder_dataset(tmp_path):
    from PIL import Image
    for c in range(2):
        d = tmp_path / "celeba" / "train" / f"c{c}"
        d.mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((80, 70, 3), 40 * i + 100 * c, np.uint8)).save(d / f"{i}.png")
    ds = load_dataset("celeba", str(tmp_path), True, image_transform("celeba", False))
    assert len(ds) == 6 and ds[0][0].shape == (3, 64, 64)
    assert torch.allclose(ds[1][0], torch.full((3, 64, 64), 40 / 127.5 - 1), atol=1e-6)  # constant 40: c0/1.png


def test_unknown_dataset():
    with pytest.raises(UserError, match="unknown dataset"):
        load_dataset("imagenet21k", "/tmp", True, None)


def test_valid_split_and_labelled_subset_are_disjoint_and_seeded():
    tr, va = split_train_valid(100, 20, seed=3)
    assert len(set(tr.tolist()) & set(va.tolist())) == 0 and len(tr) + len(va) == 100
    assert torch.equal(va, split_train_valid(100, 20, seed=3)[1])
    labels = torch.arange(100) % 10
    sub = labelled_subset(tr, labels, 2, seed=3)
    assert sorted(labels[sub].tolist()) == sorted(list(range(10)) * 2)
    with pytest.raises(UserError, match="--n_valid"):
        split_train_valid(10, 10, seed=0)


def test_epoch_sampler_is_a_function_of_seed_and_epoch_and_can_skip():
    s = EpochSampler(50, seed=7)
    s.set_epoch(2)
    full = list(s)
    assert sorted(i for i, _ in full) == list(range(50))
    assert len({seed for _, seed in full}) == 50  # each item's transforms get their own seed
    s.set_epoch(2, start=20)
    assert list(s) == full[20:]
    s.set_epoch(3)
    assert [i for i, _ in s] != [i for i, _ in full] and {seed for _, seed in s}.isdisjoint(seed for _, seed in full)
    shares = [EpochSampler(50, seed=7, rank=r, world=2) for r in (0, 1)]
    for share in shares:
        share.set_epoch(2)
    assert sorted(list(shares[0]) + list(shares[1])) == sorted(full[:50])  # the ranks split the same pairs
