"""In-memory datasets batched on the device: the same images, order and augmentation distribution as the
torchvision transforms and DataLoader they replace, and no host sync in the chain starts."""
import numpy as np
import pytest
import torch
import torchvision
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from torch.utils.data import Subset

from conftest import write_cifar10, write_fashion_mnist
from utils.augment import crop_flip, random_crop_flip, to_unit_range
from utils.data import image_transform, images_as_uint8, load_dataset, make_loader
from utils.gaussian import GaussianStart
from utils.training.streams import DeviceStream, ResumableStream


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory):
    root = write_fashion_mnist(str(tmp_path_factory.mktemp("fm")), n_train=300, n_test=20)
    return load_dataset("fashionmnist", root, True, image_transform("fashionmnist", False))


def test_uint8_tensors_are_what_totensor_gives(fmnist, tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)  # files made here
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    cifar = load_dataset("cifar10", write_cifar10(str(tmp_path)), True, image_transform("cifar10", False))
    svhn = torchvision.datasets.SVHN.__new__(torchvision.datasets.SVHN)  # its loader checks the real file's md5
    svhn.data = np.random.default_rng(0).integers(0, 256, (5, 3, 32, 32), dtype=np.uint8)
    svhn.labels, svhn.transform, svhn.target_transform = np.arange(5) % 10, image_transform("svhn", False), None
    for ds in (fmnist, cifar, svhn):
        images, labels = images_as_uint8(ds)
        assert images.dtype == torch.uint8 and len(images) == len(labels) == len(ds)
        for i in (0, 3):
            x, y = ds[i]
            assert torch.equal(to_unit_range(images[i]), x) and int(labels[i]) == int(y)  # bit for bit


def test_crop_flip_equals_torchvision_on_the_same_offsets():
    x = torch.rand(6, 3, 32, 32)
    top, left = torch.tensor([0, 8, 3, 5, 8, 0]), torch.tensor([8, 0, 4, 1, 8, 0])
    flip = torch.tensor([False, True, True, False, True, False])
    got = crop_flip(x, top, left, flip, 4)
    for i in range(6):
        want = TF.crop(TF.pad(x[i], [4], padding_mode="reflect"), int(top[i]), int(left[i]), 32, 32)
        assert torch.equal(got[i], TF.hflip(want) if flip[i] else want)


def test_random_crop_flip_has_torchvisions_distribution():
    """On one image, every (top, left, flip) is recognisable: the draws must be uniform over the 7 x 7 offsets and
    the two flips, and the pixel statistics over many draws equal to torchvision's RandomCrop + RandomHorizontalFlip."""
    torch.manual_seed(0)
    image = torch.rand(1, 1, 28, 28)
    pad, n = 3, 4900
    cells = [(t, l, f) for t in range(2 * pad + 1) for l in range(2 * pad + 1) for f in (False, True)]
    candidates = torch.cat([crop_flip(image, torch.tensor([t]), torch.tensor([l]), torch.tensor([f]), pad)
                            for t, l, f in cells]).flatten(1)
    ours = random_crop_flip(image.expand(n, -1, -1, -1), pad, True)
    match = (ours.flatten(1)[:, None, :] == candidates[None]).all(-1)
    assert (match.sum(1) == 1).all()  # each draw is exactly one of the 98 crops
    counts = match.sum(0).double()
    chi2 = float(((counts - n / len(cells)) ** 2 / (n / len(cells))).sum())
    assert chi2 < 150  # 97 degrees of freedom: p < 1e-3 above 145
    tv = T.Compose([T.RandomCrop(28, padding=pad, padding_mode="reflect"), T.RandomHorizontalFlip()])
    theirs = torch.stack([tv(image[0]) for _ in range(n)])
    assert torch.allclose(ours.mean(0), theirs.mean(0), atol=0.03)
    assert torch.allclose(ours.std(0), theirs.std(0), atol=0.03)
    assert abs(float(ours.mean()) - float(theirs.mean())) < 2e-3


def test_no_flip_where_the_dataset_forbids_it():
    x = torch.rand(200, 1, 8, 8)
    got = random_crop_flip(x, 0, False)
    assert torch.equal(got, x)


