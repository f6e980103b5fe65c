"""Endless, resumable batch streams: in-memory datasets batched on the training device, folder datasets through a
DataLoader. Both restart at any (epoch, batch) with the same epoch order."""
from utils.augment import random_crop_flip, to_unit_range
from utils.data import SeededItems, epoch_order
from utils.errors import UserError


class ResumableStream:
    """Endless batches from a loader with an EpochSampler, restartable at any (epoch, batch)."""

    def __init__(self, loader, epoch=0, batch=0):
        self.loader = loader
        self.dataset = loader.dataset if loader is not None else None
        if isinstance(self.dataset, SeededItems):  # per-image readers index the images themselves
            self.dataset = self.dataset.dataset
        self.batches_per_epoch = len(loader) if loader is not None else 0  # None: a dataset without labels
        self.epoch, self.batch = epoch, batch
        self._it = None

    def __len__(self):
        return self.batches_per_epoch

    def seek(self, epoch, batch):
        self.epoch, self.batch, self._it = epoch, batch, None

    def next(self):
        if self.batch >= self.batches_per_epoch:
            self.epoch, self.batch, self._it = self.epoch + 1, 0, None
        if self._it is None:
            self.loader.sampler.set_epoch(self.epoch, self.batch * self.loader.batch_size)
            self._it = iter(self.loader)
        self.batch += 1
        return next(self._it)

    def position(self):
        return {"epoch": self.epoch, "batch": self.batch}


class DeviceStream(ResumableStream):
    """The batches of ResumableStream over `subset` (indices into uint8 `images` and `labels` on the training device):
    the same epoch order, drawn by index and converted (and, with `crop_pad`, augmented) batched on the device.

    `dataset` is the equivalent torchvision Subset, for the few per-image readers (FID reference, ActNorm's first
    batch, --init data)."""

    def __init__(self, images, labels, subset, batch_size, seed, dataset, crop_pad=0, flip=False, rank=0, world=1):
        if len(subset) // world < batch_size:
            raise UserError(f"dataset has {len(subset) // world} images per process, fewer than one batch of {batch_size}")
        self.images, self.labels, self.subset = images, labels, subset.to(images.device)
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.crop_pad, self.flip, self.dataset = crop_pad, flip, dataset
        self.batches_per_epoch = len(subset) // world // batch_size
        self.epoch, self.batch, self._order = 0, 0, None

    def seek(self, epoch, batch):
        self.epoch, self.batch, self._order = epoch, batch, None

    def next(self):
        if self.batch >= self.batches_per_epoch:
            self.epoch, self.batch, self._order = self.epoch + 1, 0, None
        if self._order is None:
            order = epoch_order(len(self.subset), self.seed, self.epoch, self.rank, self.world)
            self._order = self.subset[order.to(self.subset.device)]
        idx = self._order[self.batch * self.batch_size:(self.batch + 1) * self.batch_size]
        self.batch += 1
        x = to_unit_range(self.images[idx])
        if self.crop_pad:
            x = random_crop_flip(x, self.crop_pad, self.flip)
        return x, self.labels[idx]
