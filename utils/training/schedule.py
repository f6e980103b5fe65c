"""The learning-rate schedule, a pure function of iteration and epoch (so a resumed run needs no state)."""


def lr_at(base_lr, iteration, epoch, warmup_iters, decay_epochs, decay_rate, decay_every=0):
    """Upstream's schedule: linear warm-up over `warmup_iters`, times decay_rate at each decay epoch
    (or every `decay_every` epochs, as StepLR)."""
    n_decays = epoch // decay_every if decay_every else sum(epoch >= e for e in decay_epochs)
    lr = base_lr * decay_rate ** n_decays
    if warmup_iters > 0 and iteration <= warmup_iters:
        lr = min(lr, base_lr * iteration / warmup_iters)
    return lr
