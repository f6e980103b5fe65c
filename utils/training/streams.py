"""Endless, resumable batch streams over the epoch-seeded loaders."""


class ResumableStream:
    """Endless batches from a loader with an EpochSampler, restartable at any (epoch, batch)."""

    def __init__(self, loader, epoch=0, batch=0):
        self.loader = loader
        self.batches_per_epoch = len(loader) if loader is not None else 0  # None: a dataset without labels
        self.epoch, self.batch = epoch, batch
        self._it = None

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
