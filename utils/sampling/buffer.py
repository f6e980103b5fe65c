"""Replay buffer of persistent SGLD chains, held on the training device."""
import torch

from utils.errors import UserError


def uniform_start(n, image_shape, device, generator=None):
    """Uniform noise in [-1,1] (upstream's --init u)."""
    return torch.rand(n, *image_shape, device=device, generator=generator) * 2 - 1


def buffer_census(classes, steps, n_classes):
    """What a set of buffer entries holds: each class's count and share (classes as given, e.g. the classifier's)
    and, where known (steps not None), how many sampler steps the entries ran since their start."""
    counts = torch.bincount(classes.cpu(), minlength=n_classes)
    share = counts.float() / max(len(classes), 1)
    census = {"class_counts": counts.tolist(), "class_shares": share.tolist(),
              "min_class_share": float(share.min()), "max_class_share": float(share.max())}
    if steps is not None:
        steps = steps.cpu()
        census.update({"never_sampled": int((steps == 0).sum()), "mean_steps": float(steps.float().mean()),
                       "min_steps": int(steps.min())})
    return census


class ReplayBuffer:
    """Persistent chains; each draw re-initialises a `reinit_freq` fraction from `start_fn`.

    With `n_classes`, the buffer is split into equal class blocks so chains can be drawn given y. `steps` counts the
    sampler steps each entry has run since its start (0: a start never sampled), for the buffer's diagnosis.
    """

    def __init__(self, samples, n_classes=None):
        if n_classes and len(samples) % n_classes:
            raise UserError(f"--buffer_size: {len(samples)} is not divisible by the {n_classes} classes "
                            "needed for class-conditional sampling")
        self.samples = samples
        self.n_classes = n_classes
        self.steps = torch.zeros(len(samples), dtype=torch.long, device=samples.device)

    def __len__(self):
        return len(self.samples)

    def draw(self, n, start_fn, reinit_freq, y=None):
        """(starts, indices, steps): n chains from the buffer, a random fraction replaced by fresh starts, and the
        sampler steps each start has run (0 for the fresh ones)."""
        device = self.samples.device
        if y is None:
            idx = torch.randint(0, len(self.samples), (n,), device=device)
        else:
            per_class = len(self.samples) // self.n_classes
            idx = y.to(device) * per_class + torch.randint(0, per_class, (n,), device=device)
        fresh = torch.rand(n, device=device) < reinit_freq
        # Drawing a full batch of fresh starts and selecting with where() costs one small batched draw,
        # but avoids the host sync that counting the re-initialised chains would need.
        starts = torch.where(fresh.view(-1, *[1] * (self.samples.dim() - 1)), start_fn(n, y), self.samples[idx])
        return starts, idx, torch.where(fresh, 0, self.steps[idx])

    def update(self, idx, x, steps):
        """Write chains back with the steps they have now run; where an index repeats, the last chain in the batch
        wins, deterministically."""
        # A plain index_put with repeated indices lets the threads race; writing every copy of a slot with
        # the same (last) chain makes the result independent of write order, without a host sync.
        pos = torch.arange(len(idx), device=idx.device)
        last = torch.full((len(self.samples),), -1, dtype=torch.long, device=idx.device)
        last.scatter_reduce_(0, idx, pos, reduce="amax")
        self.samples[idx] = x.detach()[last[idx]].to(self.samples.dtype)
        self.steps[idx] = steps[last[idx]]