def test_device_stream_gives_the_dataloader_streams_batches_and_resumes(fmnist):
    images, labels = images_as_uint8(fmnist)
    subset = torch.arange(10, 290)
    loader = ResumableStream(make_loader(Subset(fmnist, subset.tolist()), 32, 5, 0))
    ours = DeviceStream(images, labels, subset, 32, 5, Subset(fmnist, subset.tolist()))
    assert len(ours) == len(loader) == 280 // 32
    batches = [ours.next() for _ in range(20)]  # over two epoch boundaries
    for (x, y), (xl, yl) in zip(batches, (loader.next() for _ in range(20))):
        assert torch.equal(x, xl) and torch.equal(y, yl)
    torch.manual_seed(1)
    aug = DeviceStream(images, labels, subset, 32, 5, None, crop_pad=3, flip=True)
    whole = [aug.next() for _ in range(16)]
    torch.manual_seed(1)
    resumed = DeviceStream(images, labels, subset, 32, 5, None, crop_pad=3, flip=True)
    first = [resumed.next() for _ in range(10)]  # stopped in the second epoch
    position, rng = resumed.position(), torch.get_rng_state()
    resumed = DeviceStream(images, labels, subset, 32, 5, None, crop_pad=3, flip=True)
    resumed.seek(**position)
    torch.set_rng_state(rng)
    assert resumed.epoch == 1
    for (x, y), (xr, yr) in zip(whole, first + [resumed.next() for _ in range(6)], strict=True):
        assert torch.equal(x, xr) and torch.equal(y, yr)


def test_device_stream_shards_disjointly_under_torchrun():
    images = torch.arange(256, dtype=torch.uint8).view(256, 1, 1, 1).expand(256, 1, 2, 2).contiguous()
    labels = torch.arange(256)
    streams = [DeviceStream(images, labels, torch.arange(256), 16, 1, None, rank=r, world=2) for r in range(2)]
    seen = [torch.cat([s.next()[1] for _ in range(8)]) for s in streams]  # one epoch of each rank
    assert len(seen[0]) == len(seen[1]) == 128 and sorted(torch.cat(seen).tolist()) == list(range(256))


@pytest.fixture
def host_reads(monkeypatch):
    """Counts the reads of a tensor's value by the host: each is a device sync on CUDA."""
    reads = []
    for name in ("tolist", "item", "__bool__", "__int__", "__float__", "__index__"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda t, *a, _o=original, **k: reads.append(1) or _o(t, *a, **k))
    return reads


def per_class_start(d=12, classes=4, spread=1.0):
    g = torch.Generator().manual_seed(0)
    mean = spread * torch.randn(classes, d, generator=g)
    a = torch.randn(classes, d, d, generator=g)
    return GaussianStart(mean, a @ a.transpose(1, 2) / d + torch.eye(d), (d, 1, 1))


def test_per_class_draws_read_nothing_back_to_the_host(host_reads):
    start = per_class_start()
    y = torch.randint(0, 4, (64,))
    host_reads.clear()  # the factorisation's check at construction reads once; the draws must not
    start.sample(64)
    start.sample(64, y)
    assert host_reads == []


def test_mixture_draws_have_uniform_classes_and_each_class_its_gaussian():
    start = per_class_start(d=3)
    torch.manual_seed(0)
    v = start.draw(40000).double()
    # the mixture's mean and second moment, equal weights
    mean = start.mean.double().mean(0)
    second = torch.stack([c.double() @ c.double().T + torch.outer(m.double(), m.double())
                          for c, m in zip(start.scale_tril, start.mean)]).mean(0)
    assert torch.allclose(v.mean(0), mean, atol=0.03)
    assert torch.allclose(v.T @ v / len(v), second, atol=0.08)
    assert start.draw(7).shape == (7, 3)  # n not a multiple of the classes


def test_each_row_of_a_mixture_draw_has_a_uniform_class():
    start = per_class_start(d=12, spread=20.0)  # classes far apart: each row's class is its nearest mean
    torch.manual_seed(0)
    rows = torch.stack([start.draw(5) for _ in range(2000)])  # 5 rows from 2 draws per class
    classes = torch.cdist(rows.flatten(0, 1), start.mean).argmin(1).view(2000, 5)
    freq = torch.stack([(classes == c).double().mean(0) for c in range(4)])  # class x row position
    assert torch.allclose(freq, torch.full_like(freq, 0.25), atol=0.04)


class NoisyItems(torch.utils.data.Dataset):
    """Items with a random transform drawn from torch's RNG, as torchvision's augmentations draw theirs."""

    def __len__(self):
        return 40

    def __getitem__(self, i):
        return torch.full((3,), float(i)) + torch.rand(3), i


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_stream_resumed_mid_epoch_draws_the_same_augmentation(workers):
    whole = ResumableStream(make_loader(NoisyItems(), 4, 3, workers))
    batches = [whole.next() for _ in range(16)]  # over the epoch boundary at 10
    first = ResumableStream(make_loader(NoisyItems(), 4, 3, workers))
    for _ in range(7):
        first.next()
    torch.manual_seed(123)  # the resumed process's own RNG must not matter
    resumed = ResumableStream(make_loader(NoisyItems(), 4, 3, workers))
    resumed.seek(**first.position())
    for (x, y), (xr, yr) in zip(batches[7:], (resumed.next() for _ in range(9)), strict=True):
        assert torch.equal(y, yr) and torch.equal(x, xr)
    assert not torch.equal(batches[0][0] - batches[0][1][:, None], batches[10][0] - batches[10][1][:, None])
