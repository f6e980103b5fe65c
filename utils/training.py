"""Pieces of the training loop: lr schedule, losses, resumable data streams, evaluation."""
import torch
import torch.nn as nn
import torch.nn.functional as F


def lr_at(base_lr, iteration, epoch, warmup_iters, decay_epochs, decay_rate):
    """Upstream's schedule: linear warm-up over `warmup_iters`, times decay_rate at each decay epoch."""
    lr = base_lr * decay_rate ** sum(epoch >= e for e in decay_epochs)
    if warmup_iters > 0 and iteration <= warmup_iters:
        lr = min(lr, base_lr * iteration / warmup_iters)
    return lr


def px_loss(f_data, f_samples, l2_coeff):
    """Upstream M-EBM p(x) loss: -(mean f(x+) - mean f(x-)) + l2 (mean f(x+)^2 + (mean f(x-))^2)."""
    fp, fq = f_data.mean(), f_samples.mean()
    return -(fp - fq) + l2_coeff * ((f_data ** 2).mean() + fq ** 2)


def pyx_loss(logits, y):
    """Cross-entropy of p(y|x) and the batch accuracy (as tensors, no host sync)."""
    return F.cross_entropy(logits, y), (logits.argmax(1) == y).float().mean()


class JointLoss(nn.Module):
    """One iteration's differentiable part: px * p(x) contrastive loss on data vs SGLD samples plus
    pyx * p(y|x) cross-entropy. A module, so DistributedDataParallel wraps the whole step: one forward,
    one backward per iteration, while each term keeps its own forward (and BatchNorm batch) as upstream."""

    def __init__(self, model, px, pyx, l2_coeff):
        super().__init__()
        self.model, self.px, self.pyx, self.l2_coeff = model, px, pyx, l2_coeff

    def forward(self, x_data=None, x_samples=None, x_labelled=None, y_labelled=None):
        """(loss, detached values to log); terms whose weight is 0 take None inputs."""
        loss, logs = 0.0, {}
        if self.px > 0:
            f_p, _ = self.model(x_data)
            f_q, _ = self.model(x_samples)
            l_px = px_loss(f_p, f_q, self.l2_coeff)
            loss = loss + self.px * l_px
            logs.update({"loss/px": l_px.detach(), "energy/f_data": f_p.detach().mean(),
                         "energy/f_samples": f_q.detach().mean()})
        if self.pyx > 0:
            l_pyx, acc = pyx_loss(self.model.classify(x_labelled), y_labelled)
            loss = loss + self.pyx * l_pyx
            logs.update({"loss/pyx": l_pyx.detach(), "train/acc": acc})
        return loss, logs


class ResumableStream:
    """Endless batches from a loader with an EpochSampler, restartable at any (epoch, batch)."""

    def __init__(self, loader, epoch=0, batch=0):
        self.loader = loader
        self.batches_per_epoch = len(loader)
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


@torch.no_grad()
def evaluate_classifier(model, loader, device):
    """(mean cross-entropy, accuracy, mean f(x)) of the model in eval mode over a labelled loader."""
    was_training = model.training
    model.eval()
    loss_sum, correct, f_sum, n = 0.0, 0, 0.0, 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        fx, logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        f_sum += fx.sum().item()
        n += len(y)
    model.train(was_training)
    return loss_sum / n, correct / n, f_sum / n
